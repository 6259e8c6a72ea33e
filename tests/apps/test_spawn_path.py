"""How a sandbox's bubblewrap is started (issue 17's spawn path): forked without a preexec_fn
by a thread that entered the instance's network namespace and (cgroup v1) its cgroups, and
left them before it ended; the rlimits set inside by prlimit. What a user relies on: the app
runs in its namespace, cgroups and limits from its first instruction, and the hub itself is
never in an instance's cgroup (a kill of the instance would kill the hub) nor its namespace."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.apps.conftest import wait_until


def own_cgroups(pid: int | str = "self") -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def limits(pid: int) -> dict[str, tuple[str, str]]:
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        parts = line.rsplit(None, 3)
        out[parts[0].strip()] = (parts[1], parts[2])
    return out


def test_the_app_starts_inside_and_the_hub_stays_outside(sandboxes, make_spec):
    hub_groups, hub_threads = own_cgroups(), {t.native_id for t in threading.enumerate()}
    hub_net = os.readlink("/proc/self/ns/net")
    spec = make_spec("path1", ["sleep", "60"])
    st = sandboxes.start(spec)
    name = f"{sandboxes.prefix}-path1"
    # the hub: same cgroups, same namespace, no thread left behind, never in the instance's group
    assert own_cgroups() == hub_groups and os.readlink("/proc/self/ns/net") == hub_net
    assert {t.native_id for t in threading.enumerate()} <= hub_threads | {threading.get_native_id()}
    assert os.getpid() not in sandboxes.layout.pids(name)
    for tid in os.listdir("/proc/self/task"):
        assert f"/{name}" not in own_cgroups(f"self/task/{tid}")
    # the app (and bubblewrap, its parent): in the instance's cgroups and namespace, with its limits
    app = wait_until(lambda: next((p for p in sandboxes.layout.pids(name)
                                   if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")), None),
                     what="the app to run")
    ns = os.readlink(f"/proc/{app}/ns/net")
    assert ns != hub_net and os.stat(f"/run/netns/{name}").st_ino == int(ns.split("[")[1].rstrip("]"))
    groups = own_cgroups(app)
    if sandboxes.layout.version == 1:
        for ctl in sandboxes.layout.bases:
            (line,) = [ln for ln in groups.splitlines() if ctl in ln.split(":")[1].split(",")]
            assert line.endswith(f"/{name}"), (ctl, line)
    else:
        assert f"/{name}" in groups
    lim = limits(app)
    assert lim["Max open files"] == ("1024", "1024") and lim["Max processes"] == ("64", "64")
    assert lim["Max core file size"] == ("0", "0")
    assert st.running
    sandboxes.remove("path1")
    assert sandboxes.layout.pids(name) == [] and own_cgroups() == hub_groups


def test_many_spawns_at_once_from_threads(sandboxes, make_spec):
    specs = [make_spec(f"par{i}", ["sleep", "60"]) for i in range(4)]
    errors: list[BaseException] = []

    def start(spec):
        try:
            sandboxes.start(spec)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for s in specs:
        name = f"{sandboxes.prefix}-{s.instance}"
        assert sandboxes.status(s.instance).running and os.getpid() not in sandboxes.layout.pids(name)
    for s in specs:
        sandboxes.remove(s.instance)


def test_the_cgroup_v2_child_set_up_joins_and_enters(tmp_path):
    """cgroup v2 keeps a preexec_fn (a thread cannot join a domain cgroup alone); this machine
    has v1, so its set-up is tried on stand-in files: the child writes its own pid to each
    (as to cgroup.procs) after entering the namespace it is given (here the host's own)."""
    import subprocess

    from tether.apps import sandbox

    files = [tmp_path / "a.procs", tmp_path / "b.procs"]
    for f in files:
        f.touch()
    ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        proc = subprocess.Popen(["/usr/bin/true"], preexec_fn=sandbox._child_setup([str(f).encode() for f in files], ns))
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(ns)
    assert [f.read_text() for f in files] == [str(proc.pid)] * 2
