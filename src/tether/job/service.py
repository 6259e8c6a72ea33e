"""The hub's side of jobs: groups, nodes, messages and barriers in the database,
the rules of :mod:`tether.job.core` applied to them, and who may do what.

Everything that matters is in the database, so a restarted hub, or another
replica, carries on where the last one stopped. What one hub keeps in memory is
only a wake-up: :class:`Waker` (one event per group and *topic*, set when that
changes, here or, through PostgreSQL's NOTIFY, on another replica) and the
snapshot the waiters of one topic share between two changes.

Big groups: a decision about one node (an arrival, a send, a long-poll asked
again) reads that node, the essential roles' nodes and its own rows, never the
whole group, and a barrier's completion is a count in SQL; only a change a
waiter listens for wakes it. A thousand-node barrier is a thousand small writes
and, when its last node arrives, one read of the group.

Authorization: scheduling (create, cancel, status of a whole group) needs
``job.admin``/``job.read`` on the group's space; taking part as node N of
group G needs ``job.write`` on resource ``job=G, path=N``, which a node's own
token (scope ``job:G/N``) allows and nothing of another node's does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tether.auth import service as auth
from tether.auth.caveats import CaveatError, parse_duration, parse_scope
from tether.auth.policy import Resource, authorize
from tether.auth.service import AuthContext, MintRequest
from tether.db import Database
from tether.db.models import JobGroup, JobMessage, JobNode, JobSync, Space, utcnow
from tether.job import core
from tether.problems import Problem, bad_request, not_found

NOTIFY_CHANNEL = "tether_jobs"
_g, _n, _m, _y, _sp = (JobGroup.__table__.c, JobNode.__table__.c, JobMessage.__table__.c, JobSync.__table__.c,
                       Space.__table__.c)
# What a decision needs of a group's row (all of it but its creator and space).
_GROUP_ROW = select(_g.name, _g.state, _g.reason, _g.essential, _g.lost_after, _g.deadline, _g.expires_at
                    ).where(_g.id == bindparam("gid"))
_GROUP_ROW_LOCKED = _GROUP_ROW.with_for_update()
_NODES = select(_n.name, _n.role, _n.state, _n.reason, _n.last_seen).where(_n.group_id == bindparam("gid"))
_MESSAGES = select(_m.node, _m.data).where(_m.group_id == bindparam("gid"), _m.message_id == bindparam("mid"))
_SYNCS = select(_y.node, _y.reached, _y.told, _y.call).where(_y.group_id == bindparam("gid"),
                                                             _y.sync_id == bindparam("sid"))
# One node's part (see JobService._partial): its row, or its row and the essential roles' nodes.
_NODE_COLUMNS = select(_n.name, _n.role, _n.state, _n.reason, _n.last_seen, _n.waiting_on)
_MY_NODE = _NODE_COLUMNS.where(_n.group_id == bindparam("gid"), _n.name == bindparam("node"))
_MY_NODES_AND = _NODE_COLUMNS.where(_n.group_id == bindparam("gid"), or_(
    _n.name == bindparam("node"), _n.role.in_(bindparam("roles", expanding=True))))
_ROLES = select(_n.role).where(_n.group_id == bindparam("gid")).distinct()
_MY_MESSAGE = select(_m.data).where(_m.group_id == bindparam("gid"), _m.message_id == bindparam("mid"),
                                    _m.node == bindparam("node"))
_MY_SYNC = select(_y.reached, _y.told, _y.call).where(_y.group_id == bindparam("gid"), _y.sync_id == bindparam("sid"),
                                                      _y.node == bindparam("node"))
_INSERT_MESSAGE = insert(JobMessage.__table__)
# A node arrives at a barrier: its first arrival, or a later generation.
_FIRST_ARRIVAL = insert(JobSync.__table__).values(group_id=bindparam("g"), sync_id=bindparam("sid"), node=bindparam("n"),
                                                  reached=bindparam("r"), told=0, call=bindparam("c"), at=bindparam("a"))
_ARRIVE = (update(JobSync.__table__).where(_y.group_id == bindparam("g"), _y.sync_id == bindparam("sid"),
                                           _y.node == bindparam("n"))
           .values(reached=bindparam("r"), call=bindparam("c"), at=bindparam("a")))
_REACHED = select(func.count()).where(_y.group_id == bindparam("gid"), _y.sync_id == bindparam("sid"),
                                      _y.reached >= bindparam("gen"))
_NODE_COUNT = select(func.count()).where(_n.group_id == bindparam("gid"))
# A sign of life: last_seen, and waiting_on and state when the parameters carry them.
_SEEN = update(JobNode.__table__).where(_n.group_id == bindparam("gid"), _n.name == bindparam("node"))
# A node's place, one query: the group, its space, and the node's role (None: no such node).
_PLACE = (select(_g.id, _sp.name, _n.role).select_from(JobGroup.__table__.join(Space.__table__, _sp.id == _g.space_id))
          .outerjoin(JobNode.__table__, and_(_n.group_id == _g.id, _n.name == bindparam("node")))
          .where(_g.name == bindparam("group")))
DEFAULT_EXPIRES = timedelta(hours=4)


def problem_of(exc: core.JobError) -> Problem:
    extra = {"nodes": list(exc.nodes)} if exc.nodes else {}
    return Problem(exc.status, exc.slug, exc.detail, **extra)


def _duration(value: str | None, what: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value, caveat=what)
    except CaveatError as exc:
        raise bad_request(f"{what}: {exc.detail}", "invalid-job-request") from None


def check_group_name(name: str) -> str:
    """A group name is the target of ``job:`` scopes, so it follows their rule."""
    try:
        parse_scope(f"job:{name}")
        if name == "me":
            raise CaveatError("scopes", "reserved")  # /api/v1/jobs/me is the caller's own node
    except CaveatError:
        raise bad_request(f"group name {name!r} is invalid: use 1-64 lowercase letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit", "invalid-job-request") from None
    return name


def _ts(t: datetime | None) -> float | None:
    return t.timestamp() if t is not None else None


@dataclass(frozen=True)
class Place:
    """A node of a group, resolved and authorized."""

    group_id: int
    group: str
    space: str
    node: str
    role: str


JOINED = "joined"  # the topic of a node's first sign of life


def topic_of(wait: core.Wait) -> str:
    """What a wait listens for: a barrier's completion, a message id, the group joining."""
    if isinstance(wait, core.Sync):
        return f"sync:{wait.id}"
    if isinstance(wait, core.Joined):
        return JOINED
    return f"msg:{wait.id}"


class Waker:
    """One asyncio event per group and topic (:func:`topic_of`), set (and replaced)
    when that topic changes; a change to the group itself (a node failed or
    finished, the group was cancelled) sets every topic of the group. So a node
    joining does not wake a thousand nodes held at a barrier. A waiter takes the
    event *before* reading the group, so a change between its read and its wait is
    never missed. Only touched from the event loop."""

    def __init__(self) -> None:
        self._events: dict[str, dict[str, asyncio.Event]] = {}
        # (group, topic) -> (event, snapshot task, outcomes): see job.api._shared_snapshot
        self.shared: dict[tuple[str, str], tuple[asyncio.Event, Any, dict]] = {}
        self.closing = False  # the hub is stopping: held waits answer now

    def event(self, group: str, topic: str) -> asyncio.Event:
        topics = self._events.setdefault(group, {})
        ev = topics.get(topic)
        if ev is None:
            ev = topics[topic] = asyncio.Event()
        return ev

    def waiting(self, group: str, topic: str) -> bool:
        """Are waits held on ``topic`` of ``group``? (A hint, read from any thread.)"""
        return topic in self._events.get(group, ())

    def notify(self, group: str, topic: str | None = None, snap: core.Snapshot | None = None) -> None:
        """``topic`` changed in ``group``; None: the group itself changed. ``snap``: the
        topic's snapshot as the change committed it, which its waiters then share
        instead of reading the group again."""
        topics = self._events.get(group)
        if topics is None:
            return
        if topic is None:
            fired = self._events.pop(group)
        else:
            ev = topics.pop(topic, None)
            fired = {topic: ev} if ev is not None else {}
            if not topics:
                del self._events[group]
        for t, ev in fired.items():
            self.shared.pop((group, t), None)
            ev.set()
        if snap is not None and topic in fired:
            read = asyncio.get_running_loop().create_future()
            read.set_result(snap)
            self.shared[(group, topic)] = (self.event(group, topic), read, {})

    def notify_all(self) -> None:
        for group in list(self._events):
            self.notify(group)

    def close(self) -> None:
        """The hub is shutting down: answer every held wait now (its node asks again,
        of this hub once it is back or of another replica), so stopping takes no 25 s."""
        self.closing = True
        self.notify_all()


class JobService:
    def __init__(self, db: Database, *, max_lifetime: timedelta, default_lifetime: timedelta):
        self.db = db
        self.max_lifetime = max_lifetime
        self.default_lifetime = default_lifetime
        # Told (after commit) of each change, as (group, topic or None, the topic's new
        # snapshot or None): the API wakes this replica's waiters with it; other replicas
        # hear of it by NOTIFY.
        self.wake: Callable[[str, str | None, core.Snapshot | None], None] = lambda group, topic, snap: None
        # Does this replica hold waits on (group, topic)? Then a send reads their snapshot
        # in its own transaction, and they answer from it without reading again.
        self.waiting: Callable[[str, str], bool] = lambda group, topic: False

    # ------------------------------------------------------------------ lookups

    def _group(self, s: Session, name: str, *, lock: bool = False) -> tuple[JobGroup, str]:
        q = select(JobGroup, Space.name).join(Space, Space.id == JobGroup.space_id).where(JobGroup.name == name)
        if lock:
            q = q.with_for_update(of=JobGroup)
        row = s.execute(q).first()
        if row is None:
            raise not_found(f"job group {name}")
        return row[0], row[1]

    def place(self, ctx: AuthContext | None, group: str, node: str) -> Place:
        """Resolve (and, for a caller, authorize) node ``node`` of ``group``. ``ctx`` is
        None for the LAVA listener, whose protocol has no credentials."""
        with self.db.connect() as conn:
            row = conn.execute(_PLACE, {"group": group, "node": node}).first()
        if row is None:
            raise not_found(f"job group {group}")
        group_id, space, role = row
        if ctx is not None:
            ctx.require("job.write", Resource(space=space, job=group, path=node))
        if role is None:
            raise not_found(f"node {node} of job group {group}")
        return Place(group_id, group, space, node, role)

    def whoami(self, ctx: AuthContext) -> dict[str, Any]:
        """The group and node a node token is for (its one ``job:GROUP/NODE`` scope)."""
        scopes = [sc for sc in (ctx.caveats.scopes or ()) if sc.kind == "job" and sc.prefix] if ctx.caveats else []
        if len(scopes) != 1:
            raise bad_request("this token is not a job node's token (one job:GROUP/NODE scope): "
                              "name the group and node, or use the token `tether job create` made", "not-a-node-token")
        p = self.place(ctx, scopes[0].target, scopes[0].prefix)
        with self.db.read() as s:
            nodes = s.execute(select(JobNode.name, JobNode.role).where(JobNode.group_id == p.group_id)).all()
        return {"group": p.group, "node": p.node, "role": p.role, "space": p.space,
                "nodes": {name: role for name, role in _ordered(dict(nodes)).items()}}

    def snapshot(self, group_id: int, *, messages: str | None = None, syncs: str | None = None,
                 s: Session | Connection | None = None, group: Any = None) -> core.Snapshot:
        """The group as the core sees it, with the messages of one id and the barrier of one id.
        ``group``: its row (:data:`_GROUP_ROW`), when the caller read it in this transaction."""
        if s is None:
            with self.db.connect() as conn:
                return self.snapshot(group_id, messages=messages, syncs=syncs, s=conn)
        g = group if group is not None else s.execute(_GROUP_ROW, {"gid": group_id}).one()
        # Columns, not ORM objects: a group of a thousand nodes is read on every arrival.
        nodes = {name: core.Node(name, role, state, reason, _ts(seen))
                 for name, role, state, reason, seen in s.execute(_NODES, {"gid": group_id})}
        snap = _snapshot_of(g, _ordered(nodes))
        if messages is not None:
            snap.messages[messages] = dict(s.execute(_MESSAGES, {"gid": group_id, "mid": messages}).all())
        if syncs is not None:
            rows = s.execute(_SYNCS, {"gid": group_id, "sid": syncs}).all()
            snap.syncs[syncs] = {node: reached for node, reached, _, _ in rows}
            snap.sync_told[syncs] = {node: (told, call) for node, _, told, call in rows}
        return snap

    def _partial(self, s: Session | Connection, place: Place, *, messages: str | None = None,
                 syncs: str | None = None, roles: bool = False, lock: bool = False) -> tuple[core.Snapshot, str, Any]:
        """The group as a decision about ``place``'s node needs it, what that node waits on,
        and the group's row: the node's own row and the essential roles' nodes (the only
        others :func:`core.group_failure` looks at), its own message ``messages`` and its
        own row of barrier ``syncs``, and the group's role names if ``roles``. Enough for
        :func:`core.send` and :func:`core.arrive`, not for :func:`core.evaluate`. With
        ``lock``, the group's row is locked first: changes to one group are serialized on
        every backend (SQLite: one writer at a time anyway). Statements built once: this
        is a send's path, and a wait's."""
        me = {"gid": place.group_id, "node": place.node}
        g = s.execute(_GROUP_ROW_LOCKED if lock else _GROUP_ROW, me).one()
        nodes: dict[str, core.Node] = {}
        waiting_on = ""
        rows = s.execute(_MY_NODES_AND, {**me, "roles": g.essential}) if g.essential else s.execute(_MY_NODE, me)
        for name, role, state, reason, seen, waits in rows:
            nodes[name] = core.Node(name, role, state, reason, _ts(seen))
            if name == place.node:
                waiting_on = waits
        snap = _snapshot_of(g, nodes)
        if roles:
            snap.role_names = frozenset(s.scalars(_ROLES, me))
        if messages is not None:
            data = s.scalar(_MY_MESSAGE, {**me, "mid": messages})
            snap.messages[messages] = {} if data is None else {place.node: data}
        if syncs is not None:
            row = s.execute(_MY_SYNC, {**me, "sid": syncs}).first()
            snap.syncs[syncs] = {} if row is None else {place.node: row[0]}
            snap.sync_told[syncs] = {} if row is None else {place.node: (row[1], row[2])}
        return snap, waiting_on, g

    def _all_reached(self, s: Connection, group_id: int, sync_id: str, generation: int) -> bool:
        """Has every node of the group reached ``generation`` of barrier ``sync_id``?"""
        reached = s.scalar(_REACHED, {"gid": group_id, "sid": sync_id, "gen": generation})
        return reached == s.scalar(_NODE_COUNT, {"gid": group_id})

    # ------------------------------------------------------------------ scheduling

    def create(self, ctx: AuthContext, name: str, space: str, roles: dict[str, int], nodes: dict[str, str],
               *, timeout: str | None, expires: str | None, essential: list[str], lost_after: str | None,
               ) -> dict[str, Any]:
        check_group_name(name)
        ctx.require("job.admin", Resource(space=space, job=name))
        try:
            plan = core.plan_nodes(name, list(roles.items()), list(nodes.items()))
        except core.JobError as exc:
            raise problem_of(exc) from None
        have = {r for _, r in plan}
        unknown = sorted(set(essential) - have)
        if unknown:
            raise bad_request(f"essential role(s) {', '.join(unknown)} are not roles of the group "
                              f"({', '.join(sorted(have))})", "invalid-job-request")
        now = utcnow()
        life = _duration(expires, "expires") or DEFAULT_EXPIRES
        ends = ctx.caveats.expires_at if ctx.caveats is not None else None
        if expires is None and ends is not None and ends < now + life:
            life = ends - now  # by default the nodes' tokens live as long as the scheduler's may
        if life > self.max_lifetime:
            raise bad_request(f"expires: {expires} is past this hub's maximum token lifetime", "invalid-job-request")
        wait = _duration(timeout, "timeout")
        lost = _duration(lost_after, "lost_after")
        taken = Problem(409, "conflict", f"job group {name} already exists; pick another name")
        try:
            # One transaction: the group, its nodes and their tokens stand or fall together,
            # so no token of a group that was never stored can outlive it (and later act
            # for a node of another group given the same name).
            with self.db.write() as s:
                space_id = s.scalar(select(Space.id).where(Space.name == space))
                if space_id is None:
                    raise not_found(f"space {space}")
                if s.scalar(select(JobGroup.id).where(JobGroup.name == name)) is not None:
                    raise taken
                g = JobGroup(name=name, space_id=space_id, created_by=ctx.user.name, created_at=now,
                             expires_at=now + life, deadline=now + wait if wait else None,
                             lost_after=lost.total_seconds() if lost else None, essential=sorted(set(essential)),
                             state="open", reason="")
                s.add(g)
                s.flush()  # a group of this name made meanwhile: IntegrityError before any token
                tokens = []
                for node, _role in plan:
                    req = MintRequest(scopes=[f"job:{name}/{node}"], expires=f"{int(life.total_seconds())}s",
                                      label=f"job {name} node {node}")
                    row, secret = auth.mint(self.db, ctx, req, now=now, max_lifetime=self.max_lifetime,
                                            default_lifetime=self.default_lifetime, session=s,
                                            job_spaces={name: space})
                    tokens.append((row.id, secret))
                s.flush()
                s.add_all([JobNode(group_id=g.id, name=n, role=r, token_id=t[0], state="pending", reason="",
                                   waiting_on="") for (n, r), t in zip(plan, tokens)])
        except IntegrityError:
            raise taken from None
        ctx.trail["reason"] = f"{len(plan)} nodes"
        return {
            "group": name, "space": space, "expires_at": auth.iso(now + life),
            "nodes": [{"node": n, "role": r, "token": t[1], "token_id": t[0]} for (n, r), t in zip(plan, tokens)],
        }

    def status(self, ctx: AuthContext, name: str) -> dict[str, Any]:
        with self.db.read() as s:
            g, space = self._group(s, name)
            ctx.require("job.read", Resource(space=space, job=name))
            nodes = list(s.scalars(select(JobNode).where(JobNode.group_id == g.id).order_by(JobNode.name)))
            msgs = list(s.scalars(select(JobMessage).where(JobMessage.group_id == g.id)
                                  .order_by(JobMessage.sent_at, JobMessage.message_id, JobMessage.node)))
            syncs = list(s.scalars(select(JobSync).where(JobSync.group_id == g.id)))
        snap = core.Snapshot(name, _ordered({n.name: core.Node(n.name, n.role, n.state, n.reason, _ts(n.last_seen))
                                             for n in nodes}),
                             state=g.state, reason=g.reason, essential=frozenset(g.essential or ()),
                             lost_after=g.lost_after, deadline=_deadline(g))
        now = utcnow().timestamp()
        over = core.group_failure(snap, now)
        messages: dict[str, dict[str, Any]] = {}
        for m in msgs:
            entry = messages.setdefault(m.message_id, {"id": m.message_id, "sent": {}})
            entry["sent"][m.node] = m.data
        for entry in messages.values():
            entry["not_sent"] = [n.name for n in nodes if n.name not in entry["sent"]]
        barriers: dict[str, dict[str, int]] = {}
        for y in syncs:
            barriers.setdefault(y.sync_id, {})[y.node] = y.reached
        out_barriers = []
        for sid, reached in sorted(barriers.items()):
            gen = max(reached.values())
            out_barriers.append({"id": sid, "generation": gen,
                                 "arrived": sorted(n for n, r in reached.items() if r >= gen),
                                 "awaited": [n.name for n in nodes if reached.get(n.name, 0) < gen]})
        return {
            "group": name, "space": space, "state": g.state if over is None or g.state != "open" else "ended",
            "reason": g.reason or (over.reason if over else ""), "created_by": g.created_by,
            "created_at": auth.iso(g.created_at), "expires_at": auth.iso(g.expires_at),
            "deadline": auth.iso(g.deadline), "essential": g.essential,
            "nodes": [{"node": n.name, "role": n.role, "state": n.state, "reason": n.reason,
                       "last_seen": auth.iso(n.last_seen), "waiting_on": n.waiting_on,
                       "gone": core.gone(snap, snap.nodes[n.name], now)} for n in nodes],
            "messages": list(messages.values()), "barriers": out_barriers,
        }

    def list(self, ctx: AuthContext, space: str | None) -> list[dict[str, Any]]:
        with self.db.read() as s:
            q = select(JobGroup, Space.name).join(Space, Space.id == JobGroup.space_id).order_by(JobGroup.created_at)
            if space is not None:
                q = q.where(Space.name == space)
            rows = list(s.execute(q))
            out = []
            for g, sp in rows:
                if not authorize(ctx.principal, "job.read", Resource(space=sp, job=g.name)).allowed:
                    continue  # list only what the caller could show
                count = s.scalar(select(func.count()).select_from(JobNode).where(JobNode.group_id == g.id))
                out.append({"group": g.name, "space": sp, "state": g.state, "nodes": count,
                            "created_at": auth.iso(g.created_at), "expires_at": auth.iso(g.expires_at)})
        return out

    def cancel(self, ctx: AuthContext, name: str, reason: str) -> dict[str, Any]:
        wakes: list = []
        with self.db.write() as s:
            g, space = self._group(s, name, lock=True)
            ctx.require("job.admin", Resource(space=space, job=name))
            if g.state == "open":
                g.state, g.reason = "cancelled", reason or f"cancelled by {ctx.user.name}"
                self._notify(s, name, None, wakes)
            out = {"group": name, "state": g.state, "reason": g.reason}
        self._wake(wakes)
        return out

    # ------------------------------------------------------------------ nodes

    def mark(self, ctx: AuthContext | None, place: Place, state: str, reason: str) -> dict[str, Any]:
        """A node reports itself (joined, done, failed), or the scheduler marks it."""
        if state not in ("joined", "done", "failed"):
            raise bad_request(f"a node's state is joined, done or failed, not {state!r}", "invalid-job-request")
        wakes: list = []
        with self.db.write() as s:
            g, _ = self._group(s, place.group, lock=True)
            n = s.get(JobNode, (g.id, place.node))
            if n.state in ("done", "failed") and state != n.state:
                raise Problem(409, "job-node-ended", f"node {place.node} already {n.state}; it cannot become {state}")
            n.state, n.reason, n.last_seen = state, reason[:500], utcnow()
            if state == "failed" and n.role in (g.essential or ()) and g.state == "open":
                g.state, g.reason = "ended", f"essential role {n.role!r}: {place.node} failed" + (
                    f" ({reason})" if reason else "")
            self._notify(s, place.group, None, wakes)
        self._wake(wakes)
        return {"group": place.group, "node": place.node, "state": state}

    def send(self, place: Place, msg_id: str, data: Any) -> dict[str, Any]:
        """Store a message: one short transaction of a few Core statements (the group's
        row locked and read, this node's row and message, the insert). When this replica
        holds waits on the message, their snapshot is read in the same transaction, so
        they answer the moment it commits without reading again."""
        try:
            data = core.check_message(data)
        except core.JobError as exc:
            raise problem_of(exc) from None
        wakes: list = []
        topic = f"msg:{msg_id}"
        with self.db.write_connection() as conn:
            snap, _, group = self._partial(conn, place, messages=msg_id, lock=True)
            now = utcnow()
            try:
                new = core.send(snap, place.node, msg_id, data, now.timestamp())
            except core.JobError as exc:
                raise problem_of(exc) from None
            self._seen(conn, place, snap, now, wakes)
            if new:
                conn.execute(_INSERT_MESSAGE, {"group_id": place.group_id, "message_id": msg_id,
                                               "node": place.node, "data": data, "sent_at": now})
                after = (self.snapshot(place.group_id, messages=msg_id, s=conn, group=group)
                         if self.waiting(place.group, topic) else None)
                self._notify(conn, place.group, topic, wakes, after)
        self._wake(wakes)
        return {"id": msg_id, "node": place.node, "stored": new}

    def begin(self, place: Place, kind: str, msg_id: str, role: str | None, generation: int | None,
              call: str | None = None) -> tuple[core.Wait, bool]:
        """Start (or resume) a wait: validate it, arrive at a barrier, note what the node waits on.
        Also says whether this changed what status shows (an arrival, a first sign of life,
        a new wait); a wait asked again changes at most the node's last sign of life."""
        try:
            if kind != "joined":
                core.check_name("sync id" if kind == "sync" else "message id", msg_id)
            if role is not None:
                core.check_name("role", role)
        except core.JobError as exc:
            raise problem_of(exc) from None
        # A long-poll asked again (every hold, by every waiter) changes nothing but the
        # node's last sign of life: decide that on a read, and write only when something
        # changes (an arrival, a join, a stale last_seen, another wait), so a thousand
        # waiters re-polling do not queue a thousand writes.
        sync_id = msg_id if kind == "sync" else None
        with self.db.connect() as conn:
            snap, waiting_on, _ = self._partial(conn, place, syncs=sync_id, roles=kind == "all")
        now = utcnow()
        wait, shown, arrived = self._decide(snap, place, kind, msg_id, role, generation, call, now)
        me = snap.nodes[place.node]
        if not arrived and me.state != "pending" and waiting_on == shown and not self._stale(snap, me, now):
            return wait, False
        wakes: list = []
        with self.db.write_connection() as s:
            snap, waiting_on, _ = self._partial(s, place, syncs=sync_id, roles=kind == "all", lock=True)
            wait, shown, arrived = self._decide(snap, place, kind, msg_id, role, generation, call, now)
            if arrived:
                mine = {"g": place.group_id, "sid": msg_id, "n": place.node, "r": wait.generation, "c": call or "",
                        "a": now}
                # _partial read this node's row of the barrier with the group locked: it has one or not
                s.execute(_ARRIVE if place.node in snap.syncs[msg_id] else _FIRST_ARRIVAL, mine)
                # Only the arrival that completes the barrier wakes its waiters: a thousand
                # arrivals waking a thousand waiters each would be a million wake-ups.
                # (arrive() refused an ended group, so everyone reaching it is completion.)
                if self._all_reached(s, place.group_id, msg_id, wait.generation):
                    self._notify(s, place.group, topic_of(wait), wakes)
            joined = self._seen(s, place, snap, now, wakes, waiting_on=shown)
        self._wake(wakes)
        return wait, arrived or joined or waiting_on != shown

    @staticmethod
    def _decide(snap: core.Snapshot, place: Place, kind: str, msg_id: str, role: str | None,
                generation: int | None, call: str | None, now: datetime) -> tuple[core.Wait, str, bool]:
        """The wait a request asks for, how status shows it, and whether it arrives at a barrier."""
        arrived = False
        try:
            if kind == "sync":
                gen, arrived = core.arrive(snap, place.node, msg_id, generation, now.timestamp(), call)
                return core.Sync(msg_id, gen), f"sync {msg_id} #{gen}", arrived
            if kind == "all":
                core.check_role(snap, role)
                return core.WaitAll(msg_id, role), f"wait-all {msg_id}" + (f" {role}" if role else ""), False
            if kind == "any":
                return core.WaitAny(msg_id), f"wait {msg_id}", False
            if kind == "joined":
                return core.Joined(), "the group to join", False
            raise core.Invalid(f"a wait is any, all, sync or joined, not {kind!r}")
        except core.JobError as exc:
            raise problem_of(exc) from None

    @staticmethod
    def _stale(snap: core.Snapshot, node: core.Node, now: datetime) -> bool:
        """Is the node's last sign of life old enough to write again? Often enough for the
        group's lost_after to see it alive (a third of it), else every 60 s (for status)."""
        every = snap.lost_after / 3 if snap.lost_after else 60.0
        return node.last_seen is None or now.timestamp() - node.last_seen > every

    def end(self, place: Place, finished: bool, told: core.Sync | None = None) -> None:
        """A long-poll answers: the node was alive until now; clear its wait when it ended,
        and remember a barrier's completion was told (its next sync is a new one). A
        pending answer writes nothing: the node asks again, and that is its sign of life."""
        self.end_many([(place, finished, told)])

    def end_many(self, ends: list[tuple[Place, bool, core.Sync | None]]) -> None:
        """:meth:`end` for many answers in one transaction (a released barrier's)."""
        done = [(place, told) for place, finished, told in ends if finished]
        if not done:
            return
        n_, y_ = JobNode.__table__, JobSync.__table__
        with self.db.write() as s:
            conn = s.connection()
            conn.execute(n_.update().where(n_.c.group_id == bindparam("g"), n_.c.name == bindparam("n"))
                         .values(last_seen=utcnow(), waiting_on=""),
                         [{"g": place.group_id, "n": place.node} for place, _ in done])
            told = [{"g": place.group_id, "n": place.node, "sid": w.id, "gen": w.generation}
                    for place, w in done if w is not None]
            if told:
                conn.execute(y_.update().where(y_.c.group_id == bindparam("g"), y_.c.sync_id == bindparam("sid"),
                                               y_.c.node == bindparam("n"), y_.c.told < bindparam("gen"))
                             .values(told=bindparam("gen")), told)

    def _seen(self, s: Session | Connection, place: Place, snap: core.Snapshot, now: datetime, wakes: list, *,
              waiting_on: str | None = None) -> bool:
        """Note a sign of life, in one statement; True when it is the node's first (it joined:
        waiters may care). ``snap`` was read with the group's row locked, so its word on the
        node's state holds."""
        joined = snap.nodes[place.node].state == "pending"
        values: dict[str, Any] = {"gid": place.group_id, "node": place.node, "last_seen": now}
        if waiting_on is not None:
            values["waiting_on"] = waiting_on
        if joined:
            values["state"] = "joined"
        s.execute(_SEEN, values)
        if joined:
            self._notify(s, place.group, JOINED, wakes)
        return joined

    def _notify(self, s: Session | Connection, group: str, topic: str | None, wakes: list,
                snap: core.Snapshot | None = None) -> None:
        """Wake the waiters of ``topic`` (None: all of the group's) once this transaction
        commits: on other replicas by NOTIFY (PostgreSQL delivers it at commit, and not at
        all on rollback), on this one by :meth:`_wake` after the commit, handing them
        ``snap`` (the topic as this transaction leaves it) when it was read."""
        if self.db.dialect == "postgresql":
            s.execute(text("SELECT pg_notify(:c, :g)"),
                      {"c": NOTIFY_CHANNEL, "g": group if topic is None else f"{group}\t{topic}"})
        wakes.append((group, topic, snap))

    def _wake(self, wakes: list) -> None:
        for group, topic, snap in wakes:
            self.wake(group, topic, snap)

def _snapshot_of(g: JobGroup, nodes: dict[str, core.Node]) -> core.Snapshot:
    return core.Snapshot(g.name, nodes, state=g.state, reason=g.reason, essential=frozenset(g.essential or ()),
                         lost_after=g.lost_after, deadline=_deadline(g))


def _deadline(g: JobGroup) -> float:
    """The group's timeout, or its expiry (when its tokens stop working) if that comes first."""
    return min(t.timestamp() for t in (g.deadline, g.expires_at) if t is not None)


def _ordered(nodes: dict[str, Any]) -> dict[str, Any]:
    """Nodes in their creation order (GROUP.0, GROUP.1, … GROUP.10), not string order."""
    def key(name: str):
        head, _, tail = name.rpartition(".")
        return (head, int(tail)) if tail.isdigit() else (name, -1)
    return dict(sorted(nodes.items(), key=lambda kv: key(kv[0])))
