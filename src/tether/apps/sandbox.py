"""Sandboxes for app instances: bubblewrap, namespaces, cgroups, rlimits, nftables.

An OS adapter (root needed; no database, no HTTP). One :class:`Sandboxes` per hub
process; each instance is named by a stable id and everything made for it (network
namespace with its nftables table and sets, veth, cgroups, state directory) is named
from that id, never from an address that another instance could later get.

Per instance, under ``root/<instance>/`` (0700, files 0600): ``spec.json`` (what started
it, for adoption), ``net.json`` (its link's index in the address pools), ``grants.json``
(granted, and revoked but still in the deny sets), ``pid``, ``status.json`` (bubblewrap's
status: the app's pid and exit code) and ``app.log`` (the app's stdout and stderr,
appended).
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tether.apps import cgroups, netns, netpolicy, relay, seccomp, selftest

INSTANCE_RE = re.compile(r"^[a-z0-9]{1,10}$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,3}$")
SOCKET_IN_SANDBOX = "/run/tether/app.sock"
# Paths of the host's /etc that a sandbox never sees (the hub's own configuration).
HIDDEN_ETC = ("/etc/tether",)
BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
PRLIMIT = "/usr/bin/prlimit"
PYTHON = "/usr/bin/python3"  # runs the relay of a TCP app, inside its sandbox
RELAY_SOURCE = Path(relay.__file__).read_text()
MIN_UID = 1000
CONNTRACK = "/usr/sbin/conntrack"


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # cgroup memory limit (and swap off)
    cpu: float  # cores, e.g. 0.5 (cpu quota/period)
    pids: int  # cgroup pids.max
    nofile: int = 1024  # RLIMIT_NOFILE


@dataclass(frozen=True)
class Destination:
    """One granted destination, already validated and resolved."""

    proto: str  # "tcp" | "udp"
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int


@dataclass(frozen=True)
class SandboxSpec:
    instance: str  # ^[a-z0-9]{1,10}$, unique per hub machine; names netns, veth, nft, cgroup
    app_dir: Path  # bound read-only at /app (the cwd)
    data_dir: Path  # persistent, writable, bound at /data (created 0700, owned by uid)
    run_dir: Path  # holds run_dir/"app.sock", the socket the gateway dials; the app sees
    # it as $TETHER_SOCKET=/run/tether/app.sock (the sandbox makes run_dir 0700, owned by uid)
    argv: tuple[str, ...]  # exec'd as is, never through a shell
    env: Mapping[str, str]  # the app's environment (plus TETHER_SOCKET, PORT, HOME=/data)
    uid: int  # unprivileged uid/gid of this instance
    gid: int
    limits: Limits
    tcp_port: int | None = None  # app listens on 127.0.0.1:PORT in its own netns instead;
    # the sandbox relays run_dir/app.sock to it
    grants: tuple[Destination, ...] = ()


class SandboxError(Exception):
    """A sandbox could not be made or used. ``reason`` says what failed and what to do."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Status:
    instance: str
    running: bool
    pid: int | None
    memory_bytes: int | None
    oom_killed: bool  # the memory limit killed something since start
    exit_code: int | None  # when not running
    refused: dict[str, int] = field(default_factory=dict)  # refused attempts by kind


def check_spec(spec: SandboxSpec) -> None:
    """Refuse a spec that could not run safely, with the reason (nothing is made)."""
    if not INSTANCE_RE.match(spec.instance):
        raise SandboxError(f"instance id {spec.instance!r} must match {INSTANCE_RE.pattern}")
    if not spec.argv or not all(isinstance(a, str) and "\0" not in a for a in spec.argv):
        raise SandboxError("argv must be a non-empty list of strings without NUL bytes")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SandboxError(f"environment variable {key!r}: a name without '=' or NUL, a value without NUL")
    if spec.uid < MIN_UID or spec.gid < MIN_UID:
        raise SandboxError(f"uid/gid {spec.uid}/{spec.gid}: an instance runs as an unprivileged id >= {MIN_UID}")
    lim = spec.limits
    if lim.memory_bytes < 4 << 20 or lim.cpu <= 0 or lim.pids < 4 or lim.nofile < 16:
        raise SandboxError(
            f"limits {lim}: memory >= 4 MiB, cpu > 0, pids >= 4 and nofile >= 16 are needed for any app"
        )
    if spec.tcp_port is not None and not 1 <= spec.tcp_port <= 65535:
        raise SandboxError(f"tcp_port {spec.tcp_port} is not a port (1-65535)")
    for d in spec.grants:
        check_destination(d)
    if not spec.app_dir.is_dir():
        raise SandboxError(f"the app's directory {spec.app_dir} does not exist")


def check_destination(d: Destination) -> None:
    if d.proto not in ("tcp", "udp") or not 1 <= d.port <= 65535:
        raise SandboxError(f"grant {d}: proto tcp or udp and a port 1-65535")
    if not isinstance(d.address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise SandboxError(f"grant {d}: the address must be resolved to one IP address")


def _system_binds() -> list[str]:
    """A read-only view of the system: /usr and /etc (minus the hub's own), merged-/usr links."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    args += ["--ro-bind", "/etc", "/etc"]
    for hidden in HIDDEN_ETC:
        if Path(hidden).exists():
            args += ["--tmpfs", hidden]
    return args


def _env(spec: SandboxSpec) -> dict[str, str]:
    env = dict(spec.env)
    env.update(
        PATH="/usr/local/bin:/usr/bin:/bin",
        HOME="/data",
        TETHER_SOCKET=SOCKET_IN_SANDBOX,
        TMPDIR="/tmp",
    )
    if spec.tcp_port is not None:
        env["PORT"] = str(spec.tcp_port)
    else:
        env.pop("PORT", None)
    return env


def bwrap_argv(spec: SandboxSpec, status_fd: int, seccomp_fd: int | None = None) -> list[str]:
    """The bubblewrap command line for ``spec`` (an argv list; the app's argv goes last, as is).

    bubblewrap runs as root without a user namespace, so it can bind directories whose
    parents the instance's uid may not traverse; inside, ``prlimit`` sets the app's rlimits
    (RLIMIT_NPROC holds once it is no longer root) and ``setpriv`` drops to the instance's
    uid and gid, clears the groups, the inheritable, ambient and bounding capability sets,
    and sets no_new_privs before it execs the app. The network namespace is the instance's
    own, entered before bubblewrap starts."""
    argv = [BWRAP, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--hostname", f"app-{spec.instance}", "--new-session"]
    argv += _system_binds()
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/run",
             "--bind", str(spec.run_dir), "/run/tether",
             "--ro-bind", str(spec.app_dir), "/app",
             "--bind", str(spec.data_dir), "/data",
             "--chdir", "/app", "--clearenv"]
    for key, value in sorted(_env(spec).items()):
        argv += ["--setenv", key, value]
    app = list(spec.argv)
    if spec.tcp_port is not None:
        app = [PYTHON, "-I", "-c", RELAY_SOURCE, "--", *app]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    lim = spec.limits
    argv += ["--json-status-fd", str(status_fd), "--",
             PRLIMIT, f"--nofile={lim.nofile}:{lim.nofile}", "--core=0:0", f"--nproc={lim.pids}:{lim.pids}", "--",
             SETPRIV, "--reuid", str(spec.uid), "--regid", str(spec.gid), "--clear-groups",
             "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs",
             "--", *app]
    return argv


def _prepare_dirs(spec: SandboxSpec) -> None:
    for d in (spec.data_dir, spec.run_dir):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chown(d, spec.uid, spec.gid)
        os.chmod(d, 0o700)
    try:
        (spec.run_dir / "app.sock").unlink()
    except FileNotFoundError:
        pass


def _grants_list(grants: Sequence[Destination]) -> list[dict]:
    return [{"proto": g.proto, "address": str(g.address), "port": g.port} for g in grants]


def _write(path: Path, text: str) -> None:
    """A state file, 0600 (the spec holds the app's environment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _spec_to_json(spec: SandboxSpec) -> str:
    d = dataclasses.asdict(spec)
    d.update(app_dir=str(spec.app_dir), data_dir=str(spec.data_dir), run_dir=str(spec.run_dir),
             env=dict(spec.env), argv=list(spec.argv),
             grants=_grants_list(spec.grants))
    return json.dumps(d)


def spec_from_json(text: str) -> SandboxSpec:
    d = json.loads(text)
    return SandboxSpec(
        instance=d["instance"], app_dir=Path(d["app_dir"]), data_dir=Path(d["data_dir"]),
        run_dir=Path(d["run_dir"]), argv=tuple(d["argv"]), env=d["env"], uid=d["uid"], gid=d["gid"],
        limits=Limits(**d["limits"]), tcp_port=d["tcp_port"],
        grants=tuple(Destination(g["proto"], ipaddress.ip_address(g["address"]), g["port"]) for g in d["grants"]),
    )


def _seccomp_fd() -> int | None:
    """A pipe's read end holding the seccomp filter (bwrap reads it to the end), or None
    where the filter does not apply (not x86-64)."""
    if not seccomp.supported():
        return None
    r, w = os.pipe()
    try:
        os.write(w, seccomp.program())
    finally:
        os.close(w)
    return r


def _write_id(files: Sequence[Path | bytes], ident: int) -> None:
    """Write a pid or tid to each cgroup file (plain system calls: also run in a forked child)."""
    text = str(ident).encode()
    for f in files:
        fd = os.open(f, os.O_WRONLY)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)


def _join(tasks_files: list[Path]) -> None:
    """Move the calling thread (alone: cgroup v1's ``tasks`` files take one thread) into
    the cgroups of these files."""
    _write_id(tasks_files, threading.get_native_id())


def _thread_cgroups(controllers: list[str]) -> list[Path]:
    """The ``tasks`` files of the calling thread's own v1 cgroups, one per controller."""
    own: dict[str, str] = {}
    for line in Path("/proc/thread-self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        own.update((n, path) for n in names.split(","))
    return [cgroups.CGROUP_FS / c / own.get(c, "/").lstrip("/") / "tasks" for c in controllers]


def _child_setup(procs_files: list[bytes], netns_fd: int):
    """cgroup v2 only (a thread cannot join a domain cgroup alone): what the forked child does
    before it execs bubblewrap, join the cgroups and the instance's network namespace. Only
    plain system calls: the hub has threads. (A preexec_fn makes subprocess fork instead of
    vfork: tens of ms in a hub of a few hundred MB.)"""
    setns = netns.setns_net

    def setup() -> None:
        setns(netns_fd)
        _write_id(procs_files, os.getpid())

    return setup


class Sandboxes:
    """The sandboxes of one hub process. ``root`` holds per-instance state; ``prefix``
    (1-4 lower-case characters) starts every OS name made (netns, veth, nft table, cgroup),
    so two hubs (or test runs) on one machine never touch each other's."""

    def __init__(self, root: Path, prefix: str = "tt", *, cgroup_parent: str | None = None,
                 pool4: str | None = None, pool6: str | None = None):
        """``pool4``/``pool6``: where the instances' link addresses come from (a /31 and a
        /127 each; routing only, never policy). By default derived from ``prefix``."""
        if not PREFIX_RE.match(prefix):
            raise SandboxError(f"prefix {prefix!r} must match {PREFIX_RE.pattern} (it starts interface names)")
        self.root = Path(root)
        self.prefix = prefix
        self.table = prefix  # nftables: table inet <prefix>
        d4, d6 = netns.default_pools(prefix)
        self.pool4 = ipaddress.IPv4Network(pool4) if pool4 else d4
        self.pool6 = ipaddress.IPv6Network(pool6) if pool6 else d6
        self._cgroup_parent = cgroup_parent
        self._layout: cgroups.Layout | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._host_addresses: list | None = None
        self._lock = threading.RLock()  # the host table, grant state
        self._cleanups: list[threading.Thread] = []

    # -- names ---------------------------------------------------------------------------
    def _name(self, instance: str) -> str:
        return f"{self.prefix}-{instance}"

    def _dir(self, instance: str) -> Path:
        return self.root / instance

    def log_path(self, instance: str) -> Path:
        """The app's stdout and stderr (appended across starts)."""
        return self._dir(instance) / "app.log"

    @property
    def layout(self) -> cgroups.Layout:
        if self._layout is None:
            try:
                self._layout = cgroups.Layout.detect(self._cgroup_parent)
            except cgroups.CgroupError as exc:
                raise SandboxError(str(exc)) from exc
        return self._layout

    # -- the interface -------------------------------------------------------------------
    def available(self) -> str | None:
        """None when sandboxes can run here, else why not (and what to install or change)."""
        if os.geteuid() != 0:
            return "sandboxes need the hub to run as root (namespaces, cgroups, nftables)"
        if not os.access(BWRAP, os.X_OK):
            return "bubblewrap is missing: install the Debian package 'bubblewrap'"
        try:
            self.layout
        except SandboxError as exc:
            return exc.reason
        for tool in (SETPRIV, PRLIMIT):
            if not os.access(tool, os.X_OK):
                return f"{tool} is missing: install the Debian package 'util-linux'"
        for tool, package in ((netpolicy.NFT, "nftables"), (netns.IP, "iproute2"), (CONNTRACK, "conntrack")):
            if not os.access(tool, os.X_OK):
                return f"{tool} is missing: install the Debian package '{package}'"
        return None

    def start(self, spec: SandboxSpec) -> Status:
        """Make the sandbox and start the app in it. On any failure everything made is
        removed and SandboxError says why."""
        check_spec(spec)
        why = self.available()
        if why:
            raise SandboxError(why)
        if self._status(spec.instance, counters=False).running:
            raise SandboxError(f"instance {spec.instance} is already running: stop it first")
        try:
            return self._start(spec)
        except BaseException:
            self._teardown(spec.instance, keep_state=True)
            raise

    def _start(self, spec: SandboxSpec) -> Status:
        d = self._dir(spec.instance)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
        _write(d / "spec.json", _spec_to_json(spec))
        _prepare_dirs(spec)
        name = self._name(spec.instance)
        link = self._network(spec)
        try:
            selftest.run(name, link, self._neighbours(link), self._host_addrs())
        except selftest.SelfTestFailed as exc:
            raise SandboxError(f"instance {spec.instance} not started: {exc}") from exc
        netpolicy.reset_counters(self.table, name)
        try:
            procs_files = self.layout.create(name, spec.limits.memory_bytes, spec.limits.cpu, spec.limits.pids)
        except (cgroups.CgroupError, OSError) as exc:
            raise SandboxError(f"cgroup for {spec.instance}: {exc}") from exc
        status_fd = os.open(d / "status.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        log_fd = os.open(self.log_path(spec.instance), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        filter_fd = _seccomp_fd()
        ns_fd = None
        argv = bwrap_argv(spec, status_fd, seccomp_fd=filter_fd)
        popen = dict(stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, cwd="/", start_new_session=True,
                     env={}, pass_fds=(status_fd,) + ((filter_fd,) if filter_fd is not None else ()))
        try:
            if self.layout.version == 1:
                # forked (vfork, no preexec_fn) by a thread that entered the instance's network
                # namespace and cgroups: the child starts in them; the thread ends after
                def spawn() -> subprocess.Popen:
                    back = _thread_cgroups(list(self.layout.bases))
                    try:
                        _join([f.with_name("tasks") for f in procs_files])
                        return subprocess.Popen(argv, **popen)
                    finally:
                        _join(back)  # out before it ends: never a hub thread in an instance's group

                proc = netns.run_in(name, spawn)
            else:
                ns_fd = netns.open_ns(name)
                proc = subprocess.Popen(argv, **popen,
                                        preexec_fn=_child_setup([str(f).encode() for f in procs_files], ns_fd))
        except (OSError, subprocess.SubprocessError) as exc:  # SubprocessError: the child's set-up failed
            raise SandboxError(f"cannot start bubblewrap: {exc}") from exc
        finally:
            for fd in (status_fd, log_fd, ns_fd, filter_fd):
                if fd is not None:
                    os.close(fd)
        self._procs[spec.instance] = proc
        _write(d / "pid", str(proc.pid))
        st = self._status(spec.instance, counters=False)
        st.refused = {k: 0 for k in netpolicy.KINDS}  # just zeroed, after the self-test
        return st

    def stop(self, instance: str, grace: float = 3.0) -> None:
        """SIGTERM every process of the instance, SIGKILL what is left after ``grace`` s."""
        name = self._name(instance)
        layout = self.layout
        if layout.pids(name):
            # The app's processes first: bubblewrap (root, pid 1 of the sandbox) ends by itself
            # once they have, and if it went first the kernel would SIGKILL them.
            for pid in layout.pids(name):
                try:
                    if os.stat(f"/proc/{pid}").st_uid != 0:
                        os.kill(pid, signal.SIGTERM)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            deadline = time.monotonic() + grace
            while layout.pids(name) and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                layout.kill(name)
            except cgroups.CgroupError as exc:
                raise SandboxError(str(exc)) from exc
        self._reap(instance)

    def remove(self, instance: str) -> None:
        """Stop the instance and delete everything made for it (cgroups, namespace, veth,
        nftables chain and sets, socket, state). The data directory is the service's to keep
        or delete. Idempotent."""
        if not INSTANCE_RE.match(instance):
            raise SandboxError(f"instance id {instance!r} must match {INSTANCE_RE.pattern}")
        self._teardown(instance, keep_state=False)

    def _teardown(self, instance: str, *, keep_state: bool) -> None:
        name = self._name(instance)
        try:
            self.layout.remove(name)
        except cgroups.CgroupError as exc:
            raise SandboxError(str(exc)) from exc
        self._reap(instance)
        self._unnetwork(instance)
        d = self._dir(instance)
        spec_file = d / "spec.json"
        if spec_file.exists():
            try:
                sock = spec_from_json(spec_file.read_text()).run_dir / "app.sock"
                sock.unlink(missing_ok=True)
            except (ValueError, KeyError, OSError):
                pass
        if not keep_state:
            shutil.rmtree(d, ignore_errors=True)

    def _reap(self, instance: str) -> None:
        proc = self._procs.get(instance)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def set_grants(self, instance: str, grants: Sequence[Destination]) -> None:
        """Replace the instance's granted destinations in one atomic nftables transaction.
        When it returns, a revoked destination's flows are cut: their next packet either way
        is refused (TCP with a reset); the host's conntrack entries for them are deleted
        right after, in the background."""
        if not INSTANCE_RE.match(instance):
            raise SandboxError(f"instance id {instance!r} must match {INSTANCE_RE.pattern}")
        new = list(dict.fromkeys(grants))
        for g in new:
            check_destination(g)
        link = self._link(instance)
        name = self._name(instance)
        if link is None or not netns.exists(name):
            raise SandboxError(f"instance {instance} has no network here: start it first")
        with self._lock:
            old, revoked = self._grant_state(instance)
            script, revoked, removed = netpolicy.plan(self.table, instance, old, revoked, new)
            if script:
                try:
                    netpolicy.run(script, name)
                except (netpolicy.PolicyError, OSError) as exc:
                    raise SandboxError(f"grants of {instance} unchanged: {exc}") from exc
            if len(revoked) > netpolicy.COMPACT_AFTER:
                try:
                    netpolicy.run(netpolicy.compact(self.table, instance, revoked), name)
                    revoked = []
                except (netpolicy.PolicyError, OSError):
                    pass  # still denied by the deny sets; compacted at the next start
            self._save_grants(instance, new, revoked)
        if removed:
            # The policy already refuses the revoked flows' every packet (in force now). The
            # host's conntrack entries are deleted just after, off the caller's path: the
            # conntrack tool walks the host's whole table (~50 ms at a few thousand flows).
            t = threading.Thread(target=self._end_flows, args=(link, removed), daemon=True,
                                 name=f"conntrack-{instance}")
            t.start()
            self._cleanups.append(t)
            self._cleanups = [c for c in self._cleanups if c.is_alive()]

    def _exit_code(self, instance: str) -> int | None:
        proc = self._procs.get(instance)
        if proc is not None and proc.poll() is None:
            return None
        code = None
        try:
            for line in (self._dir(instance) / "status.json").read_text().splitlines():
                try:
                    code = json.loads(line).get("exit-code", code)
                except ValueError:
                    continue
        except FileNotFoundError:
            pass
        if code is None and proc is not None and proc.returncode is not None:
            code = proc.returncode
        return code

    def status(self, instance: str) -> Status:
        return self._status(instance, counters=True)

    def _status(self, instance: str, *, counters: bool) -> Status:
        name = self._name(instance)
        layout = self.layout
        proc = self._procs.get(instance)
        if proc is not None:
            proc.poll()  # reap a finished bubblewrap (a zombie still counts in cgroup.procs)
        pids = layout.pids(name)
        pid = None
        try:
            pid = int((self._dir(instance) / "pid").read_text())
        except (FileNotFoundError, ValueError):
            pass
        running = bool(pids)
        if pid is not None and pid not in pids:
            pid = pids[0] if pids else None
        return Status(
            instance=instance,
            running=running,
            pid=pid if running else None,
            memory_bytes=layout.memory(name),
            oom_killed=layout.oom_kills(name) > 0,
            exit_code=None if running else self._exit_code(instance),
            refused=netpolicy.counters(self.table, name) if counters and netns.exists(name) else {},
        )

    def present(self) -> list[str]:
        """Instances found on the OS (state directories, cgroups), for adoption or cleanup."""
        found = set()
        if self.root.is_dir():
            found.update(p.name for p in self.root.iterdir() if p.is_dir() and INSTANCE_RE.match(p.name))
        start = len(self.prefix) + 1
        names = self.layout.names(self.prefix + "-") | netns.names(self.prefix + "-")
        found.update(n[start:] for n in names if INSTANCE_RE.match(n[start:]))
        return sorted(found)

    def adopt(self, spec: SandboxSpec) -> Status:
        """After a hub restart: take over a running instance (its cgroups, namespace and
        policy are re-checked and its grants re-applied). Raises if it is not running."""
        check_spec(spec)
        st = self.status(spec.instance)
        if not st.running:
            raise SandboxError(f"instance {spec.instance} is not running: start it instead")
        link = self._link(spec.instance)
        if link is None or not netns.exists(self._name(spec.instance)):
            raise SandboxError(f"instance {spec.instance} runs without its network namespace: remove it")
        _write(self._dir(spec.instance) / "spec.json", _spec_to_json(spec))
        self._policy(spec.instance, link, spec.grants, fresh=False)
        return self.status(spec.instance)

    # -- networking ----------------------------------------------------------------------
    def _ensure_base(self, *, replace: bool = False) -> None:
        """Make the host's static table when it is missing (checked at every start, so one
        removed by another hub process of this prefix, or by hand, is back before an
        instance runs); ``replace`` remakes it whole."""
        if not replace and netpolicy.has_table(self.table):
            return
        try:
            netpolicy.run(netpolicy.host_table(self.table, self.prefix, self.pool4, self.pool6))
        except netpolicy.PolicyError as exc:
            raise SandboxError(f"the sandboxes' nftables table on the host: {exc}") from exc

    def _link(self, instance: str) -> netns.Link | None:
        try:
            index = json.loads((self._dir(instance) / "net.json").read_text())["index"]
        except (FileNotFoundError, ValueError, KeyError):
            return None
        return netns.Link.at(index, self.pool4, self.pool6)

    def _grant_state(self, instance: str) -> tuple[list[Destination], list[Destination]]:
        """(granted, revoked but still in the deny sets)."""
        try:
            data = json.loads((self._dir(instance) / "grants.json").read_text())
        except (FileNotFoundError, ValueError):
            return [], []

        def load(items):
            return [Destination(g["proto"], ipaddress.ip_address(g["address"]), g["port"]) for g in items]

        return load(data.get("grants", [])), load(data.get("revoked", []))

    def _save_grants(self, instance: str, grants: Sequence[Destination], revoked: Sequence[Destination]) -> None:
        _write(self._dir(instance) / "grants.json",
               json.dumps({"grants": _grants_list(grants), "revoked": _grants_list(revoked)}))

    def _allocate(self, instance: str) -> netns.Link:
        """The lowest link index no other instance of this root holds (under a lock)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            mine = self._link(instance)
            if mine is not None:
                return mine
            used = set()
            for p in self.root.glob("*/net.json"):
                try:
                    used.add(json.loads(p.read_text())["index"])
                except (ValueError, KeyError, OSError):
                    continue
            index = next(i for i in range(len(used) + 1) if i not in used)
            link = netns.Link.at(index, self.pool4, self.pool6)
            _write(self._dir(instance) / "net.json", json.dumps({"index": index}))
            return link

    def _policy(self, instance: str, link: netns.Link, grants: Sequence[Destination], *, fresh: bool) -> None:
        """The instance's whole table, in its namespace (``fresh``: just made, else the
        older table is replaced in the same transaction)."""
        self._ensure_base(replace=not fresh)
        script = netpolicy.instance_table(self.table, instance, link, self._host_addrs(),
                                          self.pool4, self.pool6, grants, fresh=fresh)
        try:
            netpolicy.run(script, self._name(instance))
        except (netpolicy.PolicyError, OSError) as exc:
            raise SandboxError(f"the network policy of {instance}: {exc}") from exc
        self._save_grants(instance, grants, [])

    def _network(self, spec: SandboxSpec) -> netns.Link:
        """Namespace, veth and policy (default deny plus spec.grants) for a starting instance.
        Nothing runs in the namespace before its policy is in place."""
        name = self._name(spec.instance)
        link = self._allocate(spec.instance)
        with self._lock:  # the host's table is not removed under a starting instance
            try:
                netns.remove(name)
                netns.create(name, link)
            except (netns.NetError, OSError) as exc:
                raise SandboxError(f"the network namespace of {spec.instance}: {exc}") from exc
            self._policy(spec.instance, link, spec.grants, fresh=True)
        return link

    def _unnetwork(self, instance: str) -> None:
        """Delete the namespace (its table goes with it) and the veth, end its flows; the
        host's table goes when no instance of this prefix is left."""
        name = self._name(instance)
        link = self._link(instance)
        try:
            netns.remove(name)
        except (netns.NetError, OSError) as exc:
            raise SandboxError(f"the network namespace of {instance} could not be removed: {exc}") from exc
        if link is not None:
            self._end_flows(link, None)
        with self._lock:
            if netns.names(self.prefix + "-"):
                return
            try:
                netpolicy.delete_table(self.table)
            except netpolicy.PolicyError as exc:
                raise SandboxError(f"could not remove the host's nftables table {self.table}: {exc}") from exc
    
    def _end_flows(self, link: netns.Link, gone: Sequence[Destination] | None) -> None:
        """Delete the conntrack entries of the instance's flows to ``gone`` (None: all)."""
        calls = []
        if gone is None:
            calls = [["-s", str(link.inst4)], ["-f", "ipv6", "-s", str(link.inst6)]]
        for g in gone or ():
            src = link.inst4 if g.address.version == 4 else link.inst6
            fam = ["-f", "ipv6"] if g.address.version == 6 else []
            calls.append([*fam, "-s", str(src), "-d", str(g.address), "-p", g.proto, "--dport", str(g.port)])
        for args in calls:
            subprocess.run([CONNTRACK, "-D", *args], capture_output=True)  # 1 = nothing to delete

    def _neighbours(self, link: netns.Link) -> list:
        """Another instance's addresses (the next link of the pool), for the self-test."""
        other = netns.Link.at(link.index + 1 if link.index == 0 else link.index - 1, self.pool4, self.pool6)
        return [other.inst4, other.inst6]

    def _host_addrs(self) -> list:
        """The host's own global addresses (not the sandboxes' links), for the self-test."""
        if self._host_addresses is None:
            res = subprocess.run([netns.IP, "-j", "addr", "show", "scope", "global"], capture_output=True, text=True)
            found = []
            try:
                for dev in json.loads(res.stdout or "[]"):
                    if dev.get("ifname", "").startswith(self.prefix + "-"):
                        continue
                    for a in dev.get("addr_info", []):
                        found.append(ipaddress.ip_address(a["local"]))
            except (ValueError, KeyError):
                pass
            self._host_addresses = found[:4]
        return self._host_addresses

    def run_once(self, spec: SandboxSpec, timeout: float) -> subprocess.CompletedProcess:
        """Run spec.argv to completion in the same kind of sandbox (for --install); the
        sandbox is removed after. Output is captured; a timeout kills it and raises."""
        log = self.log_path(spec.instance)
        offset = log.stat().st_size if log.exists() else 0
        self.start(spec)
        try:
            deadline = time.monotonic() + timeout
            while self.status(spec.instance).running:
                if time.monotonic() > deadline:
                    raise SandboxError(f"{list(spec.argv)} did not finish within {timeout} s: killed")
                time.sleep(0.01)
            code = self._exit_code(spec.instance)
            out = log.read_bytes()[offset:]
            return subprocess.CompletedProcess(list(spec.argv), code if code is not None else -1, out, b"")
        finally:
            self.remove(spec.instance)
