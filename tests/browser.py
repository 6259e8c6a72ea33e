"""Debian's chromium, headless, as the browser tests drive it through playwright
(``p.chromium.launch(executable_path=CHROMIUM, args=ARGS)``); nothing downloads a browser."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium not found: run `make test`, which installs Debian's chromium")
