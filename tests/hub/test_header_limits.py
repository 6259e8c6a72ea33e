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
