"""Builds committed atomically: a build is invisible until its one commit transaction
lands, every blob its manifest names proven in the space and pinned against gc; an
unchanged re-publish shares an earlier build's entries (``same_as``). Also the rules a
commit refuses by (a taken id, nesting paths), checked early where bytes would travel
for nothing."""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tether.auth.policy import Resource
from tether.auth.service import AuthContext, BudgetCheck, draw_budget
from tether.db.models import Blob, Build, BuildFile, Latest
from tether.problems import Problem, bad_request, conflict, not_found
from tether.publish.core import (
    DIGEST_RE,
    PathError,
    manifest_digest,
    validate_manifest,
    validate_path,
)
from tether.publish.storage import (
    PublisherBase,
    Target,
    _chunks,
    _later,
    _like_prefix,
    _proven_in,
    _sqlite_insert,
    _sqlite_max_params,
    _taken,
)


class Commits(PublisherBase):
    """Builds made visible: a manifest (or an earlier build's manifest digest) committed in
    one transaction, and everything a commit refuses."""

    def commit(self, ctx: AuthContext, t: Target, files: list[dict], *, public: bool | None, latest: bool,
               now: datetime) -> dict:
        try:
            entries = validate_manifest(files)
        except PathError as exc:
            raise bad_request(f"the manifest is not valid: {exc}; nothing was published", "invalid-manifest") from None
        digests = {e.digest: e.size for e in entries}
        total = sum(e.size for e in entries)
        with self.db.write() as s:
            conn = s.connection()  # plain rows: no ORM bookkeeping for 10,000 of them
            if self.db.dialect == "sqlite":
                # Writers are serialised (BEGIN IMMEDIATE): gc cannot delete a blob
                # between this read and the commit.
                absent, wrong = _sqlite_unproven(conn.connection, t.space_id, digests)
            else:
                absent, wrong = self._pin_named(conn, t.space_id, digests, now)
            if absent:
                raise bad_request(
                    f"{len(absent)} blob(s) named by the manifest were never uploaded for this space "
                    f"(e.g. {', '.join(absent[:5])}); upload them first (blobs/missing lists them); "
                    "nothing was published",
                    "missing-blobs", missing=absent[:100],
                )
            if wrong:
                raise bad_request(f"the manifest gives a size that is not the uploaded blob's for {len(wrong)} "
                                  f"digest(s) (e.g. {', '.join(wrong[:5])}): give each file's length in bytes; "
                                  "nothing was published", "invalid-manifest")
            manifest = manifest_digest([(e.path, e.digest, e.size, e.mode) for e in entries])
            build = self._new_build(s, ctx, t, files=len(entries), nbytes=total, public=public, now=now,
                                    manifest=manifest)
            twin = self._newest_with_manifest(s, t, manifest)
            if twin is None or not self._share_entries(s, build, twin.id):
                # The driver's own inserts: the rows need no type conversion, and for 10,000
                # of them SQLAlchemy's per-row parameter handling costs more than the inserts.
                insert = f"INSERT INTO {BuildFile.__tablename__} (build, path, digest, size, mode)"
                rows = [(build.id, e.path, e.digest, e.size, e.mode) for e in entries]
                if self.db.dialect == "sqlite":
                    with closing(conn.connection.cursor()) as cur:
                        _sqlite_insert(cur, insert, rows)
                else:
                    conn.exec_driver_sql(f"{insert} VALUES (%s, %s, %s, %s, %s)", rows)
            if latest:
                s.merge(Latest(space_id=t.space_id, type=t.type, build=build.id))
        return {
            "space": t.space, "type": t.type, "build": t.build_id, "path": t.prefix, "files": len(entries),
            "bytes": total, "public": build.public, "url": f"/files/{t.space}/{t.prefix}/",
        }

    def _pin_named(self, conn: Any, space_id: int, digests: dict[str, int], now: datetime) -> tuple[list[str], list[str]]:
        """Concurrent transactions (PostgreSQL): pin the named blobs proven in the space,
        so that a gc running meanwhile waits for this commit and then finds them leased
        (and referenced); a client that commits without asking blobs/missing first
        relies on it. Returns the digests not proven in the space, and those whose
        size is not the one named."""
        blobs_t = Blob.__table__
        lease = now + timedelta(seconds=self.settings.blob_lease_seconds)
        known: dict[str, int] = {}
        for chunk in _chunks(list(digests)):
            known.update(conn.execute(update(blobs_t).where(blobs_t.c.digest.in_(chunk),
                                                            _proven_in(space_id, blobs_t.c.digest))
                                      .values(leased_until=_later(blobs_t.c.leased_until, lease))
                                      .returning(blobs_t.c.digest, blobs_t.c.size)).all())
        absent = [d for d in digests if d not in known]
        return absent, [d for d, size in digests.items() if d in known and known[d] != size]

    def commit_same(self, ctx: AuthContext, t: Target, manifest: str, *, public: bool | None, latest: bool,
                    now: datetime) -> dict:
        """Publish a build with the same files as an earlier build of this space whose
        manifest digest (publish.core.manifest_digest) is ``manifest``: the new build
        shares that build's entries instead of receiving them again (an unchanged
        re-publish costs one row, not one per file). 404 ``unknown-manifest`` when no
        other build of the space has it: send the whole manifest instead.

        The entries were checked when that build was committed, and the blobs they name
        are proven in this space and kept by gc for as long as any build names them."""
        if not DIGEST_RE.match(manifest):
            raise bad_request("same_as must be a manifest digest: 64 lowercase hex characters", "invalid-manifest")
        with self.db.write() as s:
            self.refuse_taken(s, t)  # a taken id is the answer, whether or not the manifest is known
            source = self._newest_with_manifest(s, t, manifest)
            if source is None:
                raise Problem(404, "unknown-manifest",
                              f"no build of {t.space} has the manifest {manifest}; send the whole manifest")
            build = self._new_build(s, ctx, t, files=source.files, nbytes=source.bytes, public=public, now=now,
                                    manifest=manifest)
            if not self._share_entries(s, build, source.id):
                raise Problem(404, "unknown-manifest", f"the build with the manifest {manifest} was removed "
                              "meanwhile; send the whole manifest")
            if latest:
                s.merge(Latest(space_id=t.space_id, type=t.type, build=build.id))
        return {
            "space": t.space, "type": t.type, "build": t.build_id, "path": t.prefix, "files": build.files,
            "bytes": build.bytes, "public": build.public, "url": f"/files/{t.space}/{t.prefix}/", "same_as": source.path,
        }

    def _newest_with_manifest(self, s: Session, t: Target, manifest: str) -> Build | None:
        """The newest build of the space with this manifest digest, other than the one
        with t's id (which the commit is overwriting, or has just created). Not locked:
        :meth:`_share_entries` locks what it shares and notices a build gone meanwhile."""
        return s.scalar(select(Build).where(
            Build.space_id == t.space_id, Build.manifest == manifest,
            or_(Build.type != t.type, Build.build_id != t.build_id),
        ).order_by(Build.id.desc()).limit(1))

    def _share_entries(self, s: Session, build: Build, source_id: int) -> bool:
        """Let ``build`` use the entries (build_files rows) that build ``source_id``
        uses; False if that build is gone. The owner of the entries is read afresh (a
        deletion earlier in this transaction may have handed them on) and locked on
        PostgreSQL until the commit ends, so a concurrent deletion waits and then hands
        the entries on to this build too (see :meth:`_delete_build`)."""
        owner = s.scalar(select(func.coalesce(Build.files_of, Build.id)).where(Build.id == source_id))
        if owner is None:
            return False
        # (SQLite serialises writers already)
        if self.db.dialect != "sqlite" and s.scalar(
            select(Build.id).where(Build.id == owner).with_for_update(read=True)
        ) is None:
            return False
        build.files_of = owner
        s.flush()
        return True

    def _delete_build(self, s: Session, build: Build) -> None:
        """Delete a build. Builds that share its entries keep them: the oldest of them
        takes the rows over and the others follow it."""
        if self.db.dialect != "sqlite":
            # lock first: a commit sharing these entries finishes before they are handed on
            s.execute(select(Build.id).where(Build.id == build.id).with_for_update())
        heir = s.scalar(select(func.min(Build.id)).where(Build.files_of == build.id))
        if heir is not None:
            s.execute(update(BuildFile).where(BuildFile.build == build.id).values(build=heir),
                      execution_options={"synchronize_session": False})
            s.execute(update(Build).where(Build.files_of == build.id).values(files_of=heir),
                      execution_options={"synchronize_session": False})
            s.execute(update(Build).where(Build.id == heir).values(files_of=None),
                      execution_options={"synchronize_session": False})
        s.delete(build)
        s.flush()

    def _new_build(self, s: Session, ctx: AuthContext, t: Target, *, files: int, nbytes: int, public: bool | None,
               manifest: str, now: datetime) -> Build:
        """The build's row, inside the commit's transaction: refused if the id is taken
        (unless the type allows overwriting) or the path nests with another build, and
        the token's budget drawn."""
        existing = s.scalar(
            select(Build).where(Build.space_id == t.space_id, Build.type == t.type, Build.build_id == t.build_id)
        )
        if existing is not None:
            if not t.config.overwrite:
                raise _taken(t)
            self._delete_build(s, existing)
        self._refuse_nesting(s, t)
        if ctx.token is not None:
            draw_budget(s, ctx.token, files=files, nbytes=nbytes)
        build = Build(
            space_id=t.space_id, type=t.type, build_id=t.build_id, path=t.prefix,
            public=t.default_public() if public is None else public, user=ctx.user.name,
            token_id=ctx.token.id if ctx.token else None, files=files, bytes=nbytes, created_at=now, manifest=manifest,
        )
        s.add(build)
        try:
            s.flush()
        except IntegrityError:
            # another commit of this build id (on another replica, or thread) landed first:
            # the same answer as when it had landed before this one looked
            if not t.config.overwrite:
                raise _taken(t) from None
            raise conflict(f"build {t.build_id} was published concurrently; publish again to overwrite it") from None
        return build

    def refuse_taken(self, s: Session, t: Target) -> None:
        """A taken build id (unless the type allows overwriting), refused before any bytes
        travel for a build the commit would refuse; one indexed lookup. The commit checks
        again (a build may appear meanwhile)."""
        if not t.config.overwrite and s.scalar(select(Build.id).where(
                Build.space_id == t.space_id, Build.type == t.type, Build.build_id == t.build_id)) is not None:
            raise _taken(t)

    def check_single(self, ctx: AuthContext, t: Target, path: str, declared: int | None) -> BudgetCheck | None:
        """A one-file build (``PUT /api/v1/publish/...``): everything its commit would
        refuse, refused before the body is read; the caller's budget, to meter the body."""
        try:
            validate_path(path)
        except PathError as exc:
            raise bad_request(str(exc), "invalid-path") from None
        if declared is not None and declared > self.settings.max_blob_bytes:
            raise self.too_large()
        with self.db.read() as s:
            self.refuse_taken(s, t)
            self._refuse_nesting(s, t)
        budget = self.budget(ctx)
        if budget is not None:
            budget.need(files=1, nbytes=declared or 0)
        return budget

    def _refuse_nesting(self, s: Session, t: Target) -> None:
        """No build's path may sit inside another's (downloads resolve one build per path)."""
        parents = ["/".join(t.prefix.split("/")[:i]) for i in range(1, t.prefix.count("/") + 1)]
        clash = s.scalar(
            select(Build.path).where(
                Build.space_id == t.space_id,
                or_(Build.path.in_(parents or [""]), Build.path.like(_like_prefix(t.prefix + "/"), escape="\\")),
            ).limit(1)
        )
        if clash is not None:
            raise conflict(f"{t.prefix} would nest with the existing build at {clash}; pick another build id or type")

    def set_latest(self, ctx: AuthContext, t: Target) -> dict:
        ctx.require("publish.admin", Resource(space=t.space, path=t.prefix))
        with self.db.write() as s:
            build = s.scalar(
                select(Build).where(Build.space_id == t.space_id, Build.type == t.type, Build.build_id == t.build_id)
            )
            if build is None:
                raise not_found(f"build {t.build_id} of type {t.type} in {t.space}")
            s.merge(Latest(space_id=t.space_id, type=t.type, build=build.id))
        return {"space": t.space, "type": t.type, "latest": t.build_id}


def _sqlite_unproven(dbapi_conn: Any, space_id: int, digests: dict[str, int]) -> tuple[list[str], list[str]]:
    """The named digests not proven in the space, and those whose blob has another size
    than the one named. SQLite compares the lists itself and hands back only what is
    wrong (nothing, for a good manifest), not a row per digest."""
    items = list(digests.items())
    absent: list[str] = []
    wrong: list[str] = []
    with closing(dbapi_conn.cursor()) as cur:
        per = min(1000, (_sqlite_max_params(cur) - 1) // 2)
        for i in range(0, len(items), per):
            part = items[i : i + per]
            cur.execute(
                f"WITH named (digest, size) AS (VALUES {', '.join(['(?, ?)'] * len(part))}) "
                "SELECT named.digest, blobs.size = named.size FROM named LEFT JOIN blobs ON blobs.digest = named.digest "
                "AND EXISTS (SELECT 1 FROM space_blobs WHERE space_blobs.space_id = ? "
                "AND space_blobs.digest = named.digest) "
                "WHERE blobs.digest IS NULL OR blobs.size != named.size",
                [*chain.from_iterable(part), space_id],
            )
            for digest, same_size in cur.fetchall():
                (absent if same_size is None else wrong).append(digest)
    return absent, wrong
