"""Sandbox lifecycle on the real OS: bubblewrap, cgroups, uid, mounts; nothing left after remove."""

from __future__ import annotations

import json
import os

import pytest

from tether.apps.sandbox import Limits, SandboxError
from tests.apps.conftest import connect_unix, leftovers, probe, run_to_end, wait_until

SERVE = r"""
import os, socket, time
s = socket.socket(socket.AF_UNIX)
s.bind(os.environ["TETHER_SOCKET"]); s.listen()
while True:
    c, _ = s.accept()
    c.sendall(b"hello from " + os.environ.get("WHO", "?").encode()); c.close()
"""


def test_start_serves_on_socket_stop_and_remove_leave_nothing(sandboxes, make_spec):
    spec = make_spec("life1", ["python3", "serve.py"], files={"serve.py": SERVE}, env={"WHO": "alice"})
    st = sandboxes.start(spec)
    assert st.running and st.pid
    sock = spec.run_dir / "app.sock"
    c = connect_unix(sock)
    assert c.recv(100) == b"hello from alice"
    c.close()
    assert os.stat(sock).st_uid == spec.uid
    state = sandboxes.root / "life1"
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert {f.name: f.stat().st_mode & 0o777 for f in state.iterdir()} == {
        name: 0o600 for name in ("spec.json", "net.json", "grants.json", "pid", "status.json", "app.log")}
    assert sandboxes.present() == ["life1"]
    assert leftovers(sandboxes, "life1")
    sandboxes.stop("life1", grace=1)
    st = sandboxes.status("life1")
    assert not st.running and st.pid is None
    sandboxes.remove("life1")
    assert leftovers(sandboxes, "life1") == []
    assert not sock.exists()
    assert sandboxes.present() == []
    sandboxes.remove("life1")  # idempotent


def test_argv_is_passed_literally(sandboxes, make_spec):
    weird = ["it's \"quoted\"", "$(touch /data/pwned)", "`id`", "a\nb; rm -rf /", "*"]
    code = "import json,sys; json.dump(sys.argv[1:], open('/data/out.json','w'))"
    spec = make_spec("argv1", ["python3", "-c", code, *weird])
    st = run_to_end(sandboxes, spec)
    assert st.exit_code == 0
    assert json.loads((spec.data_dir / "out.json").read_text()) == weird
    assert not (spec.data_dir / "pwned").exists()


def test_exit_code_is_reported(sandboxes, make_spec):
    st = run_to_end(sandboxes, make_spec("exit1", ["python3", "-c", "raise SystemExit(7)"]))
    assert st.exit_code == 7 and not st.oom_killed


ISOLATION = r"""
import json, os, socket
out = {}
out["uid"] = (os.getuid(), os.getgid(), os.getgroups())
st = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
out["nnp"] = st["NoNewPrivs"].strip(); out["capeff"] = st["CapEff"].strip(); out["capbnd"] = st["CapBnd"].strip()
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
def can_write(path):
    try:
        open(path, "w").close(); return True
    except OSError:
        return False
out["tmp"] = sorted(os.listdir("/tmp"))
out["write_usr"] = can_write("/usr/tag-x"); out["write_app"] = can_write("/app/x"); out["write_etc"] = can_write("/etc/tag-x")
out["write_data"] = can_write("/data/x"); out["write_tmp"] = can_write("/tmp/x")
out["exists"] = {p: os.path.exists(p) for p in os.environ["PROBE_PATHS"].split(":")}
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); out["raw"] = "allowed"
except OSError as e:
    out["raw"] = e.errno
out["env"] = {k: os.environ.get(k) for k in ("HOME", "TETHER_SOCKET", "PORT", "SECRET")}
out["hostname"] = socket.gethostname()
json.dump(out, open("/data/out.json", "w"))
"""


def test_isolation_uid_caps_mounts_processes(sandboxes, make_spec, tmp_path):
    os.environ["SECRET"] = "hub-secret"  # the hub's environment never reaches the app
    try:
        other = make_spec("other1", ["sleep", "60"])
        sandboxes.start(other)
        (other.data_dir / "private").write_text("other's")
        hub_data = tmp_path / "hubdata"
        hub_data.mkdir()
        paths = [str(other.data_dir), str(other.data_dir / "private"), str(hub_data), str(tmp_path),
                 "/root", "/home", "/var/lib", "/work", "/run/netns", str(sandboxes.root)]
        out = probe(sandboxes, make_spec, "iso1", ISOLATION, env={"PROBE_PATHS": ":".join(paths)})
    finally:
        del os.environ["SECRET"]
    uid = out["uid"][0]
    assert uid >= 61000 and out["uid"][1] == uid and out["uid"][2] in ([], [uid])
    assert out["nnp"] == "1" and int(out["capeff"], 16) == 0 and int(out["capbnd"], 16) == 0
    assert len(out["pids"]) <= 3, f"sees other processes: {out['pids']}"  # bwrap's init and the app
    assert not out["write_usr"] and not out["write_app"] and not out["write_etc"]
    assert out["write_data"] and out["write_tmp"] and out["tmp"] == []
    assert not any(out["exists"].values()), out["exists"]
    assert out["raw"] == 1  # EPERM: no CAP_NET_RAW
    assert out["env"] == {"HOME": "/data", "TETHER_SOCKET": "/run/tether/app.sock", "PORT": None, "SECRET": None}
    assert out["hostname"] == "app-iso1"


def test_fork_bomb_is_held_by_the_process_limit(sandboxes, make_spec):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    spec = make_spec("bomb1", ["python3", "-c", bomb], limits=Limits(memory_bytes=256 << 20, cpu=0.2, pids=32))
    sandboxes.start(spec)
    name = f"{sandboxes.prefix}-bomb1"
    wait_until(lambda: len(sandboxes.layout.pids(name)) >= 20, what="the bomb to fork")
    assert len(sandboxes.layout.pids(name)) <= 32
    sandboxes.remove("bomb1")
    assert leftovers(sandboxes, "bomb1") == []


def test_memory_hog_is_killed_and_reported(sandboxes, make_spec):
    hog = "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n"
    spec = make_spec("hog1", ["python3", "-c", hog], limits=Limits(memory_bytes=64 << 20, cpu=0.5, pids=16))
    st = run_to_end(sandboxes, spec)
    assert st.oom_killed
    assert st.exit_code not in (0, None)


@pytest.mark.parametrize("bad", [
    dict(instance="../x"), dict(instance="UPPER"), dict(instance="a" * 11), dict(argv=()),
    dict(uid=0), dict(gid=0), dict(limits=Limits(0, 0.5, 64)), dict(limits=Limits(64 << 20, 0, 64)),
    dict(limits=Limits(64 << 20, 0.5, 0)), dict(env={"A=B": "x"}), dict(tcp_port=70000),
])
def test_bad_specs_are_refused_and_nothing_is_made(sandboxes, make_spec, bad):
    import dataclasses

    spec = dataclasses.replace(make_spec("bad1", ["true"]), **bad)
    with pytest.raises(SandboxError) as err:
        sandboxes.start(spec)
    assert err.value.reason
    assert sandboxes.present() == [] and leftovers(sandboxes) == []


def test_stop_lets_the_app_end_cleanly_within_grace(sandboxes, make_spec):
    code = ("import signal, sys, time\n"
            "def bye(*_):\n    open('/data/term', 'w').write('bye'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\nopen('/data/up', 'w').close()\n"
            "while True: time.sleep(1)\n")
    spec = make_spec("term1", ["python3", "-c", code])
    sandboxes.start(spec)
    wait_until((spec.data_dir / "up").exists, what="the app to start")
    sandboxes.stop("term1", grace=5)
    st = sandboxes.status("term1")
    assert not st.running and st.exit_code == 0
    assert (spec.data_dir / "term").read_text() == "bye"
    # stubborn apps are killed after the grace; the instance starts again afterwards
    stubborn = make_spec("term2", ["python3", "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                                     "while True: time.sleep(1)"])
    sandboxes.start(stubborn)
    sandboxes.stop("term2", grace=0.3)
    assert not sandboxes.status("term2").running
    sandboxes.start(stubborn)
    assert sandboxes.status("term2").running


def test_data_persists_across_restarts_and_tmp_does_not(sandboxes, make_spec):
    code = "import os\nopen('/data/n','a').write('x')\nopen('/tmp/t','a').write('x')\nos.system('true')\n" \
           "import json; json.dump([open('/data/n').read(), open('/tmp/t').read()], open('/data/out.json','w'))"
    spec = make_spec("pers1", ["python3", "-c", code])
    run_to_end(sandboxes, spec)
    run_to_end(sandboxes, spec)
    assert json.loads((spec.data_dir / "out.json").read_text()) == ["xx", "x"]


def test_tcp_app_is_reached_through_the_relay(sandboxes, make_spec):
    import socket

    spec = make_spec("tcp1", ["python3", "-m", "http.server", "--bind", "127.0.0.1", "8123"], tcp_port=8123,
                     files={"index.html": "hello over tcp"})
    sandboxes.start(spec)

    def get():
        try:
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(5)
                c.connect(str(spec.run_dir / "app.sock"))
                c.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := c.recv(4096):
                    data += chunk
                return data
        except OSError:
            return None

    answer = wait_until(lambda: (a := get()) and b"200" in a and a, what="the TCP app through the relay")
    assert answer.endswith(b"hello over tcp")
    sandboxes.stop("tcp1", grace=2)
    assert not sandboxes.status("tcp1").running


def test_run_once_runs_to_completion_and_removes_the_sandbox(sandboxes, make_spec):
    spec = make_spec("once1", ["sh", "-c", "echo installing; echo done > /data/installed; exit 3"])
    res = sandboxes.run_once(spec, timeout=20)
    assert res.returncode == 3 and b"installing" in res.stdout
    assert (spec.data_dir / "installed").read_text() == "done\n"
    assert sandboxes.present() == [] and leftovers(sandboxes) == []
    slow = make_spec("once2", ["sleep", "30"])
    with pytest.raises(SandboxError, match="did not finish"):
        sandboxes.run_once(slow, timeout=0.5)
    assert sandboxes.present() == [] and leftovers(sandboxes) == []


def test_rlimits_and_cpu_quota_apply(sandboxes, make_spec):
    code = ("import json, resource\n"
            "json.dump([resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE)],"
            " open('/data/out.json', 'w'))")
    spec = make_spec("rlim1", ["python3", "-c", code], limits=Limits(memory_bytes=64 << 20, cpu=0.25, pids=16, nofile=77))
    run_to_end(sandboxes, spec)
    assert json.loads((spec.data_dir / "out.json").read_text()) == [[77, 77], [0, 0]]
    spin = make_spec("cpu1", ["python3", "-c", "while True: pass"], limits=Limits(64 << 20, 0.25, 16))
    sandboxes.start(spin)
    layout = sandboxes.layout
    if layout.version == 1:
        cpu_dir = layout.bases["cpu"] / f"{sandboxes.prefix}-cpu1"
        assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "25000"

        def throttled():
            stat = dict(line.split() for line in (cpu_dir / "cpu.stat").read_text().splitlines())
            return int(stat["nr_throttled"]) > 0

        wait_until(throttled, 10, what="the spinning app to be throttled by its CPU quota")
    else:
        assert (layout.bases["unified"] / f"{sandboxes.prefix}-cpu1" / "cpu.max").read_text().split()[0] == "25000"


SYSCALLS = r"""
import ctypes, json, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    r = libc.syscall(nr, *args)
    return 0 if r >= 0 else ctypes.get_errno()
out = {
    "unshare_user": call(272, 0x10000000),          # unshare(CLONE_NEWUSER)
    "unshare_net": call(272, 0x40000000),           # unshare(CLONE_NEWNET): no capability
    "bpf": call(321, 0, 0, 0),
    "keyctl": call(250, 0, 0, 0, 0, 0),
    "clone3": call(435, 0, 0),
    "unshare_cmd": subprocess.run(["unshare", "-Ur", "true"], capture_output=True).returncode,
}
t = threading.Thread(target=lambda: out.setdefault("thread", "ran")); t.start(); t.join()
out["subprocess"] = subprocess.run(["echo", "ok"], capture_output=True, text=True).stdout.strip()
json.dump(out, open("/data/out.json", "w"))
"""


def test_seccomp_refuses_user_namespaces_and_narrows_the_kernel(sandboxes, make_spec):
    import errno

    out = probe(sandboxes, make_spec, "sys1", SYSCALLS)
    assert out["unshare_user"] == errno.EPERM and out["unshare_cmd"] != 0
    assert out["unshare_net"] == errno.EPERM
    assert out["bpf"] == errno.EPERM and out["keyctl"] == errno.EPERM
    assert out["clone3"] == errno.ENOSYS
    assert out["thread"] == "ran" and out["subprocess"] == "ok"  # ordinary work still runs
