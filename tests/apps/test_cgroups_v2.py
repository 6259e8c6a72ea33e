"""cgroup v2 in tether.apps.cgroups, for real where this machine allows it.

This machine has cgroup v1 controllers (memory, cpu, pids, freezer) and a v2 hierarchy at
/sys/fs/cgroup/unified whose only available controller is hugetlb, so the hub runs its
sandboxes on v1. What v2 needs no controller for is exercised on the real v2 mount: a group
made under a parent group the test makes, a process moved in (before it execs, as the
sandbox does), ``cgroup.events`` read (populated), the whole group killed through
``cgroup.kill`` (children included) and the group removed. ``Layout.create`` on the real mount
is refused with the file and the reason, leaving nothing behind.

The limit files (memory.max, cpu.max, pids.max) need the memory, cpu and pids controllers,
which the real v2 mount lacks here: they are tested against a directory tree the test builds
(plain files where the kernel's would be), which shows what is written where, not that the
kernel enforces it (the v1 tests in test_sandbox.py show the limits holding).

Every group is named with this branch's prefix and the test's pid, and removed even when a
test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tether.apps import cgroups
from tether.apps.cgroups import CgroupError, Layout
from tests.apps.conftest import PREFIX, wait_until

V2 = Path("/sys/fs/cgroup/unified")


@pytest.fixture
def v2_parent():
    """A parent group of the test's own under the real v2 mount; removed (with anything left
    in it, processes killed) at the end."""
    if not (V2 / "cgroup.controllers").exists():
        pytest.skip("no cgroup v2 hierarchy at /sys/fs/cgroup/unified on this machine")
    parent = V2 / f"{PREFIX}v2-{os.getpid()}"
    parent.mkdir()
    try:
        yield parent
    finally:
        for d in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [parent]:
            if (d / "cgroup.kill").exists():
                (d / "cgroup.kill").write_text("1")
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        assert not parent.exists(), f"left {parent} behind"


def start_in(group: Path, argv: list[str]) -> subprocess.Popen:
    """Start ``argv`` inside ``group``: the child joins it before it execs (as the sandbox's does)."""
    procs = str(group / "cgroup.procs")

    def join() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return subprocess.Popen(argv, preexec_fn=join)


def test_a_group_on_the_real_v2_mount_is_made_populated_killed_and_removed(v2_parent):
    layout = Layout(2, {"unified": v2_parent})
    name = f"{PREFIX}-g1"
    (v2_parent / name).mkdir()  # what create() makes, without the limits the missing controllers would take
    assert layout.names(f"{PREFIX}-") == {name}
    assert layout.events(name) == {"populated": 0, "frozen": 0}
    # a shell with two children of its own, all in the group: the whole tree is the app
    proc = start_in(v2_parent / name, ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        pids = wait_until(lambda: len(layout.pids(name)) == 3 and layout.pids(name), what="three processes")
        assert proc.pid in pids
        assert layout.events(name)["populated"] == 1
        assert layout.memory(name) is None and layout.oom_kills(name) == 0  # no memory controller here
        layout.kill(name)  # cgroup.kill: every process of the group at once
        assert layout.pids(name) == [] and layout.events(name)["populated"] == 0
        assert proc.wait(5) == -signal.SIGKILL
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        layout.remove(name)
        assert not (v2_parent / name).exists() and layout.names(f"{PREFIX}-") == set()
        assert layout.events(name) == {}  # gone
        layout.remove(name)  # removing what is gone is nothing
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_remove_kills_what_is_left_in_a_real_v2_group(v2_parent):
    layout = Layout(2, {"unified": v2_parent})
    name = f"{PREFIX}-g2"
    (v2_parent / name).mkdir()
    proc = start_in(v2_parent / name, ["sleep", "60"])
    try:
        wait_until(lambda: layout.pids(name), what="the process in the group")
        layout.remove(name)
        assert proc.wait(5) == -signal.SIGKILL and not (v2_parent / name).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_create_on_the_real_v2_mount_says_which_controller_file_refused_and_makes_nothing(v2_parent):
    available = set((V2 / "cgroup.controllers").read_text().split())
    if {"memory", "cpu", "pids"} <= available:
        pytest.skip("this machine's v2 mount has the controllers: the sandbox tests run on it")
    layout = Layout(2, {"unified": v2_parent})
    with pytest.raises(CgroupError) as err:
        layout.create(f"{PREFIX}-g3", 64 << 20, 0.5, 64)
    assert "cgroup.subtree_control" in str(err.value) and "delegated" in str(err.value)
    assert list(p for p in v2_parent.iterdir() if p.is_dir()) == []


def test_the_hub_uses_v1_here_because_v2_lacks_the_controllers():
    """Layout.detect reads the real mounts: v2 only when its unified hierarchy has memory, cpu and pids."""
    available = set((V2 / "cgroup.controllers").read_text().split()) if (V2 / "cgroup.controllers").exists() else set()
    layout = Layout.detect()
    if {"memory", "cpu", "pids"} <= available:
        assert layout.version == 2
    else:
        assert layout.version == 1 and set(layout.bases) == {"memory", "cpu", "pids", "freezer"}


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    """A directory tree shaped like a v2 mount whose root offers memory, cpu and pids (plain files,
    built by the test: the kernel's limit files cannot be had here)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    hub = root / "hub.service"
    hub.mkdir()
    (hub / "cgroup.subtree_control").write_text("")
    monkeypatch.setattr(cgroups, "CGROUP_FS", root)
    return hub


def test_detect_picks_v2_when_its_root_has_the_controllers(fake_v2):
    layout = Layout.detect(parent="/hub.service")
    assert layout.version == 2 and layout.bases == {"unified": fake_v2}


def test_create_writes_each_limit_to_its_v2_file(fake_v2):
    """Against the built tree: which file gets which value (memory in bytes, the CPU quota over a
    100 ms period, the process count), and the controllers enabled for the groups below."""
    layout = Layout(2, {"unified": fake_v2})
    procs = layout.create("tcp-x", 128 << 20, 0.25, 64)
    group = fake_v2 / "tcp-x"
    assert procs == [group / "cgroup.procs"]
    assert (fake_v2 / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (group / "memory.max").read_text() == str(128 << 20)
    assert (group / "cpu.max").read_text() == "25000 100000"
    assert (group / "pids.max").read_text() == "64"
    assert not (group / "memory.swap.max").exists()  # written only where the kernel offers swap accounting
    # a tiny CPU share still gets the kernel's smallest quota, never 0 (which would mean "none")
    layout = Layout(2, {"unified": fake_v2})
    for f in group.iterdir():
        f.unlink()
    group.rmdir()
    layout.create("tcp-x", 64 << 20, 0.001, 8)
    assert (group / "cpu.max").read_text() == "1000 100000"


def test_create_with_controllers_enabled_already_writes_no_subtree_control(fake_v2):
    (fake_v2 / "cgroup.subtree_control").write_text("cpu memory pids\n")
    Layout(2, {"unified": fake_v2}).create("tcp-y", 64 << 20, 1, 16)
    assert (fake_v2 / "cgroup.subtree_control").read_text() == "cpu memory pids\n"
    assert (fake_v2 / "tcp-y" / "cpu.max").read_text() == "100000 100000"
