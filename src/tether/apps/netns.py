"""Network namespaces and veth pairs for sandboxes, and entering a namespace.

Each instance gets a named namespace (``/run/netns/<prefix>-<id>``) and a veth pair:
``<prefix>-<id>`` on the host, ``eth0`` inside, with a /31 IPv4 and a /127 IPv6 link from
the sandboxes' pools and a default route via the host. Whether anything may cross that
link is the nftables policy's business (netpolicy.py); the addresses are only for
routing, never for policy.

Made in process, with unshare(2)/mount(2) as ``ip netns add`` makes it (a file in
``/run/netns`` bind-mounted on the namespace, the directory a shared mount) and over
rtnetlink, but with no ``ip`` process: a thread unshares its network namespace, binds it to
the file and makes the veth from inside; the calling thread stays in the host's. The
messages are encoded by pyroute2's message classes and sent on a plain blocking netlink
socket, one request and its acknowledgement at a time (pyroute2's own IPRoute costs ~4
times the CPU here: an asyncio loop per socket).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
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
IFF_UP = 0x1
NETLINK_ROUTE, NLMSG_ERROR = 0, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
_NLMSG_ERR = struct.Struct("=IHHIIi")  # struct nlmsghdr + the error code of struct nlmsgerr
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


class _Rtnl:
    """A blocking rtnetlink socket in the namespace of the thread that opened it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.settimeout(5)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> "_Rtnl":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def request(self, msg, kind: int, flags: int = NLM_F_CREATE | NLM_F_EXCL) -> None:
        """Send ``msg`` (a pyroute2 message) as ``kind``; raise OSError with the kernel's errno."""
        self.seq += 1
        msg["header"].update(type=kind, flags=NLM_F_REQUEST | NLM_F_ACK | flags, sequence_number=self.seq)
        msg.encode()
        self.sock.send(msg.data)
        while True:
            data = self.sock.recv(65536)
            _, typ, _, seq, _, err = _NLMSG_ERR.unpack_from(data)
            if typ == NLMSG_ERROR and seq == self.seq:
                if err:
                    raise OSError(-err, os.strerror(-err))
                return

    def up(self, index: int) -> None:
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        m = ifinfmsg()
        m.update(index=index, flags=IFF_UP, change=IFF_UP)
        self.request(m, RTM_NEWLINK, flags=0)

    def address(self, index: int, address, prefixlen: int) -> None:
        """A /31 or /127 without duplicate address detection (each end of the link is unique)."""
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        m = ifaddrmsg()
        m.update(family=socket.AF_INET6 if address.version == 6 else socket.AF_INET, prefixlen=prefixlen,
                 index=index, flags=IFA_F_NODAD if address.version == 6 else 0)
        m["attrs"] = [("IFA_LOCAL", str(address)), ("IFA_ADDRESS", str(address))]
        self.request(m, RTM_NEWADDR)

    def default_route(self, gateway) -> None:
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

        m = rtmsg()
        m.update(family=socket.AF_INET6 if gateway.version == 6 else socket.AF_INET, dst_len=0,
                 table=RT_TABLE_MAIN, proto=RTPROT_STATIC, scope=0, type=RTN_UNICAST)
        m["attrs"] = [("RTA_GATEWAY", str(gateway))]
        self.request(m, RTM_NEWROUTE)

    def veth(self, name: str, peer: str, peer_ns_fd: int) -> None:
        """The pair ``name`` (here) and ``peer`` (in the namespace open at ``peer_ns_fd``)."""
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        m = ifinfmsg()
        peer_attrs = {"attrs": [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", peer_ns_fd)]}
        m["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer_attrs)]})]})]
        self.request(m, RTM_NEWLINK)

    def delete(self, index: int) -> None:
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        m = ifinfmsg()
        m["index"] = index
        self.request(m, RTM_DELLINK, flags=0)


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
    with it)."""
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
    path = NETNS_DIR / name
    step = f"making {path}"
    try:
        _share_dir()
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
        host_ns = os.open(THREAD_NS, os.O_RDONLY | os.O_CLOEXEC)
        try:
            def inside() -> None:
                nonlocal step
                step = "unshare"
                _check(_unshare(CLONE_NEWNET), "unshare")
                _check(_mount(THREAD_NS, os.fsencode(path), b"none", MS_BIND, None), f"binding {path}")
                with _Rtnl() as nl:
                    step = "veth"
                    nl.veth("eth0", name, host_ns)
                    step = "the namespace's addresses and routes"
                    nl.up(1)  # lo: always index 1 in a new namespace
                    eth0 = socket.if_nametoindex("eth0")  # asked in this thread's namespace
                    nl.address(eth0, link.inst4, 31)
                    nl.address(eth0, link.inst6, 127)
                    nl.up(eth0)
                    nl.default_route(link.host4)
                    nl.default_route(link.host6)

            _in_thread(inside, f"netns-{name}")
        finally:
            os.close(host_ns)
        step = "the host end's addresses"
        with _Rtnl() as nl:
            index = socket.if_nametoindex(name)
            nl.address(index, link.host4, 31)
            nl.address(index, link.host6, 127)
            nl.up(index)
        forward_from(name)
    except OSError as exc:
        raise NetError(f"namespace {name}, {step}: {exc.strerror or exc}") from None


def remove(name: str) -> None:
    """Delete the veth pair and the namespace; nothing if they are gone."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        index = None
    if index is not None:
        with _Rtnl() as nl:
            try:
                nl.delete(index)
            except OSError as exc:
                if exc.errno != errno.ENODEV:
                    raise NetError(f"deleting the link {name}: {exc.strerror}") from None
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
