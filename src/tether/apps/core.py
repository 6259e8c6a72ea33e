"""The apps capability's rules, sans-IO: names, commands, limits, grant destinations,
instance naming, restart backoff and who gets through the gateway to an instance.

Nothing here resolves a name, reads a clock or touches the OS: the service resolves
a grant's host name and passes the addresses in; the supervisor passes the time.
Every refusal is an :class:`AppError` whose ``detail`` says what was wrong and what
to do, and whose ``status`` is the HTTP status the API answers with.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tether.auth.caveats import Level, Scope
from tether.gateway.core import ROUTE_NAME_RE, Access
from tether.units import USER_NAME_RE, parse_size

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: app names are route names (the gateway serves ``APP--USER.<domain>``)
APP_NAME_RE = ROUTE_NAME_RE
#: versions: letters, digits, '.', '_', '+', '-', starting with a letter or digit
VERSION_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
MAX_ARGS = 256
MAX_ARG_CHARS = 4096

MIN_MEMORY = 16 << 20
MAX_MEMORY = 64 << 30
MIN_CPU, MAX_CPU = 0.01, 64.0
MIN_PIDS, MAX_PIDS = 8, 32768
DEFAULT_MEMORY = 256 << 20
DEFAULT_CPU = 0.5
DEFAULT_PIDS = 128
# /data is a filesystem of its own per instance (a sparse image: only what is written
# takes room on the host), so its size is a hard limit on what the app keeps.
MIN_DISK, MAX_DISK = 16 << 20, 1 << 40
DEFAULT_DISK = 1 << 30

#: instance ids name the sandbox's netns, veth, nft set and cgroup: ^[a-z0-9]{1,10}$
INSTANCE_ID_RE = re.compile(r"\A[a-z0-9]{1,10}\Z")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

PROTOCOLS = ("tcp", "udp")
METADATA = ipaddress.ip_address("169.254.169.254")


class AppError(Exception):
    """Bad input or a refused request: ``status`` (HTTP), ``slug`` and a ``detail`` sentence."""

    def __init__(self, detail: str, slug: str = "invalid-app-request", status: int = 400):
        super().__init__(detail)
        self.detail, self.slug, self.status = detail, slug, status


# ---------------------------------------------------------------- names and commands


def check_app_name(name: object) -> str:
    if not isinstance(name, str) or not APP_NAME_RE.match(name):
        shown = name[:64] if isinstance(name, str) else name
        raise AppError(f"app name {shown!r} is not valid: 1-40 lowercase letters, digits and single hyphens, "
                       "starting with a letter or digit (no dots, slashes, spaces, quotes or '--'); "
                       "it names the app's address APP--USER.<gateway domain>", "invalid-app-name")
    return name


def check_version(version: object) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        shown = version[:64] if isinstance(version, str) else version
        raise AppError(f"version {shown!r} is not valid: 1-64 letters, digits, '.', '_', '+' or '-', starting with "
                       "a letter or digit (no slashes, spaces or shell characters)", "invalid-app-version")
    return version


def check_argv(argv: object, what: str = "--cmd") -> tuple[str, ...]:
    """An argv list, kept exactly as given: quotes, ``$(...)``, spaces and newlines are
    characters of an argument, never interpreted (no shell is ever involved). Refused:
    an empty list, a non-string, a NUL byte, more than 256 arguments or 4096 characters each."""
    if isinstance(argv, str) or not isinstance(argv, (list, tuple)) or not argv:
        raise AppError(f"{what} needs a command as a list of arguments, e.g. [\"python3\", \"app.py\"]; "
                       "it is run as is, never through a shell", "invalid-command")
    if len(argv) > MAX_ARGS:
        raise AppError(f"{what} has {len(argv)} arguments; at most {MAX_ARGS}", "invalid-command")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise AppError(f"{what}: argument {i} is not a string", "invalid-command")
        if "\x00" in arg:
            raise AppError(f"{what}: argument {i} contains a NUL byte, which no program can receive",
                           "invalid-command")
        if len(arg) > MAX_ARG_CHARS:
            raise AppError(f"{what}: argument {i} is longer than {MAX_ARG_CHARS} characters", "invalid-command")
    if not argv[0]:
        raise AppError(f"{what}: the program (argument 0) is empty", "invalid-command")
    return tuple(argv)


# ---------------------------------------------------------------- limits


@dataclass(frozen=True)
class AppLimits:
    memory_bytes: int = DEFAULT_MEMORY
    cpu: float = DEFAULT_CPU
    pids: int = DEFAULT_PIDS
    disk_bytes: int = DEFAULT_DISK

    def info(self) -> dict:
        return {"memory": self.memory_bytes, "cpu": self.cpu, "pids": self.pids, "disk": self.disk_bytes}


def _parse_bytes(text: object, option: str, low: int, high: int, bounds: str) -> int:
    """``256M``/``1G`` (binary, as docker reads them), ``256MiB``, ``300MB`` or bytes, in [low, high]."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AppError(f"{option} must be a size such as 256M or 1GiB", "invalid-limit")
    value = str(text).strip()
    if re.fullmatch(r"-.*", value):
        raise AppError(f"{option} {value!r} is negative; give a size such as 256M", "invalid-limit")
    short = re.fullmatch(r"(\d+)\s*([kKmMgGtT])", value)
    try:
        n = (int(short.group(1)) << {"k": 10, "m": 20, "g": 30, "t": 40}[short.group(2).lower()] if short
             else parse_size(value))
    except ValueError as exc:
        raise AppError(f"{option}: {exc}", "invalid-limit") from None
    if n < low or n > high:
        raise AppError(f"{option} {value!r} is out of range: between {bounds}", "invalid-limit")
    return n


def parse_memory(text: object) -> int:
    """The memory limit: between 16 MiB and 64 GiB."""
    return _parse_bytes(text, "--memory", MIN_MEMORY, MAX_MEMORY, "16M and 64G")


def parse_disk(text: object) -> int:
    """The size of the instance's /data: between 16 MiB and 1 TiB."""
    return _parse_bytes(text, "--disk", MIN_DISK, MAX_DISK, "16M and 1T")


def parse_cpu(text: object) -> float:
    """Cores, e.g. ``0.5``: between 0.01 and 64."""
    try:
        if isinstance(text, bool):
            raise ValueError
        n = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AppError(f"--cpu {str(text)[:20]!r} is not a number of cores such as 0.5", "invalid-limit") from None
    if not (MIN_CPU <= n <= MAX_CPU):  # also refuses nan and inf
        raise AppError(f"--cpu {str(text)[:20]!r} is out of range: between {MIN_CPU} and {MAX_CPU:g} cores",
                       "invalid-limit")
    return round(n, 3)


def parse_pids(text: object) -> int:
    """Processes and threads the instance may hold at once: between 8 and 32768."""
    try:
        if isinstance(text, bool) or isinstance(text, float):
            raise ValueError
        n = int(str(text).strip())
    except (TypeError, ValueError):
        raise AppError(f"--pids {str(text)[:20]!r} is not a whole number such as 128", "invalid-limit") from None
    if not (MIN_PIDS <= n <= MAX_PIDS):
        raise AppError(f"--pids {n} is out of range: between {MIN_PIDS} and {MAX_PIDS}", "invalid-limit")
    return n


DEFAULT_TCP_PORT = 8000


def parse_tcp_port(text: object) -> int:
    """The port a TCP-only app listens on, on 127.0.0.1 inside its own network namespace
    (``--tcp PORT``): a whole number between 1 and 65535."""
    if isinstance(text, bool) or isinstance(text, float):
        text = repr(text)
    value = str(text).strip()
    if not value.isdigit() or not value.isascii():
        raise AppError(f"--tcp {value[:20]!r} is not a port number such as {DEFAULT_TCP_PORT}", "invalid-port")
    n = int(value)
    if not 1 <= n <= 65535:
        raise AppError(f"--tcp {n} is out of range: a port between 1 and 65535", "invalid-port")
    return n


def parse_limits(memory: object = None, cpu: object = None, pids: object = None, disk: object = None) -> AppLimits:
    return AppLimits(DEFAULT_MEMORY if memory is None else parse_memory(memory),
                     DEFAULT_CPU if cpu is None else parse_cpu(cpu),
                     DEFAULT_PIDS if pids is None else parse_pids(pids),
                     DEFAULT_DISK if disk is None else parse_disk(disk))


# ---------------------------------------------------------------- grant destinations


@dataclass(frozen=True)
class Wanted:
    """A destination as asked for: ``tcp|udp`` and ``HOST:PORT`` (HOST not yet resolved)."""

    proto: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


_HOST_RE = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")


def parse_destination(proto: str | None, hostport: str) -> Wanted:
    """``tcp HOST:PORT`` (two words) or ``tcp:HOST:PORT`` (one, ``proto`` None); IPv6 in
    brackets: ``tcp:[2001:db8::1]:443``. A network (``0.0.0.0/0``, ``::/0``, any
    ``/N``) is refused: a grant opens one address and one port."""
    text = hostport.strip() if isinstance(hostport, str) else ""
    if proto is None:
        proto, sep, text = text.partition(":")
        if not sep:
            raise AppError(f"destination {hostport[:80]!r} is not tcp:HOST:PORT or udp:HOST:PORT", "invalid-grant")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise AppError(f"protocol {proto[:10]!r} is not tcp or udp", "invalid-grant")
    if "/" in text:
        raise AppError(f"{text[:80]!r} is a network: a grant opens one address and one port, never a range "
                       "(0.0.0.0/0 and ::/0 would open everything); grant each destination on its own",
                       "grant-network")
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise AppError(f"{text[:80]!r} is not [IPV6]:PORT", "invalid-grant")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise AppError(f"{text[:80]!r} is not HOST:PORT (an IPv6 address goes in brackets: [2001:db8::1]:443)",
                           "invalid-grant")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise AppError(f"port {port_text[:10]!r} in {text[:80]!r} is not between 1 and 65535", "invalid-grant")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_RE.match(host) or host.replace(".", "").isdigit():
            raise AppError(f"host {host[:80]!r} is neither an IP address nor a host name", "invalid-grant") from None
    return Wanted(proto, host.lower().rstrip("."), int(port_text))


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class Checked:
    """A destination that may be granted: its one address; ``host`` when it is the hub's
    own machine (such grants need admin on the app's space)."""

    proto: str
    address: IPAddress
    port: int
    host: bool = False

    def key(self) -> str:
        shown = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.proto}:{shown}:{self.port}"


def check_destination(wanted: Wanted, addresses: Sequence[IPAddress], hub_addresses: Iterable[IPAddress]) -> Checked:
    """Decide a destination given what its host resolved to and the hub's own addresses.

    Refused: a name that resolves to nothing or to several addresses (the grant would be
    wider than it looks; grant one address), an unspecified, multicast, broadcast,
    loopback (that is the instance itself), link-local or metadata address. The hub's
    own addresses are marked ``host`` (admin only)."""
    unique = sorted(set(addresses), key=lambda a: (a.version, int(a)))
    if not unique:
        raise AppError(f"{wanted.host!r} does not resolve to any address; check the name or grant an address",
                       "grant-unresolved")
    if len(unique) > 1:
        shown = ", ".join(str(a) for a in unique[:6]) + (" ..." if len(unique) > 6 else "")
        raise AppError(f"{wanted.host!r} resolves to {len(unique)} addresses ({shown}): a grant opens exactly one; "
                       "grant the address you mean", "grant-ambiguous")
    addr = unique[0]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    why = None
    if addr.is_unspecified:
        why = "is the unspecified address (it would mean every address)"
    elif addr.is_multicast or addr == ipaddress.IPv4Address("255.255.255.255"):
        why = "is a multicast or broadcast address"
    elif addr == METADATA:
        why = "is the cloud metadata address, which would hand out the host's credentials"
    elif addr.is_link_local:
        why = "is link-local (metadata services and neighbours live there)"
    elif addr.is_loopback:
        why = "is loopback: inside its sandbox that is the instance itself, not the hub"
    if why:
        raise AppError(f"{wanted.host} {why}; it is never granted", "grant-refused")
    hub = {(a.ipv4_mapped or a) if isinstance(a, ipaddress.IPv6Address) else a for a in hub_addresses}
    return Checked(wanted.proto, addr, wanted.port, host=addr in hub)


# ---------------------------------------------------------------- instances


def instance_id(row_id: int) -> str:
    """The sandbox's id for instance row ``row_id``: ``a`` and the id in base 36
    (``a1``, ``a2s``...): at most 10 characters, stable, never reused for another row."""
    if row_id <= 0:
        raise ValueError("instance row ids start at 1")
    digits = ""
    n = row_id
    while n:
        n, r = divmod(n, 36)
        digits = _B36[r] + digits
    out = "a" + digits
    if len(out) > 10:
        raise ValueError("instance row id too large")
    return out


def route_name(app: str) -> str:
    """An instance is served as the route APP of its owner (``APP--USER.<domain>``)."""
    return app


def parse_instance(ref: str, me: str) -> tuple[str, str]:
    """``APP`` (the caller's own), ``APP--USER`` (the gateway's name) or ``USER/APP``: (app, user)."""
    if not isinstance(ref, str) or not ref:
        raise AppError("name an instance: APP (yours), APP--USER or USER/APP", "invalid-instance")
    if "/" in ref:
        user, _, app = ref.partition("/")
    elif "--" in ref:
        app, _, user = ref.partition("--")
    else:
        app, user = ref, me
    check_app_name(app)
    if not USER_NAME_RE.match(user):
        raise AppError(f"user {user[:40]!r} in instance {ref[:80]!r} is not a user name", "invalid-instance")
    return app, user


def allocate_uid(row_id: int, base: int, count: int) -> int:
    """Each instance runs as a uid (and gid) of its own: ``base + row_id % count``.
    Row ids are unique, so two live instances share a uid only after ``count`` more
    were made; the service refuses that (it checks the uid is free)."""
    return base + row_id % count


# ---------------------------------------------------------------- lifecycle


def restart_delay(failures: int, *, first: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before restarting an instance that crashed ``failures`` times in a
    row: 1, 2, 4, ... up to a minute."""
    return min(cap, first * (2 ** max(0, failures - 1)))


STABLE_SECONDS = 30.0  # an instance that ran this long is no longer crash-looping: failures reset

_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
            9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ"}


def exit_reason(exit_code: int | None, oom_killed: bool = False) -> str:
    """Why an app's sandbox ended, as a phrase after "it": the memory limit, an exit
    status, a signal (a negative code, or bubblewrap's 128+N), or no status at all
    (killed from outside the sandbox). Never empty."""
    if oom_killed:
        return "ran out of memory (the memory limit killed it)"
    if exit_code is None:
        return "ended with no exit status (its processes were killed from outside the sandbox)"
    if exit_code < 0:
        return f"was killed by signal {-exit_code} ({_SIGNALS.get(-exit_code, 'unnamed')})"
    if 128 < exit_code < 160:
        sig = exit_code - 128
        return f"exited {exit_code} (killed by signal {sig}, {_SIGNALS.get(sig, 'unnamed')})"
    return f"exited {exit_code}"


# ---------------------------------------------------------------- the gateway's rule


def app_scope(space: str, app: str, *, read_only: bool = False) -> str:
    return f"app:{space}/{app}" + (":read" if read_only else "")




def decide(*, owner: str, space: str, app: str, user: str, scopes: tuple[Scope, ...] | None,
           method: bytes, upgrade: bool, share: bool | None = None) -> Access:
    """May ``user`` (a token of ``scopes``; None when unscoped) reach ``owner``'s instance
    of ``app``? Its owner does, and those the owner shared it with (``share``: None when
    not shared with ``user``, else whether the share is read-only): an instance holds
    its owner's data. A token with scopes must carry ``app:SPACE/APP`` (or ``app:SPACE``,
    ``space:SPACE``). Read-only (a read scope or share) allows GET and HEAD only."""
    read_only = False
    if user != owner:
        if share is None:
            return Access(False, 403, "not-instance-owner",
                          f"this instance of {app} belongs to {owner} and is not shared with {user}; spawn your own "
                          f"with `tether app spawn {app}`, or ask {owner} to run `tether app share {app} --with {user}`")
        read_only = share
    if scopes is not None:
        best = None
        for s in scopes:
            if s.kind in ("app", "space") and s.target == space and s.prefix in ("", app):
                best = s.access if best is None else max(best, s.access)
        if best is None:
            return Access(False, 403, "token-scope", f"this token is limited to other scopes; reaching {app} needs "
                          f"{app_scope(space, app)} (or :read)")
        read_only = read_only or best < Level.WRITE
    if read_only and (method not in (b"GET", b"HEAD") or upgrade):
        return Access(False, 403, "read-only", f"this access to {app} is read-only: GET and HEAD only",
                      read_only=True)
    return Access(True, read_only=read_only)


def check_settings(settings) -> None:
    """The hub's apps settings, checked when it starts (ValueError says which and why)."""
    top = settings.apps_uid_base + settings.apps_uid_count
    if top > 2**32 - 2:
        raise ValueError(f"apps_uid_base + apps_uid_count = {top} passes the largest uid (4294967294); lower either")
    if settings.apps_uid_base <= 65534 < top:
        raise ValueError("apps uids would include 65534 (nobody); set apps_uid_base above it")
