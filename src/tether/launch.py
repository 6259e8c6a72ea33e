"""The ``tether`` executable.

``tether publish`` with plain arguments runs without importing click (see
:mod:`tether.publish.command`: click's import was a fifth of an unchanged
re-publish), and so do every command's ``--help``, the plain forms of the
commonest commands (see :mod:`tether.cli.quick`) and ``tether signal -s`` (see
:mod:`tether.signal.quicksend`, which also spares it nats-py and asyncio);
everything else is the click command line in :mod:`tether.cli`.
"""

from __future__ import annotations

import sys


def main() -> int | None:
    args = sys.argv[1:]
    if args[:1] == ["publish"] and args[-1:] not in (["--help"], ["-h"]):
        from tether.publish.command import quick
    elif args[:1] == ["signal"] and "-s" in args:  # (a send, maybe: tether.signal.quicksend reads it)
        from tether.signal.quicksend import quick
    else:
        from tether.cli.quick import quick  # (every command's --help too)

        args = ["", *args]
    code = quick(args[1:])
    if code is not None:
        return code
    from tether.cli import main as cli

    return cli()


__all__ = ["main"]
