"""The LAVA-compatible listener side by side with Debian's `lava-coordinator`: the
same request sequences give the same replies, except where one of its defects is
fixed; each difference is listed here and tested."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tether.job.lava import MAX_IDLE

from tests.hubproc import free_port, unique
from tests.job.conftest import Scheduler, open_files, rss_mib
from tests.services.lava import LavaCoordinator

NODES = {"1.0": "server", "1.1": "client", "1.2": "client"}


def call(port: int, group: str, client: str, request: str, timeout: float = 10, **fields):
    """One request as LAVA's dispatcher sends it: the base message, the length in hex,
    the JSON, a half-close; the reply, or None when the server closed without one."""
    msg = {"port": port, "blocksize": 4096, "poll_delay": 0, "host": "127.0.0.1", "hostname": f"dut-{client}",
           "client_name": client, "group_name": group, "role": NODES.get(client, "server"), "request": request,
           "group_size": len(NODES), **fields}
    return raw(port, json.dumps(msg).encode(), timeout)


def raw(port: int, body: bytes, timeout: float = 10, header: bytes | None = None):
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall((header if header is not None else b"%08X" % len(body)) + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    if not data:
        return None
    assert int(data[:8], 16) == len(data) - 8, data
    return json.loads(data[8:])


def poll(port, group, client, request, tries=20, **fields):
    """Ask again while the answer is "wait", as LAVA's client does every poll_delay."""
    for _ in range(tries):
        r = call(port, group, client, request, **fields)
        if r != {"response": "wait"}:
            return r
        time.sleep(0.05)
    return r


# Each step: (client, request, fields, "once" | "poll", difference or None). A difference
# names the fixed defect and gives (what lava-coordinator answers, what tether answers).
STEPS = [
    ("1.0", "group_data", {}, "once", None),  # wait: 1.1 and 1.2 have not been seen
    ("1.1", "group_data", {}, "once", None),
    ("1.2", "group_data", {}, "once", None),  # everyone seen: group_data with the roles
    ("1.0", "group_data", {}, "once", None),
    ("1.0", "lava_wait_all", {"messageID": "early"}, "once",
     ("a wait-all before anyone sent the id waits (LAVA: nack, the early waiter fails)",
      {"response": "nack"}, {"response": "wait"})),
    ("1.0", "lava_send", {"messageID": "ready", "message": {"ip": "10.0.0.5"}}, "once", None),
    ("1.1", "lava_wait", {"messageID": "ready", "nodeID": "1.1"}, "once", None),
    ("1.1", "lava_wait", {"messageID": "missing", "nodeID": "1.1"}, "once", None),
    ("1.1", "lava_wait_all", {"messageID": "ready"}, "once", None),  # wait: the clients have not sent
    ("1.1", "lava_send", {"messageID": "ready", "message": {"ip": "10.0.0.6"}}, "once", None),
    ("1.2", "lava_send", {"messageID": "ready", "message": {}}, "once", None),
    ("1.2", "lava_wait_all", {"messageID": "ready"}, "once", None),  # everyone's data
    ("1.1", "lava_send", {"messageID": "up", "message": {}}, "once", None),
    ("1.0", "lava_wait_all", {"messageID": "up", "waitrole": "client"}, "once",
     ("a wait-all for a role waits for every node of it (LAVA walked the caller's role and released "
      "after the first client)", {"response": "ack", "message": {"1.1": {}}}, {"response": "wait"})),
    ("1.2", "lava_send", {"messageID": "up", "message": {}}, "once", None),
    ("1.0", "lava_wait_all", {"messageID": "up", "waitrole": "client"}, "poll", None),
    ("1.0", "lava_sync", {"messageID": "s", "message": None}, "once", None),
    ("1.1", "lava_sync", {"messageID": "s", "message": None}, "once", None),
    ("1.2", "lava_sync", {"messageID": "s", "message": None}, "poll", None),  # see test_a_barriers_last_arrival…
    ("1.0", "lava_sync", {"messageID": "s", "message": None}, "poll", None),
    ("1.1", "lava_sync", {"messageID": "s", "message": None}, "poll", None),
    ("1.0", "lava_sync", {"messageID": "s", "message": None}, "once", None),  # reused: a new barrier
    ("1.0", "bogus", {}, "once", None),  # nack
    ("1.0", "clear_group", {}, "once", None),
    ("1.1", "complete", {}, "once", None),  # no answer: the connection closes
]


@pytest.fixture
def coordinator(tmp_path):
    c = LavaCoordinator(tmp_path / "lava", poll_delay=0).start()
    yield c
    c.stop()


@pytest.fixture
def listener(start_hub):
    port = free_port()
    hub = start_hub(args=["--lava-listen", f"127.0.0.1:{port}"])
    hub.lava_port = port
    deadline = time.monotonic() + 10  # /healthz answers a moment before the listener's task binds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return hub


def tether_group(hub, nodes=NODES) -> str:
    s = Scheduler(hub)
    return s.create(nodes=nodes, name=unique("lava"))["group"]


def run_steps(port: int, group: str) -> list:
    out = []
    for client, request, fields, how, _ in STEPS:
        fn = poll if how == "poll" else call
        out.append(fn(port, group, client, request, **fields))
    return out


def strip(reply):
    return {k: v for k, v in reply.items() if k != "error"} if isinstance(reply, dict) else reply


def test_the_same_requests_get_the_same_replies_but_for_the_fixed_defects(coordinator, listener):
    group = tether_group(listener)
    lava = run_steps(coordinator.port, group)
    ours = run_steps(listener.lava_port, group)
    assert coordinator.alive()
    differences = []
    for step, a, b in zip(STEPS, lava, ours):
        diff = step[4]
        if diff is None:
            assert strip(b) == a, (step, a, b)
        else:
            assert (a, strip(b)) == diff[1:], (step, a, b)
            differences.append(diff[0])
    assert len(differences) == 2
    assert lava[2] == {"response": "group_data", "roles": NODES}  # sanity: the oracle did its part


def test_a_barriers_last_arrival_is_answered_at_once(coordinator, listener):
    """LAVA's coordinator answers the last node to reach a barrier "wait", releasing it
    only at its next poll (poll_delay later); tether answers it at once."""
    group = tether_group(listener)
    counts = []
    for port in (coordinator.port, listener.lava_port):
        for client in NODES:
            call(port, group, client, "group_data")
        call(port, group, "1.0", "lava_sync", messageID="b")
        call(port, group, "1.1", "lava_sync", messageID="b")
        replies = [call(port, group, "1.2", "lava_sync", messageID="b")]
        while replies[-1] == {"response": "wait"}:
            replies.append(call(port, group, "1.2", "lava_sync", messageID="b"))
        assert replies[-1] == {"response": "ack", "message": "b"}
        counts.append(len(replies))
    assert counts == [2, 1]


@pytest.mark.parametrize("name,body", [
    ("a body that is a bare number", b"5"),
    ("a request without group_name", json.dumps({"request": "lava_send", "client_name": "1.0", "role": "server",
                                                 "messageID": "m"}).encode()),
])
def test_inputs_that_crash_lava_coordinator_get_a_nack_here(coordinator, listener, name, body):
    group = tether_group(listener)
    assert raw(listener.lava_port, body)["response"] == "nack"
    assert call(listener.lava_port, group, "1.0", "group_data")["response"] == "wait"  # still serving
    with pytest.raises(OSError):  # the oracle dies (or hangs up) on the same input
        raw(coordinator.port, body, timeout=3)
        raw(coordinator.port, body, timeout=3)
        time.sleep(0.5)
        call(coordinator.port, group, "1.0", "group_data", timeout=3)


def test_a_waitrole_the_group_lacks_is_a_nack(listener):
    group = tether_group(listener)
    r = call(listener.lava_port, group, "1.0", "lava_wait_all", messageID="m", waitrole="database")
    assert r["response"] == "nack" and "no role 'database'" in r["error"]


@pytest.mark.parametrize("header,body,why", [
    (b"000000FF", b'{"request": "group_data"}', "closed after 25 of the 255"),  # the length lies: longer
    (b"00000005", b'{"request": "group_data"}', "longer than the 5"),  # shorter
    (b"0000zz10", b"{}", "not 8 hex digits"),
    (None, b"{not json", "not JSON"),
    (None, b"\xff\xfe\xfd", "not UTF-8"),
])
def test_unreadable_frames_get_a_nack_naming_why(listener, header, body, why):
    r = raw(listener.lava_port, body, header=header)
    assert r["response"] == "nack" and why in r["error"]


def test_requests_split_anywhere_even_inside_a_utf8_character(listener):
    group = tether_group(listener)
    msg = json.dumps({"request": "lava_send", "group_name": group, "client_name": "1.0", "role": "server",
                      "messageID": "m", "message": {"name": "Zoë " + "é" * 2000}}, ensure_ascii=False)
    data = b"%08X" % len(msg) + msg.encode()
    with socket.create_connection(("127.0.0.1", listener.lava_port), 10) as s:
        for i in range(0, len(data), 1001):  # an odd step: some cuts land inside a character
            s.sendall(data[i:i + 1001])
            time.sleep(0.01)
        s.shutdown(socket.SHUT_WR)
        reply = s.recv(4096)
    assert reply == b'00000013{"response": "ack"}'
    r = call(listener.lava_port, group, "1.1", "lava_wait", messageID="m")
    assert r["message"]["1.0"]["name"].startswith("Zoë é")


def test_unknown_groups_and_strangers_are_refused_not_created(listener):
    group = tether_group(listener)
    r = call(listener.lava_port, "not-made-by-tether", "1.0", "group_data")
    assert r["response"] == "nack" and "does not exist" in r["error"]
    r = call(listener.lava_port, group, "9.9", "lava_send", messageID="m", message={})
    assert r["response"] == "nack"
    r = call(listener.lava_port, group, "1.1", "lava_send", role="server", messageID="m", message={})
    assert r["response"] == "nack" and "role 'client'" in r["error"]  # a node claiming another's role


def test_ten_thousand_idle_connections_hold_bounded_memory_and_slow_nobody(listener):
    """LAVA's coordinator serves one connection at a time: one idle client stalls all.
    Here 10,000 idle connections (half of them having sent less than their header
    promises) cost the hub a bounded amount of memory (past MAX_IDLE the oldest are
    dropped), and a real request, LAVA's and the HTTP API's, is answered at once meanwhile."""
    group = tether_group(listener)
    pid = listener.proc.pid
    before = rss_mib(pid)
    idle: list[socket.socket] = []
    with open_files(10_000):
        try:
            for i in range(10_000):
                s = socket.create_connection(("127.0.0.1", listener.lava_port), 10)
                if i % 2:
                    s.sendall(b"00000100{")  # less than the header promises
                idle.append(s)
            t = time.monotonic()
            assert call(listener.lava_port, group, "1.0", "lava_send", messageID="m", message={}) == {"response": "ack"}
            lava_took = time.monotonic() - t
            t = time.monotonic()
            with listener.client() as c:
                assert c.get("/healthz").status_code == 200
            http_took = time.monotonic() - t
            grown = rss_mib(pid) - before
            dropped = sum(_closed_by_peer(s) for s in idle)
        finally:
            for s in idle:
                s.close()
    assert lava_took < 1 and http_took < 1, (lava_took, http_took)
    assert dropped >= 10_000 - MAX_IDLE - 100, dropped  # the hub keeps at most MAX_IDLE (the last few: in flight)
    assert grown < 48, f"the hub grew {grown:.0f} MiB holding idle connections"


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False  # still open, nothing to read
    except OSError:
        return True  # reset: aborted by the hub


def test_a_client_that_leaves_before_its_answer_breaks_nothing(listener):
    group = tether_group(listener)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", listener.lava_port), 10) as s:
            msg = json.dumps({"request": "group_data", "group_name": group, "client_name": "1.0", "role": "server",
                              "poll_delay": 1}).encode()
            s.sendall(b"%08X" % len(msg) + msg)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert call(listener.lava_port, group, "1.1", "group_data")["response"] == "wait"


def test_a_node_that_cleared_its_group_can_no_longer_send_or_sync(listener):
    group = tether_group(listener)
    assert call(listener.lava_port, group, "1.1", "clear_group") == {"response": "ack"}
    r = call(listener.lava_port, group, "1.1", "lava_send", messageID="late", message={"b": "2"})
    assert r["response"] == "nack" and "1.1 cannot send 'late': it already finished" in r["error"]
    r = call(listener.lava_port, group, "1.1", "lava_sync", messageID="s", message=None)
    assert r["response"] == "nack" and "cannot sync 's'" in r["error"]
    # nothing was stored: a wait for the message still waits
    assert call(listener.lava_port, group, "1.0", "lava_wait", messageID="late") == {"response": "wait"}


def test_a_held_wait_is_answered_the_moment_it_completes(listener):
    import threading

    group = tether_group(listener)
    got = {}

    def waiter():
        got["r"] = call(listener.lava_port, group, "1.1", "lava_wait", messageID="go", poll_delay=5)
        got["at"] = time.monotonic()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    sent = time.monotonic()
    assert call(listener.lava_port, group, "1.0", "lava_send", messageID="go", message={"k": "v"})["response"] == "ack"
    t.join(10)
    assert got["r"] == {"response": "ack", "message": {"1.0": {"k": "v"}}}
    assert got["at"] - sent < 0.5  # not at the next poll: the hub held the request
