"""The record log: an immutable, time-ordered log kept in SQLite and synced by
range-based set reconciliation (see :mod:`tether.log.reconcile`)."""
