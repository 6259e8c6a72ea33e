"""Network namespaces and veth pairs for sandboxes, and entering a namespace.

Each instance gets a named namespace (``/run/netns/<prefix>-<id>``) and a veth pair:
``<prefix>-<id>`` on the host, ``eth0`` inside, with a /31 IPv4 and a /127 IPv6 link from
the sandboxes' pools and a default route via the host. Whether anything may cross that
link is the nftables policy's business (netpolicy.py); the addresses are only for
routing, never for policy.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)


class NetError(Exception):
    """A namespace or link could not be made; the message carries ip's own words."""


def setns_net(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def default_pools(prefix: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """Address pools derived from the prefix, so two sets of sandboxes on one machine
    (two hubs, or test runs with their own prefix) are unlikely to share one."""
    h = zlib.crc32(prefix.encode())
    v4 = ipaddress.IPv4Network((int(ipaddress.IPv4Address("100.64.0.0")) + ((h % 64) << 16), 16))
    v6 = ipaddress.IPv6Network((int(ipaddress.IPv6Address("fd74:7468::")) + ((h & 0xFFFF) << 64), 64))
    return v4, v6


@dataclass(frozen=True)
class Link:
    """The addresses of one instance's veth pair (index ``index`` in the pools)."""

    index: int
    host4: ipaddress.IPv4Address
    inst4: ipaddress.IPv4Address
    host6: ipaddress.IPv6Address
    inst6: ipaddress.IPv6Address

    @classmethod
    def at(cls, index: int, pool4: ipaddress.IPv4Network, pool6: ipaddress.IPv6Network) -> "Link":
        if 2 * index + 1 >= pool4.num_addresses:
            raise NetError(f"the address pool {pool4} is full")
        b4, b6 = pool4.network_address, pool6.network_address
        return cls(index, b4 + 2 * index, b4 + 2 * index + 1, b6 + 2 * index, b6 + 2 * index + 1)


def _batch(commands: list[str], netns: str | None = None, force: bool = False) -> None:
    argv = [IP]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    res = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
    if res.returncode != 0 and not force:
        raise NetError(f"ip {' / '.join(commands)}: {res.stderr.strip()}")


def forward_from(interface: str) -> bool:
    """Let the host forward what arrives on ``interface`` (IPv4, and IPv6 where the
    kernel can do it per interface: ``force_forwarding``, Linux 6.17 and later), without
    making the whole machine a router. False when IPv6 needs the machine-wide switch
    (``net.ipv6.conf.all.forwarding=1``) for grants to IPv6 destinations to work."""
    Path(f"/proc/sys/net/ipv4/conf/{interface}/forwarding").write_text("1")
    force6 = Path(f"/proc/sys/net/ipv6/conf/{interface}/force_forwarding")
    if force6.exists():
        force6.write_text("1")
        return True
    return Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text().strip() == "1"


def create(name: str, link: Link) -> None:
    """Make namespace ``name`` with its veth pair, addresses, routes and loopback up.
    Forwarding is turned on for the host end only (not machine-wide; see :func:`forward_from`)."""
    _batch([
        f"netns add {name}",
        f"link add {name} type veth peer name eth0 netns {name}",
        f"addr add {link.host4}/31 dev {name}",
        f"addr add {link.host6}/127 dev {name} nodad",
        f"link set {name} up",
    ])
    forward_from(name)
    _batch([
        "link set lo up",
        f"addr add {link.inst4}/31 dev eth0",
        f"addr add {link.inst6}/127 dev eth0 nodad",
        "link set eth0 up",
        f"route add default via {link.host4}",
        f"route add ::/0 via {link.host6}",
    ], netns=name)


def remove(name: str) -> None:
    """Delete the veth pair and the namespace; nothing if they are gone."""
    if Path("/sys/class/net", name).exists() or (NETNS_DIR / name).exists():
        _batch([f"link del {name}", f"netns del {name}"], force=True)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def names(prefix: str) -> set[str]:
    """Namespaces and host links present whose name starts with ``prefix``."""
    found = {n for n in os.listdir("/sys/class/net") if n.startswith(prefix)}
    if NETNS_DIR.is_dir():
        found.update(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    return found


def open_ns(name: str) -> int:
    """An fd on namespace ``name`` (close it when done)."""
    return os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)


def run_in(name: str, fn):
    """fn() in a thread that entered namespace ``name`` (setns moves only that thread, and
    the thread ends after), so the hub itself never leaves its own namespace."""
    box: dict[str, object] = {}

    def target():
        try:
            fd = open_ns(name)
            try:
                setns_net(fd)
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    th = threading.Thread(target=target, name=f"netns-{name}")
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]
