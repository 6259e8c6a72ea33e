"""Network namespaces and veth pairs for sandboxes, and entering a namespace.

Each instance gets a named namespace (``/run/netns/<prefix>-<id>``) and a veth pair:
``<prefix>-<id>`` on the host, ``eth0`` inside, with a /31 IPv4 and a /127 IPv6 link from
the sandboxes' pools and a default route via the host. Whether anything may cross that
link is the nftables policy's business (netpolicy.py); the addresses are only for
routing, never for policy.

Made in process, over netlink (pyroute2) and with unshare(2)/mount(2), as ``ip netns add``
makes it (a file in ``/run/netns`` bind-mounted on the namespace, the directory a shared
mount) but with no ``ip`` process: a thread unshares its network namespace, binds it to
the file and makes the veth from inside; the calling thread stays in the host's.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 0x100000
MNT_DETACH = 2
IFA_F_NODAD = 0x02
THREAD_NS = b"/proc/thread-self/ns/net"

_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_unshare = _libc.unshare
_unshare.argtypes = (ctypes.c_int,)
_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_shared_dir = threading.Lock()
_dir_is_shared = False


class NetError(Exception):
    """A namespace or link could not be made; the message says which step and the kernel's words."""


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns_net(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    _check(_setns(fd, CLONE_NEWNET), "setns")


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


def _share_dir() -> None:
    """/run/netns as ``ip netns`` keeps it: a shared mount, so a namespace bound in it is seen
    in mount namespaces made later (once per process; a no-op when it already is)."""
    global _dir_is_shared
    if _dir_is_shared:
        return
    with _shared_dir:
        NETNS_DIR.mkdir(mode=0o755, exist_ok=True)
        d = os.fsencode(NETNS_DIR)
        if _mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a mount point yet
                _check(-1, f"making {NETNS_DIR} a shared mount")
            _check(_mount(d, d, b"none", MS_BIND | MS_REC, None), f"binding {NETNS_DIR}")
            _check(_mount(b"none", d, None, MS_SHARED | MS_REC, None), f"making {NETNS_DIR} a shared mount")
        _dir_is_shared = True


def _in_thread(fn, label: str):
    """fn() in a thread of its own, which ends after (so whatever namespace it entered goes
    with it, and pyroute2's calls never meet the caller's event loop)."""
    box: dict[str, object] = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    th = threading.Thread(target=target, name=label)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def create(name: str, link: Link) -> None:
    """Make namespace ``name`` with its veth pair, addresses, routes and loopback up.
    Forwarding is turned on for the host end only (not machine-wide; see :func:`forward_from`).
    On failure what was made stays for :func:`remove` (which the sandbox calls)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    path = NETNS_DIR / name
    try:
        _share_dir()
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    except OSError as exc:
        raise NetError(f"namespace {name}: {exc}") from None

    def build() -> None:
        step = "opening netlink"
        try:
            host_ns = os.open(THREAD_NS, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with IPRoute() as host:  # its socket stays in the host's namespace
                    step = "unshare"
                    _check(_unshare(CLONE_NEWNET), "unshare")
                    _check(_mount(THREAD_NS, os.fsencode(path), b"none", MS_BIND, None), f"binding {path}")
                    with IPRoute() as inner:
                        step = "veth"
                        inner.link("add", ifname="eth0", kind="veth", peer={"ifname": name, "net_ns_fd": host_ns})
                        step = "the namespace's addresses and routes"
                        inner.link("set", index=inner.link_lookup(ifname="lo")[0], state="up")
                        eth0 = inner.link_lookup(ifname="eth0")[0]
                        inner.addr("add", index=eth0, address=str(link.inst4), prefixlen=31)
                        inner.addr("add", index=eth0, address=str(link.inst6), prefixlen=127, flags=IFA_F_NODAD)
                        inner.link("set", index=eth0, state="up")
                        inner.route("add", dst="0.0.0.0/0", gateway=str(link.host4))
                        inner.route("add", dst="::/0", gateway=str(link.host6), family=10)
                    step = "the host end's addresses"
                    idx = host.link_lookup(ifname=name)[0]
                    host.addr("add", index=idx, address=str(link.host4), prefixlen=31)
                    host.addr("add", index=idx, address=str(link.host6), prefixlen=127, flags=IFA_F_NODAD)
                    host.link("set", index=idx, state="up")
            finally:
                os.close(host_ns)
        except (NetlinkError, OSError, IndexError) as exc:
            raise NetError(f"namespace {name}, {step}: {exc}") from None

    _in_thread(build, f"netns-{name}")
    forward_from(name)


def remove(name: str) -> None:
    """Delete the veth pair and the namespace; nothing if they are gone."""
    if Path("/sys/class/net", name).exists():
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        def delete() -> None:
            with IPRoute() as host:
                try:
                    host.link("del", ifname=name)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise NetError(f"deleting the link {name}: {exc}") from None

        _in_thread(delete, f"netns-del-{name}")
    path = NETNS_DIR / name
    if path.exists():
        if _umount2(os.fsencode(path), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
            _check(-1, f"unmounting {path}")
        path.unlink(missing_ok=True)


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

    def inside():
        fd = open_ns(name)
        try:
            setns_net(fd)
        finally:
            os.close(fd)
        return fn()

    return _in_thread(inside, f"netns-{name}")
