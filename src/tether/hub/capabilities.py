"""The capabilities the hub serves over SSH, in one table.

The SSH entry (:mod:`tether.ssh.entry`) knows no capability; both of its front
doors (``tether ssh-serve`` and the hub's embedded server) take their handlers from
here. A new capability adds one line: its remote command's first word and its handler.
"""

from __future__ import annotations

import importlib
from typing import Any

from tether.ssh.entry import Handler

#: remote command -> "module:class" of its handler (imported only when served)
SSH_HANDLERS: dict[str, str] = {
    "tether-log": "tether.log.ssh:LogHandler",
}
#: handlers that need the hub's running gateway (its embedded SSH server only)
GATEWAY_SSH_HANDLERS: dict[str, str] = {
    "tether-forward": "tether.forward.ssh:ForwardHandler",
}


def _load(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def ssh_handlers(forward: Any = None) -> dict[str, Handler]:
    """Every SSH handler; those of the gateway's capabilities only when ``forward`` (the
    replica's :class:`tether.forward.runtime.ForwardRuntime`) is running."""
    handlers = {command: _load(target)() for command, target in SSH_HANDLERS.items()}
    if forward is not None:
        handlers.update({command: _load(target)(forward) for command, target in GATEWAY_SSH_HANDLERS.items()})
    return handlers


def forward_runtime(settings: Any, db: Any, metrics: Any = None):
    """The replica's forward state, its gateway resolver and its SSH listener for forwards."""
    from tether.forward.gateway import ForwardResolver
    from tether.forward.runtime import ForwardRuntime
    from tether.forward.ssh import RouteRegistrar

    runtime = ForwardRuntime(settings, db, metrics)
    return runtime, ForwardResolver(runtime), RouteRegistrar(runtime)


def apps_runtime(settings: Any, db: Any, store: Any, metrics: Any = None):
    """The replica's apps state (its sandboxes) and the gateway resolver for instances."""
    from tether.apps.gateway import AppsResolver
    from tether.apps.supervisor import AppsRuntime

    runtime = AppsRuntime(settings, db, store, metrics)
    return runtime, AppsResolver(runtime)


def apps_unavailable(settings: Any) -> str | None:
    """None when this machine can run app sandboxes, else why not (not root, no bubblewrap, another
    hub process holding the apps_prefix...)."""
    from pathlib import Path

    try:
        from tether.apps.sandbox import Sandboxes

        from tether.apps.supervisor import hold_prefix

        root = Path(settings.apps_root or (settings.data_dir / "apps")) / "sandboxes"
        # the prefix is taken now, for the process's life: the runtime started later finds it held
        return Sandboxes(root, prefix=settings.apps_prefix).available() or hold_prefix(settings.apps_prefix)
    except Exception as exc:  # noqa: BLE001 - whatever stops the sandbox layer is the answer
        return str(exc)


def gateway_resolver(forward: Any, apps: Any, domain: str):
    """One resolver for the gateway: a route names an app instance (apps answers) or a
    forwarded app (forward answers). Routes and instances share one set of names per
    user (each capability refuses a name the other holds), so at most one matches, and a
    name forward has seen live within its CHECK_SECONDS skips the instance lookup."""
    from tether.gateway import core as gw

    async def resolve(request):
        if apps is not None:
            target = gw.match(request.host, request.target, domain)
            if forward.knows(target.route):  # a live forward route of this name: no instance can have it
                return await forward(request)
            decision = await apps(request, target)
            if decision is not None:
                return decision
        return await forward(request)

    def now(request):
        """The decision without waiting: forward's, for a name forward has seen live (no
        instance has it), else apps', for a running instance read within CHECK_SECONDS."""
        if apps is not None:
            target = gw.match(request.host, request.target, domain)
            if not forward.knows(target.route):
                return apps.now(request, target)
        return forward.now(request)

    resolve.now = now
    return resolve


def check_settings(settings) -> None:
    """Each capability checks its own settings when the hub starts (:class:`ConfigError`)."""
    from tether.apps.core import check_settings as check_apps
    from tether.config import ConfigError
    from tether.publish.settings import check as check_publish

    check_publish(settings)
    try:
        check_apps(settings)
    except ValueError as exc:
        raise ConfigError(f"invalid hub configuration: {exc}") from None
