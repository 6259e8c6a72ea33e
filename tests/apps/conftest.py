"""Fixtures for the sandbox tests: real bubblewrap, cgroups, namespaces and nftables, as root.

Everything the tests make on the OS is named with the prefix ``tsb`` (this branch's), and
removed at teardown even when a test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import pytest

from tether.apps import netpolicy
from tether.apps.sandbox import Limits, SandboxSpec, Sandboxes

PREFIX = "tsb"
_uids = itertools.count(61000 + (os.getpid() % 500) * 20)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.02)


@pytest.fixture
def sandboxes(tmp_path):
    sb = Sandboxes(tmp_path / "state", prefix=PREFIX)
    why = sb.available()
    if why:
        pytest.fail(f"sandboxes cannot run here: {why} (run `make test` as root; it installs bubblewrap and nftables)")
    made: list[str] = []
    sb.test_made = made  # instances a test started, removed below even if the test failed
    yield sb
    for inst in set(made) | set(sb.present()):
        sb.remove(inst)


@pytest.fixture
def make_spec(tmp_path, sandboxes):
    """make_spec(instance, argv, **overrides) -> SandboxSpec with its own dirs and uid."""

    def make(instance: str, argv, files: dict[str, str] | None = None, **kw) -> SandboxSpec:
        app = tmp_path / "apps" / instance
        app.mkdir(parents=True, exist_ok=True)
        for name, text in (files or {}).items():
            (app / name).write_text(text)
        uid = next(_uids)
        sandboxes.test_made.append(instance)
        defaults = dict(
            instance=instance, app_dir=app, data_dir=tmp_path / "data" / instance,
            run_dir=tmp_path / "run" / instance, argv=tuple(argv), env={}, uid=uid, gid=uid,
            limits=Limits(memory_bytes=128 << 20, cpu=0.5, pids=64),
        )
        defaults.update(kw)
        return SandboxSpec(**defaults)

    return make


def run_to_end(sandboxes: Sandboxes, spec: SandboxSpec, timeout: float = 20.0):
    """Start spec, wait until it exits; its status."""
    sandboxes.start(spec)
    return wait_until(lambda: (s := sandboxes.status(spec.instance)) and not s.running and s, timeout,
                      f"{spec.instance} to exit")


def probe(sandboxes: Sandboxes, make_spec, instance: str, code: str, **kw) -> dict:
    """Run a Python probe in a sandbox; it writes a JSON dict to /data/out.json."""
    spec = make_spec(instance, ["python3", "-c", code], **kw)
    st = run_to_end(sandboxes, spec)
    out = spec.data_dir / "out.json"
    assert out.exists(), f"probe wrote nothing (exit {st.exit_code}): {sandboxes.log_path(instance).read_text()}"
    return json.loads(out.read_text())


def leftovers(sandboxes: Sandboxes, instance: str = "") -> list[str]:
    """Every OS object whose name carries the prefix (and instance): cgroups, netns,
    interfaces, nftables objects."""
    name = f"{sandboxes.prefix}-{instance}"
    found = [f"cgroup {n}" for n in sandboxes.layout.names(name)]
    netns = Path("/run/netns")
    if netns.is_dir():
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith(name)]
    found += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(name)]
    if not instance and netpolicy.has_table(sandboxes.table):
        found.append(f"nft table inet {sandboxes.table}")
    return found
