"""Request heads are bounded: 431 past max_header_bytes or max_headers, before the hub buffers
more of them; huge headers neither grow the hub's memory nor hold up other requests."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

MiB = 1 << 20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _exchange(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
        return answer


def test_a_head_over_the_limits_gets_431_and_a_fair_one_passes(start_hub):
    hub = start_hub(env={"TETHER_MAX_HEADER_BYTES": "16384", "TETHER_MAX_HEADERS": "50"})
    long = _exchange(hub.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n")
    assert long.startswith(b"HTTP/1.1 431 ") and b"application/problem+json" in long, long[:200]
    assert b"max_header_bytes" in long
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(60))
    answer = _exchange(hub.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"max_headers" in answer, answer[:200]
    fair = {f"X-H{i}": "v" * 200 for i in range(40)}
    assert httpx.get(hub.url + "/healthz", headers=fair).status_code == 200
    # a long URL counts too
    assert _exchange(hub.port, b"GET /healthz?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 431 ")


def test_the_gateway_listener_has_the_same_head_limits(start_hub):
    from tests.hubproc import free_port

    gw_port = free_port()
    start_hub(env={"TETHER_MAX_HEADER_BYTES": "16384", "TETHER_MAX_HEADERS": "50"},
              args=["--gateway-listen", f"127.0.0.1:{gw_port}"])

    long = _exchange(gw_port, b"GET / HTTP/1.1\r\nHost: app--alice.localhost\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n")
    assert long.startswith(b"HTTP/1.1 431 "), long[:200]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(60))
    assert _exchange(gw_port, b"GET / HTTP/1.1\r\nHost: app--alice.localhost\r\n" + many + b"\r\n"
                     ).startswith(b"HTTP/1.1 431 ")


def test_huge_headers_keep_memory_flat_and_others_served(start_hub):
    hub = start_hub()
    before = _rss(hub.proc.pid)
    results: list[tuple[int, bytes, float]] = []

    def attack() -> None:
        started = time.monotonic()
        sent = 0
        answer = b""
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                block = b"a" * MiB
                while sent < 100 * MiB:
                    s.sendall(block)
                    sent += len(block)
                answer = s.recv(65536)
            except OSError:  # the hub closed the connection (a reset may overtake its 431)
                pass
        results.append((sent, answer, time.monotonic() - started))

    attackers = [threading.Thread(target=attack) for _ in range(6)]
    for t in attackers:
        t.start()
    slowest = 0.0
    while any(t.is_alive() for t in attackers):
        started = time.monotonic()
        assert httpx.get(hub.url + "/healthz", timeout=10).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    for t in attackers:
        t.join()
    grown = _rss(hub.proc.pid) - before
    assert len(results) == 6
    for sent, answer, took in results:
        assert sent < 20 * MiB, "the hub kept reading a header far past its limit"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert took < 5
    assert slowest < 1, slowest
    assert grown < 30 * MiB, f"the hub grew by {grown / MiB:.0f} MiB"


def test_a_head_that_does_not_arrive_in_time_gets_408_and_others_are_served(start_hub):
    """Slow-loris on the API: half a head, then nothing. Before header_timeout existed the
    connection stayed open for good (uvicorn times only the wait between requests)."""
    hub = start_hub(env={"TETHER_HEADER_TIMEOUT": "1"})
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as half, \
            socket.create_connection(("127.0.0.1", hub.port), timeout=10) as mute:
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        assert httpx.get(hub.url + "/healthz").status_code == 200  # others are served meanwhile
        answer = b""
        while chunk := half.recv(65536):
            answer += chunk
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"head-timeout" in answer and b"header_timeout" in answer
        assert 0.8 < waited < 5, waited
        assert mute.recv(1) == b""  # sent nothing: closed without an answer


def test_a_kept_connection_is_timed_per_head_and_a_long_answer_is_not(start_hub):
    """The timer runs while a head arrives, not while the hub makes its answer: a request
    whose answer takes longer than header_timeout is answered, and the next head on the
    same connection is timed from its own first byte."""
    hub = start_hub(env={"TETHER_HEADER_TIMEOUT": "1"})
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _one_answer(s)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        time.sleep(0.5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # half of the second head
        time.sleep(0.7)  # 1.2 s since the first request, 0.7 s into this head: in time
        s.sendall(b"\r\n")
        second = _one_answer(s)
        assert second.startswith(b"HTTP/1.1 200 "), second[:200]


def _one_answer(s: socket.socket) -> bytes:
    """One whole answer (its head, then as many body bytes as its Content-Length says)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def test_the_hub_raises_its_open_files_limit_to_the_hard_one(start_hub):
    """Every connection is a file: started with a soft limit of 1,024 (Debian's default),
    the hub raises it to the hard limit rather than stall its accepts at 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        import pytest
        pytest.skip(f"the hard limit here is {hard}: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the hub inherits it
    try:
        hub = start_hub()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    line = next(x for x in Path(f"/proc/{hub.proc.pid}/limits").read_text().splitlines()
                if x.startswith("Max open files"))
    assert line.split()[3] == (str(hard) if hard != resource.RLIM_INFINITY else "unlimited"), line
