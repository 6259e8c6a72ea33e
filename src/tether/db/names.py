"""One set of gateway names per user, shared by forwarded routes and app instances.

A route and an app instance of the same user may not hold the same name (both are
``NAME--USER`` at the gateway). Each capability checks the other's table and inserts
its own row in one transaction; :func:`hold_user_names` makes that check-and-insert
atomic across hub replicas: on PostgreSQL a transaction-scoped advisory lock per user,
so a second replica claiming a name of the same user waits until the first commits and
then sees its row. SQLite has one writer at a time already.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

USER_NAMES_LOCK = 0x7E7C  # the advisory lock class of users' gateway names (key: the user's id)


def hold_user_names(session: Session, user_id: int) -> None:
    """Hold ``user_id``'s gateway names until this transaction ends (call it first in
    the transaction that checks a name and then claims it)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (USER_NAMES_LOCK, user_id))
