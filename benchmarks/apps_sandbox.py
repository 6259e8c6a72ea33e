"""Apps' sandboxes: spawn -> ready, and grant/revoke latency at 1,000 instances (issue 17).

Side by side in one run, as root, on this machine's real kernel:

* **fork/exec**: ``subprocess.Popen(["/usr/bin/true"]).wait()``, the floor of starting anything;
* **bare bwrap**: ``bwrap --unshare-all`` with the same read-only system binds running
  ``true`` to its end (a sandbox with no cgroup, no network namespace, no policy);
* **tether spawn -> ready**: ``Sandboxes.start()`` up to the moment it returns: state, a
  named network namespace and veth, the instance's nftables table, the in-namespace
  self-test, cgroups, and bubblewrap forked with the app's command (the app's own start is
  excluded: it is ``sleep``). Its parts are timed too.
* **tether spawn → ready with /data** (``--disk``, what a hub's spawn does): the instance's
  data filesystem made and mounted (first start: a sparse copy of the size's template) or
  mounted (later start), then ``Sandboxes.start()``.
* **/data with a disk limit** (``apps.disk``, in process: template copy, ``LOOP_CONFIGURE``,
  ``mount(2)``): first start, later start, stop; against a plain directory (the floor) and
  the way it was done before (``mkfs.ext4`` per image, ``mount -o loop``, ``umount``).
* **namespace + veth**: in process over netlink (``netns.create``) against the two
  ``ip -batch`` processes that made the same before.

Grant and revoke: N instances (10, 100, 1,000) each hold their nftables state (their own
network namespace with their table and 10 grants) **without a process or a veth each**:
the policy of an instance lives in its namespace, so this is all a grant touches. A grant
adds one destination to a random instance; a revoke takes it away (``set_grants``, whole,
including the host's conntrack clean-up) and, alone, the nftables transaction. Side by
side: the same change as ``nft -f`` run through ``nsenter`` (a subprocess per change), and
a revoke done by deleting the set element (what a plain set update costs the kernel).

Run from the repository root, as root::

    .venv/bin/python benchmarks/apps_sandbox.py                 # ~2 minutes
    .venv/bin/python benchmarks/apps_sandbox.py --quick         # 20 spawns, 10 and 100 instances
    .venv/bin/python benchmarks/apps_sandbox.py --write-docs    # also rewrite its section of docs/benchmarks.md

Everything it makes is named with the prefix ``tsbb`` and removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "src", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from tether.apps import cgroups, netns, netpolicy, selftest  # noqa: E402
from tether.apps import sandbox as sb  # noqa: E402

PREFIX = "tsbb"
SECTION = "## Apps sandboxes"
NOTES = """Notes, honestly:

- Goals: spawn → ready under 100 ms with the instance's /data mounted (a `docker run` is about
  300 ms) and grant/revoke under 10 ms at 1,000 instances. Read the wall-clock p90s against
  the load average above: on a busy 2-core machine they are the machine's run queue more than
  the work (the floor's p90 too); the CPU column is the work. A spawn hops between a few
  short-lived threads (one per namespace it enters), and each hop waits for a core. The later
  starts run right after the 50 removes, while the kernel still tears those namespaces down
  in the background (holding the rtnl lock that making a veth needs): their CPU is the first
  starts', their wall time is not.
- What a spawn does, all in the hub's process, with no helper process but bubblewrap:
  - /data: the image is a sparse copy (`FICLONE` where the filesystem has reflinks, else
    the data ranges only, chunks of zeros skipped) of an empty ext4 made once per disk size by
    `mkfs.ext4` (the template line above; it is in no spawn's time but the first of its size);
    the loop device comes from `LOOP_CTL_GET_FREE` and one `LOOP_CONFIGURE` (autoclear: it
    detaches when the filesystem is unmounted); then `mount(2)`. Its rows against the way it was
    done before (`mkfs.ext4` per image and util-linux's `mount -o loop`/`umount`) are the
    /data table. Images of one template share their filesystem UUID; nothing mounts them by it.
    A stop's wall time is the kernel's (the journal's last commit and write-back): the
    `umount` tool added CPU, not wall.
  - namespace + veth: a thread unshares its network namespace, binds it into /run/netns and
    makes the veth, addresses and routes over rtnetlink (pyroute2's message classes on a plain
    socket; pyroute2's IPRoute itself cost ~4x the CPU); against the two `ip -batch` processes
    of before in its own table.
  - bubblewrap is forked without a preexec_fn, so subprocess uses vfork: on cgroup v1 a thread
    joins the instance's namespace and cgroups alone and forks; the rlimits are set inside by
    `prlimit` before `setpriv`. A preexec_fn forces a full fork, whose cost grows with the
    hub's memory: the fork+exec table shows it from a process with 256 MiB touched (a hub's
    size; this benchmark's own process is small, so its spawn rows do not show it). On cgroup
    v2 a thread cannot join a domain cgroup alone: there the preexec_fn stays.
- Grant and revoke do not grow with the number of instances: an instance's sets live in its
  own namespace, so a change touches one small table, in process (Debian's libnftables
  binding, in a thread that entered the namespace). The baselines show what a subprocess
  per change (`nsenter nft -f`) costs, and what deleting a set element costs (the kernel
  waits for an RCU grace period), which is why a revoke *adds* the destination to the
  instance's deny set instead (compacted later, rebuilt at each start).
- A revoke's time is the policy's: it is in force when `set_grants` returns. The host's
  conntrack entries of the revoked flows are deleted just after, in the background (the
  `conntrack` tool walks the whole table: ~50-60 ms at ~4,000 flows here).
- Remove is dominated by the kernel tearing the namespace down and by the conntrack walk;
  it is off any request's path.
"""


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ms(v):
    return f"{v * 1000:.1f}"


def cpu_now() -> float:
    """CPU seconds of this process (all its threads) and of its waited-for children."""
    import resource

    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def timed(fn, wall: list, cpu: list):
    c, t = cpu_now(), time.perf_counter()
    try:
        return fn()
    finally:
        wall.append(time.perf_counter() - t)
        cpu.append(cpu_now() - c)


def bench_fork_exec(n):
    out, cpu = [], []
    for _ in range(n):
        timed(lambda: subprocess.Popen(["/usr/bin/true"]).wait(), out, cpu)
    return out, cpu


def bench_bare_bwrap(n):
    argv = [sb.BWRAP, "--unshare-all", *sb._system_binds(), "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--", "/usr/bin/true"]
    out, cpu = [], []
    for _ in range(n):
        timed(lambda: subprocess.run(argv, check=True), out, cpu)
    return out, cpu


def bench_preexec(n, heap_mb=256):
    """Starting a process from a hub-sized one (``heap_mb`` MiB touched): with a Python
    preexec_fn, which makes subprocess fork (copying the page tables), as bubblewrap was
    started before; and without one (vfork), as now."""
    heap = bytearray(heap_mb << 20)
    for i in range(0, len(heap), 4096):
        heap[i] = 1
    rows = {"with a preexec_fn (fork; before)": ([], []), "without (vfork; now)": ([], [])}
    for _ in range(n):
        timed(lambda: subprocess.Popen(["/usr/bin/true"], preexec_fn=lambda: None).wait(),
              *rows["with a preexec_fn (fork; before)"])
        timed(lambda: subprocess.Popen(["/usr/bin/true"]).wait(), *rows["without (vfork; now)"])
    del heap
    return rows


class Timed:
    """Wrap callables to add up the time spent in each during one spawn."""

    def __init__(self):
        self.parts: dict[str, list[float]] = {}
        self.current: dict[str, float] = {}

    def wrap(self, owner, attr, label):
        orig = getattr(owner, attr)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                self.current[label] = self.current.get(label, 0.0) + time.perf_counter() - t

        setattr(owner, attr, timed)

    def commit(self):
        for k, v in self.current.items():
            self.parts.setdefault(k, []).append(v)
        self.current = {}


def bench_spawn(n, tmp: Path):
    """n spawns one after another, each instance left running (as on a hub), then n removes.
    (Removing while spawning slows spawns: the kernel tears a namespace down in the
    background and that contends with making the next; the removes are timed apart.)
    Each spawn mounts the instance's /data first, as a hub's does (``--disk 1G``): a new
    image the first time; after the removes, n later starts mount the images kept."""
    from tether.apps import disk

    timer = Timed()
    timer.wrap(netns, "create", "namespace + veth (in process, netlink)")
    timer.wrap(sb.Sandboxes, "_policy", "nftables: the instance's table (and the host's, if missing)")
    timer.wrap(selftest, "run", "self-test")
    timer.wrap(cgroups.Layout, "create", "cgroups")
    timer.wrap(disk, "ensure", "/data: image copy (first start only) + loop device + mount")
    boxes = sb.Sandboxes(tmp / "state", prefix=PREFIX)
    app = tmp / "app"
    app.mkdir()
    images = tmp / "images"
    t = time.perf_counter()
    disk.template(images / "templates", 1 << 30)  # once per size on a hub: apart, below
    template_made = time.perf_counter() - t
    first, later, removes, cpu, later_cpu = [], [], [], [], []

    def spec(i):
        return sb.SandboxSpec(instance=f"s{i}", app_dir=app, data_dir=tmp / "data" / f"s{i}",
                              run_dir=tmp / "run" / f"s{i}", argv=("sleep", "600"), env={},
                              uid=64000 + i, gid=64000 + i, limits=sb.Limits(64 << 20, 0.5, 32))

    def spawn(i, out, out_cpu, parts):
        def one():
            disk.ensure(images / f"s{i}.img", tmp / "data" / f"s{i}", 1 << 30, 64000 + i, 64000 + i)
            boxes.start(spec(i))

        timed(one, out, out_cpu)
        if parts:
            timer.commit()
        else:
            timer.current = {}

    try:
        for i in range(n):
            spawn(i, first, cpu, True)
        for i in range(n):
            t = time.perf_counter()
            boxes.remove(f"s{i}")
            disk.unmount(tmp / "data" / f"s{i}")
            removes.append(time.perf_counter() - t)
        for i in range(n):
            spawn(i, later, later_cpu, False)
    finally:
        for inst in boxes.present():
            boxes.remove(inst)
        for i in range(n):
            disk.release(images / f"s{i}.img", tmp / "data" / f"s{i}")
    parts = dict(timer.parts)
    known = [sum(vals[k] for vals in timer.parts.values()) for k in range(len(first))]
    parts["the rest: state files, fork+exec bubblewrap (from a thread in its namespace and cgroups), "
          "counters reset"] = [
        tot - kn for tot, kn in zip(first, known)]
    return (first, cpu), (later, later_cpu), removes, parts, template_made


def ip_batch_create(name: str, link: netns.Link) -> None:
    """The baseline: how netns.create made the namespace and veth before, two `ip -batch`."""
    def batch(commands, ns=None):
        argv = [netns.IP, *(["-n", ns] if ns else []), "-batch", "-"]
        subprocess.run(argv, input="\n".join(commands) + "\n", text=True, check=True, capture_output=True)

    batch([f"netns add {name}", f"link add {name} type veth peer name eth0 netns {name}",
           f"addr add {link.host4}/31 dev {name}", f"addr add {link.host6}/127 dev {name} nodad",
           f"link set {name} up"])
    netns.forward_from(name)
    batch(["link set lo up", f"addr add {link.inst4}/31 dev eth0", f"addr add {link.inst6}/127 dev eth0 nodad",
           "link set eth0 up", f"route add default via {link.host4}", f"route add ::/0 via {link.host6}"], ns=name)


def bench_netns(n):
    """Namespace + veth, alternately in process and by the `ip -batch` baseline (n each)."""
    pool4, pool6 = netns.default_pools(PREFIX)
    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    try:
        for i in range(n):
            for out, cpu, make, name in ((ours, ours_cpu, netns.create, f"{PREFIX}-n{i}"),
                                         (theirs, theirs_cpu, ip_batch_create, f"{PREFIX}-i{i}")):
                link = netns.Link.at(100 + 2 * i + (out is theirs), pool4, pool6)
                timed(lambda: make(name, link), out, cpu)
    finally:
        for name in netns.names(PREFIX + "-"):
            netns.remove(name)
    return ours, theirs, ours_cpu, theirs_cpu


def bench_disk(n, tmp: Path):
    """An instance's /data with its disk limit (1 GiB): made (sparse copy of the template,
    mount) at its first start, mounted at a later start, unmounted at a stop; against the
    plain directory (mkdir, chown) that a /data without a limit costs, and against the way
    it was done before (mkfs.ext4 per image, `mount -o loop`, `umount`)."""
    import os

    from tether.apps import disk

    labels = ("plain directory: mkdir + chown (no limit; the floor)",
              "first start: sparse copy of the template + loop device + mount(2)",
              "later start: loop device + mount(2)", "stop: umount2(2)",
              "before: first start, sparse image + `mkfs.ext4` + `mount -o loop`",
              "before: later start, `mount -o loop`", "before: stop, `umount`")
    rows = {label: ([], []) for label in labels}  # label -> (wall, cpu)
    disks = tmp / "disks"
    disk.template(disks / "templates", 1 << 30)

    def old_first(image, mnt):
        mnt.mkdir(parents=True, exist_ok=True)
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, 1 << 30)
        os.close(fd)
        subprocess.run([disk.MKFS, "-q", "-F", "-m", "0", "-L", "tether-data", str(image)], check=True)
        old_later(image, mnt)

    def old_later(image, mnt):
        subprocess.run(["mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", str(image), str(mnt)], check=True)

    def plain(i):
        d = tmp / "plain" / f"d{i}"
        d.mkdir(parents=True, mode=0o700)
        os.chown(d, 64000 + i, 64000 + i)

    try:
        for i in range(n):
            image, mnt = disks / f"d{i}.img", tmp / "dmnt" / f"d{i}"
            oimage, omnt = disks / f"o{i}.img", tmp / "dmnt" / f"o{i}"
            steps = (lambda: plain(i),
                     lambda: disk.ensure(image, mnt, 1 << 30, 64000 + i, 64000 + i),
                     lambda: disk.ensure(image, mnt, 1 << 30, 64000 + i, 64000 + i),
                     lambda: disk.unmount(mnt),
                     lambda: old_first(oimage, omnt),
                     lambda: old_later(oimage, omnt),
                     lambda: subprocess.run(["umount", str(omnt)], check=True))
            for label in (labels[0], labels[1], labels[3], labels[2], labels[4], labels[6], labels[5]):
                timed(steps[labels.index(label)], *rows[label])
            disk.release(image, mnt)
            disk.release(oimage, omnt)
    finally:
        for i in range(n):
            for name in "do":
                disk.release(disks / f"{name}{i}.img", tmp / "dmnt" / f"{name}{i}")
    return rows


def make_policy_only(boxes: sb.Sandboxes, count_from: int, count_to: int, grants_each: int):
    """Instances with a namespace and their table (10 grants) but no veth and no process."""
    names = [f"b{i:04d}" for i in range(count_from, count_to)]
    subprocess.run([netns.IP, "-batch", "-"], input="".join(f"netns add {PREFIX}-{n}\n" for n in names),
                   text=True, check=True)
    for k, name in enumerate(names, start=count_from):
        d = boxes._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        link = boxes._allocate(name)
        grants = [sb.Destination("tcp", ipaddress.ip_address(f"198.18.{k % 250}.{j + 1}"), 443)
                  for j in range(grants_each)]
        boxes._policy(name, link, grants, fresh=True)
    return names


def bench_grants(sizes, rounds, tmp: Path):
    boxes = sb.Sandboxes(tmp / "gstate", prefix=PREFIX)
    rows = []
    made: list[str] = []
    try:
        for size in sizes:
            made += make_policy_only(boxes, len(made), size, 10)
            grant, revoke, nft_grant, nft_revoke, sub_grant, del_revoke = [], [], [], [], [], []
            for r in range(rounds):
                inst = random.choice(made)
                name = boxes._name(inst)
                current, _ = boxes._grant_state(inst)
                extra = sb.Destination("tcp", ipaddress.ip_address(f"203.0.113.{r % 250 + 1}"), 8000 + r)
                t = time.perf_counter()
                boxes.set_grants(inst, current + [extra])
                grant.append(time.perf_counter() - t)
                t = time.perf_counter()
                boxes.set_grants(inst, current)
                revoke.append(time.perf_counter() - t)
                # the nftables transaction alone (libnftables in a thread in the namespace)
                extra2 = sb.Destination("tcp", ipaddress.ip_address(f"203.0.113.{r % 250 + 1}"), 20000 + r)
                t = time.perf_counter()
                netpolicy.run(netpolicy.change_grants(boxes.table, inst, current, current + [extra2], []), name)
                nft_grant.append(time.perf_counter() - t)
                t = time.perf_counter()
                netpolicy.run(netpolicy.change_grants(boxes.table, inst, current + [extra2], current, []), name)
                nft_revoke.append(time.perf_counter() - t)
                # baselines: a subprocess per change; a revoke as a set element delete
                elem = f"203.0.113.{r % 250 + 1} . tcp . {30000 + r}"
                t = time.perf_counter()
                subprocess.run(["nsenter", f"--net=/run/netns/{name}", netpolicy.NFT, "-f", "-"],
                               input=f"add element inet {boxes.table} g4_{inst} {{ {elem} }}\n", text=True, check=True)
                sub_grant.append(time.perf_counter() - t)
                t = time.perf_counter()
                netpolicy.run(f"delete element inet {boxes.table} g4_{inst} {{ {elem} }}\n", name)
                del_revoke.append(time.perf_counter() - t)
            rows.append((size, grant, revoke, nft_grant, nft_revoke, sub_grant, del_revoke))
            print(f"{size} instances: grant p50 {ms(statistics.median(grant))} ms, revoke p50 "
                  f"{ms(statistics.median(revoke))} ms", flush=True)
    finally:
        subprocess.run([netns.IP, "-force", "-batch", "-"],
                       input="".join(f"netns del {PREFIX}-{n}\n" for n in made), text=True)
        netpolicy.delete_table(boxes.table)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    n = 20 if args.quick else 50
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    rounds = 50 if args.quick else 200
    import os

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tsbb-") as d:
        tmp = Path(d)
        fork = bench_fork_exec(n)
        bare = bench_bare_bwrap(n)
        spawn, spawn_later, removes, parts, template_made = bench_spawn(n, tmp)
        ns_ours, ns_ip, ns_ours_cpu, ns_ip_cpu = bench_netns(n)
        forks = bench_preexec(n)
        disks = bench_disk(n, tmp)
        grants = bench_grants(sizes, rounds, tmp)
    floor = statistics.median(fork[0])
    lines = ["| start | wall p50 (ms) | wall p90 (ms) | CPU p50 (ms) | x fork/exec (wall p50) |",
             "|---|---:|---:|---:|---:|"]
    for label, (vals, cpus) in (("fork/exec `true` (floor)", fork), ("bare `bwrap --unshare-all ... true`", bare),
                                ("tether spawn → ready with /data, first start (self-test included)", spawn),
                                ("tether spawn → ready with /data, later start", spawn_later)):
        lines.append(f"| {label} | {ms(statistics.median(vals))} | {ms(pct(vals, 0.9))} | {ms(statistics.median(cpus))} | "
                     f"{statistics.median(vals) / floor:.1f} |")
    lines += ["", "Parts of a spawn (p50, ms):", ""]
    lines += [f"- {label}: {ms(statistics.median(v))}" for label, v in parts.items()]
    lines += [f"- once per disk size on a hub, before its first spawn: the template (`mkfs.ext4`): {ms(template_made)}",
              f"- remove + unmount (kill, cgroups, namespace, veth, conntrack, state, /data), timed apart: p50 "
              f"{ms(statistics.median(removes))}",
              "", "| namespace + veth + addresses + routes | wall p50 (ms) | wall p90 (ms) | CPU p50 (ms) | "
              "x in process (CPU p50) |", "|---|---:|---:|---:|---:|"]
    for label, vals, cpus in (("in process, netlink (pyroute2) + unshare/mount", ns_ours, ns_ours_cpu),
                              ("baseline: two `ip -batch` processes (before)", ns_ip, ns_ip_cpu)):
        lines.append(f"| {label} | {ms(statistics.median(vals))} | {ms(pct(vals, 0.9))} | "
                     f"{ms(statistics.median(cpus))} | {statistics.median(cpus) / statistics.median(ns_ours_cpu):.1f} |")
    lines += ["", "| fork+exec `true` from a process with 256 MiB touched | wall p50 (ms) | wall p90 (ms) | "
              "CPU p50 (ms) |", "|---|---:|---:|---:|"]
    for label, (vals, cpus) in forks.items():
        lines.append(f"| {label} | {ms(statistics.median(vals))} | {ms(pct(vals, 0.9))} | {ms(statistics.median(cpus))} |")
    lines += ["", "| an instance's /data (`--disk 1G`) | wall p50 (ms) | wall p90 (ms) | CPU p50 (ms) | "
              "x plain directory (wall p50) |", "|---|---:|---:|---:|---:|"]
    dir_floor = statistics.median(next(iter(disks.values()))[0])
    for label, (vals, cpus) in disks.items():
        lines.append(f"| {label} | {ms(statistics.median(vals))} | {ms(pct(vals, 0.9))} | "
                     f"{ms(statistics.median(cpus))} | {statistics.median(vals) / dir_floor:.0f} |")
    lines += ["", "| instances (10 grants each) | grant p50 / p90 (ms) | revoke p50 / p90 (ms) | "
              "nft transaction: grant / revoke p50 (ms) | baseline: `nsenter nft -f` add p50 (ms) | "
              "baseline: revoke by element delete p50 (ms) |", "|---:|---:|---:|---:|---:|---:|"]
    for size, g, r, ng, nr, sg, dr in grants:
        lines.append(f"| {size:,} | {ms(statistics.median(g))} / {ms(pct(g, 0.9))} | "
                     f"{ms(statistics.median(r))} / {ms(pct(r, 0.9))} | {ms(statistics.median(ng))} / "
                     f"{ms(statistics.median(nr))} | {ms(statistics.median(sg))} | {ms(statistics.median(dr))} |")
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        from _docs import machine_lines, write_section

        command = "benchmarks/apps_sandbox.py " + " ".join(argv if argv is not None else sys.argv[1:])
        body = "\n".join([
            SECTION, "",
            f"Spawn → ready with the instance's /data mounted ({n} first starts one after another, then {n} later "
            "starts), against the floor of starting anything and a bare bubblewrap; its parts, each against the "
            "way it was done before; grant and revoke latency with 10, 100 and 1,000 instances holding 10 grants each "
            f"({rounds} of each per size, a random instance each time). The 1,000 instances' nftables state is "
            "real (a network namespace each, with its table and sets) but they have no process and no veth: "
            "an instance's policy lives in its own namespace, and that is all a grant touches.",
            "", "Machine:", "",
            *machine_lines(cpu_note="other engineers' test runs share them", load=load),
            "", "Command (from the repository root, as root):", "", "```sh",
            f".venv/bin/python {command.strip()}", "```", "", text, "", NOTES,
        ])
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
