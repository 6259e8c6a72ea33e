"""Per-instance cgroups: memory (swap off), CPU quota, process count; v2 or v1.

The machine decides: cgroup v2 when its unified hierarchy has the memory, cpu and pids
controllers, v1 otherwise (v1 also needs the freezer, so a kill can stop a fork bomb
between two reads of the process list). Each instance's group is made under the cgroup
of the process that makes it (the hub's own, or a delegated one given as ``parent``), so
the instances stay inside whatever limits the hub itself runs under.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000


class CgroupError(Exception):
    """A cgroup could not be made or configured; the message says which file and why."""


def _own_path(controller: str | None) -> str:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (None: v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller is None and names == "":
            return path
        if controller is not None and controller in names.split(","):
            return path
    return "/"


def _v2_mount() -> Path | None:
    for candidate in (CGROUP_FS, CGROUP_FS / "unified"):
        ctl = candidate / "cgroup.controllers"
        if ctl.exists() and set(V2_CONTROLLERS) <= set(ctl.read_text().split()):
            return candidate
    return None


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class Layout:
    """Where the groups of one set of sandboxes live: version and directory per controller."""

    version: int
    bases: dict[str, Path]  # controller (or "unified") -> parent directory of the groups

    @classmethod
    def detect(cls, parent: str | None = None) -> "Layout":
        """Find the hierarchy to use; ``parent`` overrides the hub's own cgroup path."""
        v2 = _v2_mount()
        if v2 is not None:
            rel = (parent or _own_path(None)).lstrip("/")
            return cls(2, {"unified": v2 / rel})
        bases: dict[str, Path] = {}
        for ctl in V1_CONTROLLERS:
            mount = CGROUP_FS / ctl
            if not (mount / "cgroup.procs").exists():
                raise CgroupError(
                    f"no cgroup v1 '{ctl}' controller at {mount} and no cgroup v2 with memory, cpu "
                    "and pids: mount one of them (or run the hub under systemd with Delegate=yes)"
                )
            bases[ctl] = mount / (parent or _own_path(ctl)).lstrip("/")
        return cls(1, bases)

    def dirs(self, name: str) -> list[Path]:
        return [base / name for base in self.bases.values()]

    def names(self, prefix: str) -> set[str]:
        """Names of the groups present that start with ``prefix``."""
        found: set[str] = set()
        for base in self.bases.values():
            try:
                found.update(p.name for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix))
            except FileNotFoundError:
                pass
        return found

    def _dir(self, name: str, controller: str) -> Path:
        return self.bases["unified" if self.version == 2 else controller] / name

    def create(self, name: str, memory_bytes: int, cpu: float, pids: int) -> list[Path]:
        """Make the group ``name`` (fresh: any old one is removed first) with its limits.
        Returns the ``cgroup.procs`` files a new process writes its pid to, to join."""
        self.remove(name)
        quota = max(1000, int(cpu * CPU_PERIOD_US))
        if self.version == 2:
            base = self.bases["unified"]
            try:
                enabled = set((base / "cgroup.subtree_control").read_text().split())
                missing = [c for c in V2_CONTROLLERS if c not in enabled]
                if missing:
                    _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
            except CgroupError as exc:
                raise CgroupError(
                    f"{exc}; the hub's cgroup must be a delegated one without processes of its own"
                ) from exc
            d = base / name
            d.mkdir()
            _write(d / "memory.max", str(memory_bytes))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            _write(d / "pids.max", str(pids))
            return [d / "cgroup.procs"]
        for d in self.dirs(name):
            d.mkdir(parents=False)
        mem = self._dir(name, "memory")
        _write(mem / "memory.limit_in_bytes", str(memory_bytes))
        if (mem / "memory.memsw.limit_in_bytes").exists():
            _write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes))
        _write(mem / "memory.swappiness", "0")
        cpu_dir = self._dir(name, "cpu")
        _write(cpu_dir / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(cpu_dir / "cpu.cfs_quota_us", str(quota))
        _write(self._dir(name, "pids") / "pids.max", str(pids))
        return [d / "cgroup.procs" for d in self.dirs(name)]

    def pids(self, name: str) -> list[int]:
        """Processes in the group (empty when it is gone)."""
        try:
            text = (self._dir(name, "pids") / "cgroup.procs").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return []
        return [int(x) for x in text.split()]

    def events(self, name: str) -> dict[str, int]:
        """cgroup v2's ``cgroup.events`` of the group (``populated``: 1 while any process is in it
        or below; ``frozen``); empty on v1 or when the group is gone."""
        if self.version != 2:
            return {}
        try:
            text = (self._dir(name, "unified") / "cgroup.events").read_text()
        except FileNotFoundError:
            return {}
        return {key: int(value) for key, _, value in (line.partition(" ") for line in text.splitlines()) if value}

    def memory(self, name: str) -> int | None:
        f = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        try:
            return int((self._dir(name, "memory") / f).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def oom_kills(self, name: str) -> int:
        """How many processes the memory limit killed since the group was made."""
        f = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self._dir(name, "memory") / f).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except FileNotFoundError:
            pass
        return 0

    def kill(self, name: str, timeout: float = 5.0) -> None:
        """SIGKILL every process of the group, fork bombs included, and wait until it is empty."""
        deadline = time.monotonic() + timeout
        if self.version == 2:
            kill_file = self._dir(name, "unified") / "cgroup.kill"
            if kill_file.exists() and self.pids(name):
                _write(kill_file, "1")
        else:
            freezer = self._dir(name, "freezer") / "freezer.state"
            if freezer.exists() and self.pids(name):
                _write(freezer, "FROZEN")
        while True:
            pids = self.pids(name)
            if not pids and not self.events(name).get("populated"):  # v2: exiting tasks count until reaped
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.version == 1:
                freezer = self._dir(name, "freezer") / "freezer.state"
                if freezer.exists():
                    _write(freezer, "THAWED")  # killed processes die only once thawed
            if time.monotonic() > deadline:
                raise CgroupError(f"processes {pids} of cgroup {name} survived SIGKILL")
            time.sleep(0.005)

    def signal(self, name: str, sig: int) -> None:
        for pid in self.pids(name):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self, name: str) -> None:
        """Kill what is left and remove the group's directories; nothing if absent."""
        if not any(d.exists() for d in self.dirs(name)):
            return
        self.kill(name)
        for d in self.dirs(name):
            for attempt in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY while the last task is exiting
                    if exc.errno != errno.EBUSY or attempt == 199:
                        raise CgroupError(f"cannot remove {d}: {exc.strerror}") from exc
                    time.sleep(0.005)
