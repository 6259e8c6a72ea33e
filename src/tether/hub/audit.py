"""The audit trail: every state-changing request and every refusal, never a secret."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from tether.db import Database
from tether.db.models import AuditRecord


def record(db: Database, **fields) -> None:
    fields["resource"] = (fields.get("resource") or "")[:1024]
    fields["reason"] = (fields.get("reason") or "")[:1024]
    with db.write() as s:
        s.add(AuditRecord(**fields))


def query(
    db: Database,
    *,
    since: datetime | None = None,
    user: str | None = None,
    token: str | None = None,
    action: str | None = None,
    limit: int = 1000,
) -> list[dict]:
    q = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
    if since is not None:
        q = q.where(AuditRecord.at >= since)
    if user is not None:
        q = q.where(AuditRecord.user == user)
    if token is not None:
        q = q.where(AuditRecord.token_id == token)
    if action is not None:
        # "token.*" selects a family; anything else is an exact match.
        q = q.where(AuditRecord.action.like(action[:-1] + "%") if action.endswith("*") else AuditRecord.action == action)
    with db.read() as s:
        rows = list(s.scalars(q))
    return [
        {
            "id": r.id,
            "at": r.at.isoformat().replace("+00:00", "Z"),
            "user": r.user,
            "token_id": r.token_id,
            "action": r.action,
            "resource": r.resource,
            "source": r.source,
            "outcome": r.outcome,
            "status": r.status,
            "reason": r.reason,
        }
        for r in reversed(rows)
    ]


def prune(db: Database, *, before: datetime) -> int:
    with db.write() as s:
        return s.execute(delete(AuditRecord).where(AuditRecord.at < before)).rowcount
