"""A start that fails after the instance's /data was mounted leaves nothing mounted or
attached, says why, and marks the instance failed; a later start, once the cause is gone,
finds its data as it was. Real hub, real sandboxes, real loop devices (as root).

The failure is a real one: the instance's socket directory (APPS_ROOT/run/ID) is a file
the sandbox cannot use, so bubblewrap's set-up fails after /data is mounted."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.apps.hubs import data_mounts, demo_for_alice, wait_for
from tests.apps.test_disk_inprocess import attached


@pytest.fixture
def w(tmp_path):
    """A hub with app demo, alice's instance of it running."""
    yield from demo_for_alice(tmp_path, {"alice": "read", "olga": "admin"})


def _status(w) -> dict:
    return json.loads(w.cli("alice", "status", "demo", "--json").stdout)


def test_a_start_failing_after_data_is_mounted_unmounts_it(w):
    inst = _status(w)["id"]
    data, run = w.apps_root / "data" / inst, w.apps_root / "run" / inst
    image = w.apps_root / "disks" / f"{inst}.img"
    assert data_mounts(w.apps_root) == [str(data)] and len(attached(image)) == 1
    (data / "kept").write_text("mine")
    assert w.cli("alice", "stop", "demo").returncode == 0
    assert data_mounts(w.apps_root) == []
    # the loop device detaches once the exiting sandbox's mount namespace lets go of it
    wait_for(lambda: attached(image) == [], 10, "the loop device to detach")

    shutil.rmtree(run)
    run.write_text("not a directory")  # what the sandbox cannot use
    r = w.cli("alice", "start", "demo")
    assert r.returncode == 3, r.stderr  # the hub's 503: a runtime failure, said
    assert "did not start" in r.stderr and str(run) in r.stderr and "Traceback" not in r.stderr
    st = _status(w)
    assert st["state"] == "failed" and str(run) in st["reason"], st
    assert data_mounts(w.apps_root) == [], "the failed start left /data mounted"
    wait_for(lambda: attached(image) == [], 10, "the failed start's loop device to detach")

    run.unlink()  # the cause gone: the next start works, with its data as it was
    r = w.cli("alice", "start", "demo")
    assert r.returncode == 0, r.stderr
    assert (data / "kept").read_text() == "mine"
