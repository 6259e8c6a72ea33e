"""The audit trail: every change and every refusal, with who, what, where; never a secret."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from tether.db import Database
from tether.db.models import AuditRecord
from tether.auth import audit


def records(hub, **params):
    with hub.admin() as c:
        r = c.get("/api/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()["records"]


def wait_for(hub, pred, **params):
    # The record is written right after the response leaves; give it a moment
    # (up to 10 s: on a loaded 2-core machine the writer thread can lag).
    for _ in range(200):
        recs = [r for r in records(hub, **params) if pred(r)]
        if recs:
            return recs
        time.sleep(0.05)
    raise AssertionError(f"no audit record matched {params}")


def test_changes_and_refusals_are_recorded(hub):
    space = hub.make_space()
    name, token = hub.make_user(grants={space: "write"})
    with hub.client(token) as c:
        child = c.post("/api/v1/tokens", json={"scopes": [f"publish:{space}/a"], "expires": "1h", "label": "job-9"}).json()
    with hub.client(child["token"]) as c:
        assert c.get("/api/v1/tokens").status_code == 403  # a refusal
    minted = wait_for(hub, lambda r: r["action"] == "token.mint", user=name)
    assert minted[-1]["outcome"] == "allowed" and minted[-1]["source"] == "127.0.0.1"
    assert minted[-1]["resource"] == f"token:{child['id']}"
    denied = wait_for(hub, lambda r: r["status"] == 403, token=child["id"])
    assert denied[-1]["outcome"] == "denied" and denied[-1]["action"] == "token.list"
    assert "token-scope" in denied[-1]["reason"]
    # The trail never holds a secret.
    everything = str(records(hub, limit=100000))
    assert child["token"] not in everything and token not in everything


def test_authentication_failures_are_recorded_with_token_id(hub):
    name, token = hub.make_user(max_uses=1)
    tid = token.split("_")[1]
    with hub.client(token) as c:
        c.get("/api/v1/whoami")
        assert c.get("/api/v1/whoami").status_code == 403
    rec = wait_for(hub, lambda r: "token-uses-exhausted" in r["reason"], token=tid)[-1]
    assert rec["outcome"] == "denied" and rec["token_id"] == tid


def test_filters_and_admin_only(hub):
    name, token = hub.make_user()
    with hub.admin() as c:
        c.post(f"/api/v1/users/{name}/disable").raise_for_status()
        c.post(f"/api/v1/users/{name}/enable").raise_for_status()
    recs = wait_for(hub, lambda r: r["resource"] == f"user:{name}", action="user.*")
    assert {r["action"] for r in recs} >= {"user.disable", "user.enable"}
    assert all(r["action"] == "user.enable" for r in records(hub, action="user.enable"))
    assert records(hub, since="1h") and records(hub, since=(datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()) == []
    with hub.client(token) as c:
        r = c.get("/api/v1/audit")
        assert r.status_code == 403


def test_prune_removes_only_old_records(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.migrate()
    now = datetime.now(timezone.utc)
    for days in (200, 100, 1):
        audit.record(db, at=now - timedelta(days=days), user="u", action="x", outcome="allowed", status=200)
    assert audit.prune(db, before=now - timedelta(days=90)) == 2
    with db.read() as s:
        assert s.query(AuditRecord).count() == 1


def test_dry_run_checks_are_not_changes_but_refusals_are_recorded(hub):
    space = hub.make_space()
    name, token = hub.make_user(grants={space: "read"})
    with hub.client(token) as c:
        ok = c.post("/api/v1/authz/check", json={"action": "publish.read", "space": space})
        no = c.post("/api/v1/authz/check", json={"action": "nonsense.action"})
        assert ok.json()["allowed"] and no.status_code == 400
        c.post(f"/api/v1/users/{name}/disable")  # 403: recorded
    recs = wait_for(hub, lambda r: r["status"] == 403, user=name)
    assert recs[-1]["action"] == "user.disable"
    mine = wait_for(hub, lambda r: r["action"] == "whoami", user=name)
    assert [r["status"] for r in mine] == [400]


def _fields(i: int) -> dict:
    return {"at": datetime.now(timezone.utc), "user": f"u{i}", "token_id": None, "action": "test.write",
            "resource": f"r{i}", "source": "127.0.0.1", "outcome": "allowed", "status": 200, "reason": ""}


def test_audit_writer_batches_and_loses_nothing_on_stop(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.migrate()
    w = audit.AuditWriter(db, interval=0.5)
    assert w.submit(_fields(0)) is False  # not running: the caller writes it itself
    w.start()
    assert all(w.submit(_fields(i)) for i in range(300))
    w.flush()  # waits for what is queued
    assert len(audit.query(db, action="test.write")) == 300
    assert all(w.submit(_fields(i)) for i in range(300, 500))
    w.stop()  # writes what is still queued before returning
    with db.read() as s:
        assert s.query(AuditRecord).filter(AuditRecord.action == "test.write").count() == 500
    assert w.submit(_fields(999)) is False  # stopped
    db.dispose()


def test_audit_writer_queue_is_bounded(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.migrate()
    w = audit.AuditWriter(db, interval=30, max_queued=10)  # gathers for 30 s: the queue fills up
    w.start()
    accepted = sum(w.submit(_fields(i)) for i in range(50))
    assert 10 <= accepted <= 11  # the queue, and the one the writer took; the rest are the caller's to write
    w.stop()
    with db.read() as s:
        assert s.query(AuditRecord).filter(AuditRecord.action == "test.write").count() == accepted
    db.dispose()
