"""A real browser (Debian's chromium, headless, driven by playwright) opens the sign-in
link `tether forward` printed, lands on the demo app, and its websocket works; a
read-only share link shows the page but no websocket; a spent link shows a refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.browser import ARGS, CHROMIUM, require_chromium
from tests.forward.conftest import start_forward_hub


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("fwdweb")
    w = start_forward_hub(tmp, ("erin",), {})
    env = {**os.environ, "TETHER_HUB": w["hub"].url, "TETHER_TOKEN": w["tokens"]["erin"], "HOME": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "tether", "forward", "demo", "--ssh",
                             f"erin@127.0.0.1:{w['ssh_port']}", "-i", str(w["keys"]["erin"]), "--known-hosts",
                             str(w["known"]), "--json", "--", sys.executable, "-m", "uvicorn", "--uds", "{socket}",
                             "--log-level", "warning", "tether.forward.demo:app"],
                            stdout=subprocess.PIPE, text=True, env=env)
    event = {}
    deadline = time.monotonic() + 60
    while event.get("event") not in ("live", "exit") and time.monotonic() < deadline:
        event = json.loads(proc.stdout.readline() or '{"event": "exit"}')
    assert event["event"] == "live", event
    w.update(proc=proc, live=event, env=env)
    yield w
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    w["hub"].stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


WS_OK = "document.getElementById('ws').textContent.startsWith('ok:')"
WS_DONE = "document.getElementById('ws').textContent !== 'connecting...'"


def test_the_sign_in_link_opens_the_app_and_its_websocket(live, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(live["live"]["signin"])
    assert page.url == live["live"]["url"]  # redirected to the route, the ticket gone from the address
    page.wait_for_function(WS_OK, timeout=10_000)
    cookie, = context.cookies()
    assert cookie["name"] == "tether-gw" and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert cookie["domain"] == "demo--erin.localhost"  # this route's origin only
    again = context.new_page()
    response = again.goto(live["live"]["signin"])  # the link is spent
    assert response.status == 403 and "cannot be used" in again.content()
    context.close()


def test_a_read_only_link_shows_the_page_but_no_websocket(live, browser):
    made = subprocess.run([sys.executable, "-m", "tether", "forward", "share", "demo", "--link", "--read-only", "--expires", "30m", "--json"],
                          capture_output=True, text=True, env=live["env"], timeout=60)
    assert made.returncode == 0, made.stderr
    url = json.loads(made.stdout)["url"]
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    assert page.url == live["live"]["url"]
    page.wait_for_function(WS_DONE, timeout=10_000)
    assert page.locator("#ws").text_content() == "failed"
    context.close()


def test_a_browser_without_a_session_gets_a_sign_in_page(live, browser):
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(live["live"]["url"])
    assert response.status == 401 and "sign in" in page.content()
    context.close()
