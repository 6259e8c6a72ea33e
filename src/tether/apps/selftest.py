"""The in-namespace self-test: before an instance is reported ready, prove from inside its
network namespace that the deny holds.

A thread of the hub enters the instance's namespace (setns moves only that thread) and
tries TCP connections to: the host's end of the veth (IPv4 and IPv6, where the self-test
listens, so a hole would be seen as an accepted connection), the host's other addresses,
another instance's address, an IPv6 address outside, and the metadata address
169.254.169.254. Each must fail (refused, unreachable or no answer). One success is a
failed self-test, and the instance does not start.
"""

from __future__ import annotations

import errno
import ipaddress
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tether.apps import netns

PROBE_TIMEOUT = 0.5
METADATA = ipaddress.ip_address("169.254.169.254")
OUTSIDE6 = ipaddress.ip_address("2001:db8::1")


@dataclass(frozen=True)
class Target:
    kind: str  # host | instance | ipv6 | link-local
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int


class SelfTestFailed(Exception):
    """The deny did not hold; the message names what was reachable."""


def _attempt_all(targets: Sequence[Target], timeout: float) -> list[Target]:
    """Non-blocking connects to all targets at once; those that connected."""
    sel = selectors.DefaultSelector()
    socks = []
    reached: list[Target] = []
    try:
        for t in targets:
            fam = socket.AF_INET6 if t.address.version == 6 else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            err = s.connect_ex((str(t.address), t.port))
            if err == 0:
                reached.append(t)
            elif err in (errno.EINPROGRESS, errno.EAGAIN):
                sel.register(s, selectors.EVENT_WRITE, t)
            # any other error: refused before leaving (unreachable, not permitted): held
        deadline = time.monotonic() + timeout
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sel.unregister(key.fileobj)
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    reached.append(key.data)
        return reached
    finally:
        sel.close()
        for s in socks:
            s.close()


def run(ns_name: str, link: netns.Link, others: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
        host_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
        timeout: float = PROBE_TIMEOUT) -> None:
    """Raise SelfTestFailed unless every probe from inside ``ns_name`` is refused."""
    listeners = []
    try:
        for addr in (link.host4, link.host6):
            fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
            ls = socket.socket(fam, socket.SOCK_STREAM)
            ls.bind((str(addr), 0))
            ls.listen(8)
            ls.setblocking(False)
            listeners.append(ls)
        port4, port6 = (ls.getsockname()[1] for ls in listeners)
        targets = [Target("host", link.host4, port4), Target("host", link.host6, port6),
                   Target("link-local", METADATA, 80), Target("ipv6", OUTSIDE6, 80)]
        targets += [Target("host", a, 22) for a in host_addresses]
        targets += [Target("instance", a, 80) for a in others]
        try:
            reached = list(netns.run_in(ns_name, lambda: _attempt_all(targets, timeout)))
        except OSError as exc:
            raise SelfTestFailed(f"the self-test could not run in {ns_name}: {exc}") from exc
        for ls in listeners:
            try:
                ls.accept()[0].close()
                reached.append(Target("host", ipaddress.ip_address(ls.getsockname()[0]), ls.getsockname()[1]))
            except BlockingIOError:
                pass
        if reached:
            what = ", ".join(f"{t.kind} {t.address} port {t.port}" for t in reached)
            raise SelfTestFailed(
                f"the network deny does not hold: from inside the sandbox it reached {what}; "
                "check that nothing else on the host accepts this traffic first (another nftables "
                "table or iptables rule that accepts forwarded/input traffic does not override a "
                "drop here, but a missing 'nft' table does)"
            )
    finally:
        for ls in listeners:
            ls.close()
