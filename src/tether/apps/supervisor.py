"""What one hub replica does for apps: run the sandboxes of the instances it holds,
keep them as their rows say, and give the gateway a way to reach them.

Rows are the truth (:mod:`tether.apps.service`). An instance's row names the replica
holding its sandbox (``holder``: the gateway's internal address and a run id) and what
its user wants (``desired``). Every ``apps_sweep_seconds`` the holder:

- restarts a crashed instance after a backoff (1 s, 2 s, 4 s ... a minute);
- stops an instance idle longer than ``apps_idle`` (state ``idle``: the gateway starts
  it again on the next request, on whichever replica that request reaches);
- stops or removes instances that were stopped or removed through another replica;
- applies grant changes and expiries (one atomic nft transaction per instance), and
  saves the sandbox's counters of refused attempts.

After a restart the replica adopts the sandboxes a previous run of it left running,
and removes any sandbox no row wants: none is left orphaned.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from tether.apps import core, disk
from tether.apps.service import AppsService, Instance
from tether.db.models import Blob, BuildFile, Build, utcnow
from tether.gateway.core import GatewayAddress
from tether.problems import Problem
from tether.units import parse_duration

log = logging.getLogger("tether.apps")

APP_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
READY_TIMEOUT = 20.0
INSTALL_TIMEOUT = 600.0
#: one lock file per apps_prefix on this machine (whatever each hub's data directory)
PREFIX_LOCKS = Path("/run/tether/apps-prefix")
_held: dict[str, int] = {}  # prefix -> the open lock file this process holds, until it exits
_held_lock = threading.Lock()


def hold_prefix(prefix: str, where: Path = PREFIX_LOCKS) -> str | None:
    """Take ``prefix`` for this process on this machine: None once held (an flock kept for
    the process's life; the kernel drops it when the process ends, however it ends), else
    why not. Sandboxes are named by prefix and instance number, so two hubs with one
    prefix would stop, remove and restart each other's sandboxes."""
    with _held_lock:
        if prefix in _held:
            return None
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(where / f"{prefix}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            return (f"another hub process{pid} on this machine runs its sandboxes with apps_prefix {prefix!r}, "
                    "and sandboxes are named by that prefix: give each hub on one machine its own apps_prefix "
                    "(apps_prefix in hub.toml, or TETHER_APPS_PREFIX) and restart this one")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[prefix] = fd
        return None


class Unavailable(Problem):
    def __init__(self, reason: str):
        super().__init__(503, "apps-unavailable", f"apps cannot run on this hub: {reason}")


class AppsRuntime:
    def __init__(self, settings: Any, db: Any, store: Any, metrics: Any = None, sandboxes: Any = None):
        self.settings = settings
        self.db = db
        self.store = store
        self.metrics = metrics
        self.service = AppsService(settings, db)
        self.address = GatewayAddress(settings)
        self.root = Path(settings.apps_root or (settings.data_dir / "apps")).resolve()
        self.internal = settings.gateway_internal or settings.gateway_listen or ""
        self.holder = f"{self.internal}#{secrets.token_hex(4)}"
        self._sandboxes = sandboxes
        self.idle = parse_duration(settings.apps_idle) if settings.apps_idle else None
        self._counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        self._applied: dict[int, tuple] = {}  # grants last applied, per held instance id
        self._refused: dict[int, dict] = {}
        self._baseline: dict[int, dict] = {}  # counters at start: the self-test's own probes
        self._crashed_at: dict[int, float] = {}
        self._serving: set[int] = set()  # instances whose sandbox this run started or adopted, until stopped
        # one thread at a time acts on an instance's sandbox (the API's, the gateway's, the sweep's)
        self._locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._tree_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.adopted = threading.Event()  # set once what a previous run held is adopted or stopped

    # ------------------------------------------------------------------ the OS layer

    @property
    def sandboxes(self):
        if self._sandboxes is None:
            from tether.apps.sandbox import Sandboxes

            self._sandboxes = Sandboxes(self.root / "sandboxes", prefix=self.settings.apps_prefix)
        return self._sandboxes

    def unavailable(self) -> str | None:
        """None, or why this replica cannot run sandboxes (not root, no bwrap, its
        apps_prefix taken by another hub on this machine...)."""
        try:
            return self.sandboxes.available() or hold_prefix(self.settings.apps_prefix) or disk.missing()
        except Exception as exc:  # noqa: BLE001 - an OS layer that cannot even start says why
            return f"the sandbox layer failed to load: {exc}"

    def _dirs(self, inst: Instance) -> tuple[Path, Path]:
        data, run = self.root / "data" / inst.sandbox, self.root / "run" / inst.sandbox
        return data, run

    def _disk_image(self, inst: Instance) -> Path:
        return self.root / "disks" / f"{inst.sandbox}.img"

    def _replica_mark(self, address: str) -> Path:
        """A file each replica leaves in its apps_root: another replica that finds it there
        shares that apps_root (and so every instance's /data) with it."""
        return self.root / "replicas" / address.replace("/", "_")

    def _check_data_here(self, inst: Instance) -> None:
        """Refuse (409) to run or remove an instance whose /data is in another replica's
        apps_root, unless this replica shares it: it would see an empty /data, or leave it behind."""
        mark = self._replica_mark(self.internal)
        if self.internal and not mark.exists():
            _mkdir(mark.parent, 0o700)
            mark.touch(mode=0o600)
        if inst.data_at and inst.data_at != self.internal and not self._replica_mark(inst.data_at).exists():
            raise Problem(409, "data-elsewhere", f"{inst.app} of {inst.owner} keeps its /data in the apps_root of "
                          f"replica {inst.data_at}, which this replica does not share: use that replica "
                          "(through its API or its gateway), or share apps_root between the replicas "
                          "(docs/apps.md, Replicas)")

    def _spec(self, inst: Instance, app_dir: Path, grants: list[tuple[str, str, int]] | None = None):
        from tether.apps.sandbox import Destination, Limits, SandboxSpec

        data, run = self._dirs(inst)
        if grants is None:
            grants = self.service.destinations(inst.id)
        env = {**APP_ENV, "TETHER_APP": inst.app, "TETHER_APP_VERSION": inst.version, "TETHER_USER": inst.owner}
        return SandboxSpec(
            instance=inst.sandbox, app_dir=app_dir, data_dir=data, run_dir=run, argv=inst.argv, env=env,
            uid=inst.uid, gid=inst.uid,
            limits=Limits(memory_bytes=inst.limits.memory_bytes, cpu=inst.limits.cpu, pids=inst.limits.pids),
            tcp_port=inst.tcp_port, grants=tuple(Destination(p, ipaddress.ip_address(a), port) for p, a, port in grants))

    # ------------------------------------------------------------------ files

    def tree(self, inst: Instance) -> Path:
        """The app version's files on this machine, built once from the blob store (files
        read-only, owned by root); with ``--install``, its output at ``.install``. Named by
        the files' manifest (and the install command), so versions share what is the same."""
        name = inst.manifest
        if inst.install_argv:
            name += "-" + hashlib.sha256(json.dumps(list(inst.install_argv)).encode()).hexdigest()[:12]
        base = self.root / "trees"
        done = base / name
        with self._tree_locks[name]:
            if not done.exists():
                _mkdir(base, 0o711)
                staging = base / f".{name}.{secrets.token_hex(4)}"
                _mkdir(staging, 0o755)
                try:
                    self._materialize(inst, staging)
                    if inst.install_argv:
                        self._install(inst, staging)
                    os.rename(staging, done)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        return done

    def _materialize(self, inst: Instance, into: Path) -> None:
        from sqlalchemy import select

        with self.db.read() as s:
            build = s.get(Build, inst.build_id) if inst.build_id is not None else None
            if build is None:
                raise Problem(409, "app-files-gone", f"the build holding {inst.app} {inst.version}'s files is gone; "
                              "register the app again")
            rows = s.execute(select(BuildFile.path, BuildFile.digest, BuildFile.size, BuildFile.mode, Blob.pack,
                                    Blob.pack_offset).join(Blob, Blob.digest == BuildFile.digest, isouter=True)
                             .where(BuildFile.build == build.entries)).all()
        for path, digest, size, mode, pack, offset in rows:
            target = into / path
            if ".." in Path(path).parts or Path(path).is_absolute():
                continue  # publish never stores such a path; never follow one
            for parent in reversed(target.relative_to(into).parents[:-1]):
                _mkdir(into / parent, 0o755)
            blocks = (self.store.open_packed(digest, pack, offset, size, 0, size) if pack
                      else self.store.open_range(digest, 0, None))
            with open(target, "wb") as f:
                for block in blocks:
                    f.write(block)
            os.chmod(target, 0o755 if mode & 0o111 else 0o644)

    def _install(self, inst: Instance, tree: Path) -> None:
        """Run the version's ``--install`` once, in a sandbox whose network is only the
        version's grants; what it writes to /data is what instances see at /app/.install."""
        from dataclasses import replace

        from tether.apps.sandbox import SandboxError

        out = tree / ".install"
        _mkdir(out, 0o755)
        spec = replace(self._spec(inst, tree), instance=f"i{inst.sandbox[1:]}", argv=inst.install_argv,
                       data_dir=out, run_dir=self.root / "run" / f"i{inst.sandbox[1:]}")
        try:
            done = self.sandboxes.run_once(spec, timeout=INSTALL_TIMEOUT)
        except SandboxError as exc:
            raise Problem(409, "install-failed", f"--install of {inst.app} {inst.version} failed: {exc.reason}") from None
        finally:
            shutil.rmtree(spec.run_dir, ignore_errors=True)
        if done.returncode != 0:
            tail = (done.stdout or b"")[-400:].decode("utf-8", "replace").strip()
            raise Problem(409, "install-failed", f"--install of {inst.app} {inst.version} exited {done.returncode}"
                          f"{': ' + tail if tail else ''}; fix it and register a new version")
        # every instance's uid reads it, none writes it; symbolic links are neither followed nor changed
        for dirpath, dirnames, filenames in os.walk(out, followlinks=False):
            for name in [".", *dirnames, *filenames]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    continue
                os.chown(path, 0, 0, follow_symlinks=False)
                os.chmod(path, 0o755 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o644)

    # ------------------------------------------------------------------ start, stop, remove

    def start(self, inst: Instance, *, reason: str = "") -> None:
        """Start ``inst``'s sandbox here (the caller claimed it); the row says running (with
        ``reason``: why it was started again) or failed."""
        why = self.unavailable()
        if why:
            self.service.mark(inst.id, state="failed", holder=None, reason=f"apps cannot run on this hub: {why}")
            raise Unavailable(why)
        from tether.apps.sandbox import SandboxError

        try:
            tree = self.tree(inst)
            spec = self._spec(inst, tree)
            for d in (self.root, spec.data_dir.parent, spec.run_dir.parent):
                _mkdir(d, 0o711)  # the instance's uid passes through to its own directories only
            self._check_data_here(inst)
            self.sandboxes.remove(inst.sandbox)  # whatever an earlier run left
            if not disk.ensure(self._disk_image(inst), spec.data_dir, inst.limits.disk_bytes, inst.uid, inst.uid):
                log.warning("%s of %s keeps its /data from before disk limits: no --disk limit applies to it",
                            inst.app, inst.owner)
            try:
                self.sandboxes.start(spec)
                # the counters as the app starts: the self-test's own probes, not the app's attempts
                self._baseline[inst.id] = dict(self.sandboxes.status(inst.sandbox).refused or {})
                if inst.data_at != self.internal:
                    self.service.mark(inst.id, data_at=self.internal)
            except BaseException:  # /data is mounted: not until the next stop or rm
                self._undo_start(inst)
                raise
        except (SandboxError, disk.DiskError, OSError) as exc:  # OSError: a directory the sandbox cannot use
            why = getattr(exc, "reason", None) or str(exc)
            self.service.mark(inst.id, state="failed", holder=None, reason=why)
            raise Problem(503, "sandbox-failed", f"{inst.app} for {inst.owner} did not start: {why}") from None
        except Problem as p:  # not started: failed, or (its data is elsewhere) stopped here
            self.service.mark(inst.id, state="stopped" if p.slug == "data-elsewhere" else "failed", holder=None,
                              reason=p.detail)
            raise
        self._applied[inst.id] = tuple(sorted((d.proto, str(d.address), d.port) for d in spec.grants))
        self._serving.add(inst.id)
        self.service.mark(inst.id, state="running", holder=self.holder, started_at=utcnow(), reason=reason,
                          last_activity_at=utcnow())
        self._wait_ready(spec.run_dir / "app.sock")

    @staticmethod
    def _wait_ready(sock: Path, timeout: float = READY_TIMEOUT) -> bool:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(str(sock))
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self, inst: Instance, *, state: str = "stopped", reason: str = "") -> None:
        with self._locks[inst.id]:
            self._stop(inst, state=state, reason=reason)

    def _stop(self, inst: Instance, *, state: str, reason: str) -> None:
        self._serving.discard(inst.id)
        self._end_sandbox(inst)
        self._applied.pop(inst.id, None)
        self.service.mark(inst.id, state=state, holder=None, reason=reason)

    def _end_sandbox(self, inst: Instance) -> None:
        """Stop and remove the sandbox, then unmount its /data (the loop device goes with it)."""
        self.sandboxes.stop(inst.sandbox)
        self.sandboxes.remove(inst.sandbox)
        try:
            disk.unmount(self._dirs(inst)[0])
        except disk.DiskError as exc:  # still mounted: the next start uses it as it is
            log.warning("apps: %s of %s: %s", inst.app, inst.owner, exc.reason)

    def _undo_start(self, inst: Instance) -> None:
        """A start that failed after /data was mounted: end whatever of it runs and unmount,
        leaving the start's own error to be reported."""
        try:
            self._end_sandbox(inst)
        except Exception:  # noqa: BLE001 - the start's error is the one to report
            log.exception("apps: cleaning up the failed start of %s of %s", inst.app, inst.owner)

    def remove(self, inst: Instance) -> None:
        """Remove the sandbox and everything it had (data, socket directory), then the row."""
        with self._locks[inst.id]:
            self._remove(inst)

    def _remove(self, inst: Instance) -> None:
        self._check_data_here(inst)
        self._serving.discard(inst.id)
        if self.unavailable() is None:
            self.sandboxes.remove(inst.sandbox)
            self.log_path(inst).unlink(missing_ok=True)
        self._applied.pop(inst.id, None)
        data, run = self._dirs(inst)
        try:
            disk.release(self._disk_image(inst), data)
        except disk.DiskError as exc:
            raise Problem(503, "disk-busy", f"{exc.reason}; try `tether app rm` again shortly") from None
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
        self.service.remove_row(inst)

    def ensure_running(self, inst: Instance, *, states: tuple[str, ...] = ("starting", "idle", "stopped", "failed")
                       ) -> Instance:
        """Claim and start an instance no replica runs; the fresh row after."""
        with self._locks[inst.id]:
            inst = self.service.get(inst.id)
            if inst.holder is None and self.service.claim(inst, self.holder, states=states):
                self.start(self.service.get(inst.id))
        return self.service.get(inst.id)

    def apply_grants(self, inst: Instance) -> None:
        want = tuple(self.service.destinations(inst.id))
        if self._applied.get(inst.id) == want:
            return
        from tether.apps.sandbox import Destination

        self.sandboxes.set_grants(inst.sandbox, [Destination(p, ipaddress.ip_address(a), port) for p, a, port in want])
        self._applied[inst.id] = want

    def mine(self, inst: Instance) -> bool:
        return inst.holder == self.holder

    def serving(self, inst: Instance) -> bool:
        """Whether this run of the replica started (or adopted) ``inst``'s sandbox and has not stopped it."""
        return inst.id in self._serving

    def log_path(self, inst: Instance) -> Path:
        return self.sandboxes.log_path(inst.sandbox)

    def read_log(self, inst: Instance, offset: int, limit: int) -> tuple[bytes, int]:
        """The app's output from ``offset`` (up to ``limit`` bytes) and where the next read starts.
        Only the replica running the instance has it (a file of an earlier run here is stale)."""
        if inst.holder is not None and not self.mine(inst):
            raise Problem(409, "held-elsewhere", f"{inst.app} of {inst.owner} runs on another hub replica "
                          f"({inst.holder.partition('#')[0]}, its gateway), which keeps its output: ask that replica "
                          "(--hub its API's URL), or stop and start the instance through this one to run it here")
        try:
            with open(self.log_path(inst), "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if offset > size:  # the log started again (a restart truncates it): from its start
                    offset = 0
                f.seek(offset)
                data = f.read(limit)
        except FileNotFoundError:
            return b"", 0
        return data, offset + len(data)

    # ------------------------------------------------------------------ the gateway's counters

    def counter(self, inst: Instance) -> Callable[[int, int], None]:
        def count(up: int, down: int) -> None:
            c = self._counts[inst.id]
            c[0] += up
            c[1] += down

        return count

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Adopt what a previous run left, then keep the held instances as their rows say."""
        try:
            await asyncio.to_thread(self.adopt_all)
        except Exception:  # noqa: BLE001 - keep serving; say so
            log.exception("apps: adopting instances after a restart failed")
        finally:
            self.adopted.set()
        while True:
            await asyncio.sleep(self.settings.apps_sweep_seconds)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - keep serving; say so
                log.exception("apps: the sweep failed; will retry")

    def adopt_all(self) -> None:
        """After a hub restart: instances a previous run of this replica held are adopted
        (their sandbox still runs) or started again; sandboxes no row wants are removed."""
        if not self.internal:
            return
        why = self.unavailable()
        if why:
            log.error("apps: this hub runs no sandboxes: %s", why)
            return
        rows = {i.sandbox: i for i in self.service.held_by(self.internal)}
        present = set(self.sandboxes.present())
        for sandbox, inst in rows.items():
            if inst.desired in ("running",) and sandbox in present:
                try:
                    adopted = self.sandboxes.adopt(self._spec(inst, self.tree(inst)))
                    saved = self.service.info(inst)["refused"]  # the app's, as last saved
                    now_counts = adopted.refused or {}  # adopting rebuilds the table: usually zeros
                    self._baseline[inst.id] = {k: now_counts.get(k, 0) - saved.get(k, 0)
                                               for k in set(now_counts) | set(saved)}
                    self._refused[inst.id] = saved
                    self.service.mark(inst.id, holder=self.holder, state="running")
                    self._serving.add(inst.id)
                    self._applied.pop(inst.id, None)
                    self._audit("app.adopt", inst, "adopted after a hub restart")
                    continue
                except Exception as exc:  # noqa: BLE001 - not adoptable: start it cleanly instead
                    log.warning("apps: cannot adopt %s: %s; starting it again", sandbox, exc)
            self.sandboxes.remove(sandbox)
            if inst.desired == "running":
                self.service.mark(inst.id, holder=None, state="starting")
                try:
                    self.ensure_running(self.service.get(inst.id), states=("starting",))
                    self._audit("app.adopt", inst, "started again after a hub restart")
                except Problem as p:
                    log.warning("apps: %s did not start again: %s", sandbox, p.detail)
            else:
                self.service.mark(inst.id, holder=None, state="stopped" if inst.desired != "idle" else "idle")
        known = self._known_sandboxes()
        for sandbox in present - set(rows):
            if sandbox not in known:  # no row at all: an orphan (a row is made before any sandbox)
                log.info("apps: removing orphaned sandbox %s", sandbox)
                self.sandboxes.remove(sandbox)

    def _known_sandboxes(self) -> set[str]:
        from sqlalchemy import select

        from tether.db.models import AppInstance

        with self.db.read() as s:
            return {core.instance_id(i) for i in s.scalars(select(AppInstance.id)).all()}

    async def sweep(self) -> None:
        counts, self._counts = self._counts, defaultdict(lambda: [0, 0])
        if counts:
            await asyncio.to_thread(self.service.touch, {k: (v[0], v[1]) for k, v in counts.items()})
        await asyncio.to_thread(self.service.expire_grants)
        if not self.internal or await asyncio.to_thread(self.unavailable):
            return  # never touch sandboxes this hub may not run (another hub's, of the same apps_prefix)
        for inst in await asyncio.to_thread(self.service.held_by, self.internal):
            if not self.mine(inst):
                continue
            try:
                await asyncio.to_thread(self._keep_unless_busy, inst)
            except Problem as p:
                log.warning("apps: %s of %s: %s", inst.app, inst.owner, p.detail)
            except Exception:  # noqa: BLE001 - one instance's failure must not stop the others
                log.exception("apps: keeping %s of %s failed", inst.app, inst.owner)

    def _keep_unless_busy(self, inst: Instance) -> None:
        lock = self._locks[inst.id]
        if not lock.acquire(blocking=False):
            return  # another thread is starting or stopping it: next sweep
        try:
            inst = self.service.get(inst.id)
            if self.mine(inst):
                self.keep(inst)
        except Problem as p:
            if p.status != 404:  # removed meanwhile
                raise
        finally:
            lock.release()

    def keep(self, inst: Instance) -> None:
        """One instance this replica holds, made to match its row."""
        if inst.desired == "removed":
            self._remove(inst)
            self._audit("app.rm", inst, "removed (asked through another replica)")
            return
        if inst.desired == "stopped":
            self._stop(inst, state="stopped", reason="stopped")
            return
        now = utcnow()
        if self.idle is not None and inst.state == "running" and now - inst.last_activity_at > self.idle:
            self._stop(inst, state="idle", reason=f"no traffic for {self.settings.apps_idle}; the next request "
                      "starts it again")
            self._audit("app.idle-stop", inst, "stopped while idle")
            return
        status = self.sandboxes.status(inst.sandbox)
        base = self._baseline.get(inst.id, {})
        counts = status.refused or {}
        refused = {k: counts.get(k, 0) - base.get(k, 0) for k in set(counts) | set(base)
                   if counts.get(k, 0) - base.get(k, 0) > 0}
        if refused != self._refused.get(inst.id, {}):
            self._refused[inst.id] = refused
            self.service.mark(inst.id, refused=refused)
        if status.running:
            self.apply_grants(inst)
            if inst.failures and inst.started_at and now - inst.started_at > timedelta(seconds=core.STABLE_SECONDS):
                self.service.mark(inst.id, failures=0)
            return
        # it died: restart it after a backoff
        failures = inst.failures + (1 if inst.id not in self._crashed_at else 0)
        first = self._crashed_at.setdefault(inst.id, time.monotonic())
        why = core.exit_reason(status.exit_code, status.oom_killed)
        if inst.id in self._crashed_at and failures != inst.failures:
            self.service.mark(inst.id, state="failed", failures=failures, reason=f"crashed: it {why}; restarting",
                              oom_kills=_add_oom(self, inst, status))
            self._audit("app.crash", inst, f"crashed: it {why}")
        if time.monotonic() - first < core.restart_delay(failures):
            return
        del self._crashed_at[inst.id]
        self.start(inst, reason=f"restarted after it {why} (failure {failures} in a row)")
        from sqlalchemy import update

        from tether.db.models import AppInstance

        with self.db.write() as s:
            s.execute(update(AppInstance).where(AppInstance.id == inst.id).values(restarts=AppInstance.restarts + 1))
        self._audit("app.restart", inst, f"restarted after it {why} (failure {failures} in a row)")

    def _audit(self, action: str, inst: Instance, reason: str, *, user: str | None = None, status: int = 200) -> None:
        from tether.auth import audit

        try:
            audit.record(self.db, at=utcnow(), user=user, token_id=None, action=action,
                         resource=f"app:{inst.space}/{inst.app} instance of {inst.owner}", source=None,
                         outcome="allowed" if status < 400 else "denied", status=status, reason=reason[:500])
        except Exception:  # noqa: BLE001 - auditing must not stop the supervisor; say so
            log.exception("could not write an audit record")


def _mkdir(path: Path, mode: int) -> None:
    """A directory with exactly ``mode`` (the hub's umask would narrow mkdir's)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)


def _add_oom(runtime: AppsRuntime, inst: Instance, status) -> int:
    from tether.db.models import AppInstance

    with runtime.db.read() as s:
        row = s.get(AppInstance, inst.id)
        return (row.oom_kills if row else 0) + (1 if status.oom_killed else 0)
