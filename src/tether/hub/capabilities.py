"""The capabilities the hub serves over SSH, in one table.

The SSH entry (:mod:`tether.ssh.entry`) knows no capability; both of its front
doors (``tether ssh-serve`` and the hub's embedded server) take their handlers from
here. A new capability adds one line: its remote command's first word and its handler.
"""

from __future__ import annotations

import importlib

from tether.ssh.entry import Handler

#: remote command -> "module:class" of its handler (imported only when served)
SSH_HANDLERS: dict[str, str] = {
    "tether-log": "tether.log.ssh:LogHandler",
}


def ssh_handlers() -> dict[str, Handler]:
    handlers = {}
    for command, target in SSH_HANDLERS.items():
        module, attr = target.split(":")
        handlers[command] = getattr(importlib.import_module(module), attr)()
    return handlers


def check_settings(settings) -> None:
    """Each capability checks its own settings when the hub starts (:class:`ConfigError`)."""
    from tether.publish.settings import check as check_publish

    check_publish(settings)
