"""The ``tether`` executable.

``tether publish`` with plain arguments runs without importing click (see
:mod:`tether.publish.command`: click's import was a fifth of an unchanged
re-publish); everything else, ``tether publish --help`` included, is the click
command line in :mod:`tether.cli`.
"""

from __future__ import annotations

import sys


def main() -> int | None:
    if sys.argv[1:2] == ["publish"]:
        from tether.publish.command import quick

        code = quick(sys.argv[2:])
        if code is not None:
            return code
    from tether.cli import main as cli

    return cli()


__all__ = ["main"]
