"""The Hub client and its retry policy, against a handler instead of a socket."""

from __future__ import annotations

import json

import pytest

from tether.hubclient.errors import HubError, TransportError
from tether.hubclient.hub import Hub
from tether.hubclient.retry import RetryPolicy, retry_after
from tether.hubclient.transport import WireError
from tether.problems import EXIT_AUTH, EXIT_NO, EXIT_RUNTIME, EXIT_USAGE, ConfigError, Problem, TetherError

FAST = RetryPolicy(backoff=0.001)


def scripted(*answers):
    """A handler answering in turn: (status, headers, body) tuples, or exceptions to raise."""
    calls = []

    def handler(method, target, headers, body):
        calls.append((method, target))
        a = answers[min(len(calls), len(answers)) - 1]
        if isinstance(a, BaseException):
            raise a
        return a

    return handler, calls


OK = (200, {"Content-Type": "application/json"}, json.dumps({"user": "alice"}).encode())
BUSY = (503, {"Retry-After": "0"}, b"")


def test_gateway_errors_and_broken_connections_are_retried_for_idempotent_methods():
    handler, calls = scripted(BUSY, ConnectionResetError("reset"), OK)
    with Hub("http://hub.test", token="tth_x", policy=FAST, handler=handler) as hub:
        assert hub.get("/api/v1/whoami") == {"user": "alice"}
    assert len(calls) == 3


def test_post_is_sent_once():
    handler, calls = scripted(BUSY, OK)
    with Hub("http://hub.test", policy=FAST, handler=handler) as hub, pytest.raises(HubError) as e:
        hub.post("/api/v1/tokens", json={})
    assert len(calls) == 1 and e.value.status == 503 and e.value.exit_code == EXIT_RUNTIME


def test_tries_run_out():
    handler, calls = scripted(ConnectionRefusedError("refused"))
    with Hub("http://hub.test", policy=FAST, handler=handler) as hub, pytest.raises(TransportError) as e:
        hub.get("/api/v1/whoami")
    assert len(calls) == FAST.tries and e.value.exit_code == EXIT_RUNTIME and "refused" in str(e.value)


def test_errors_carry_problem_exit_code_and_hint():
    body = json.dumps({"type": "urn:tether:problem:forbidden", "detail": "no grant"}).encode()
    handler, _ = scripted((403, {"Content-Type": "application/problem+json"}, body))
    with Hub("http://hub.test", handler=handler) as hub, pytest.raises(HubError) as e:
        hub.get("/api/v1/spaces/x")
    assert (e.value.slug, str(e.value), e.value.exit_code) == ("forbidden", "no grant", EXIT_AUTH)
    assert "tether whoami" in e.value.hint


def test_a_url_the_transport_cannot_use_is_a_config_error(monkeypatch):
    monkeypatch.setenv("https_proxy", "socks5://proxy.example:1080")
    with pytest.raises(ConfigError) as e:
        Hub("https://hub.example")
    assert e.value.exit_code == EXIT_USAGE


def test_the_policy():
    p = RetryPolicy()
    assert (p.tries_for("get"), p.tries_for("POST"), RetryPolicy(methods=None).tries_for("POST")) == (3, 1, 3)
    assert p.retries(503) and not p.retries(500) and not p.retries(429)
    assert 0.25 * 0.75 <= p.delay(1) <= 0.25 * 1.25 and 0.5 * 0.75 <= p.delay(2) <= 0.5 * 1.25
    assert p.delay(3, hint=1.5) == 1.5  # the server said when

    class Resp:
        def __init__(self, value):
            self.headers = {"Retry-After": value} if value is not None else {}

    assert p.retry_after(Resp("2")) == 2.0 and p.retry_after(Resp("3600")) == p.retry_after_cap
    assert retry_after(Resp("3600"), cap=60) == 60 and retry_after(Resp(None)) is None
    assert retry_after(Resp("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0 and retry_after(Resp("soon")) is None


def test_call_raises_the_last_transient_error():
    sent = []

    def send():
        sent.append(1)
        raise WireError("down")

    with pytest.raises(WireError):
        FAST.call("GET", send, status=lambda r: r, transient=WireError)
    assert len(sent) == 3


@pytest.mark.parametrize(
    "status, code",
    [(400, EXIT_USAGE), (401, EXIT_AUTH), (403, EXIT_AUTH), (404, EXIT_NO), (405, EXIT_USAGE), (409, EXIT_NO),
     (410, EXIT_NO), (413, EXIT_USAGE), (422, EXIT_USAGE), (429, EXIT_RUNTIME), (500, EXIT_RUNTIME), (302, EXIT_RUNTIME)],
)  # fmt: skip
def test_one_exception_base_one_table(status, code):
    for err in (Problem(status, "x", "d"), HubError(status, {"detail": "d"})):
        assert isinstance(err, TetherError) and err.exit_code == code
    assert ConfigError("c").exit_code == EXIT_USAGE and TransportError("t").exit_code == EXIT_RUNTIME
    assert str(ConfigError("bad", path="/etc/x.conf", line=3)) == "/etc/x.conf:3: bad"
