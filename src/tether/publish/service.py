"""Publishing on the hub: blobs in, manifests committed atomically, files out.

The order of trust: a client's digest is a claim until the store has hashed the
bytes itself; a build is invisible until its one commit transaction lands; a
"you already have it" answer pins the blob (``leased_until``) so garbage
collection can't take it before that commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tether.auth.policy import Resource, authorize
from tether.auth.service import AuthContext, check_draw, draw_budget, iso
from tether.blobs import BlobTooLarge, DigestMismatch
from tether.config import HubSettings, PublishType
from tether.db import Database
from tether.db.models import Blob, Build, BuildFile, Latest, Space, Upload
from tether.hub.errors import Problem, bad_request, conflict, not_found
from tether.publish.core import (
    DIGEST_RE,
    PathError,
    build_prefix,
    validate_manifest,
    validate_path,
)

MAX_MISSING_QUERY = 10_000
UPLOAD_EXPIRY = timedelta(days=1)
BATCH_MAX_BLOB = 16 << 20


@dataclass
class Target:
    """Where a build goes: its space row, type, id and path prefix in the space."""

    space_id: int
    space: str
    type: str
    build_id: str
    prefix: str
    config: PublishType
    space_public: bool = False

    def default_public(self) -> bool:
        """The type's setting if it has one, else the space's."""
        return self.config.public if self.config.public is not None else self.space_public


class Publisher:
    def __init__(self, settings: HubSettings, db: Database, store):
        self.settings = settings
        self.db = db
        self.store = store
        self.uploads_dir = settings.data_dir / "uploads"

    # ------------------------------------------------------------ authorization

    def target(self, ctx: AuthContext, space: str, build_type: str, build_id: str, action="publish.write") -> Target:
        try:
            config = self.settings.publish_types.get(build_type) or PublishType()
            prefix = build_prefix(config.path, build_type, build_id)
        except PathError as exc:
            raise bad_request(str(exc), "invalid-path") from None
        with self.db.read() as s:
            sp = s.scalar(select(Space).where(Space.name == space))
        # Authorize before revealing whether the space exists.
        ctx.require(action, Resource(space=space, path=prefix))
        if sp is None:
            raise not_found(f"space {space}")
        return Target(sp.id, space, build_type, build_id, prefix, config, sp.public_builds)

    # ------------------------------------------------------------ blobs

    def missing(self, ctx: AuthContext, t: Target, digests: list[str], *, now: datetime) -> dict:
        if len(digests) > MAX_MISSING_QUERY:
            raise bad_request(f"ask about at most {MAX_MISSING_QUERY} digests per request; split the list")
        for d in digests:
            if not isinstance(d, str) or not DIGEST_RE.match(d):
                raise bad_request(f"{str(d)[:80]!r} is not a sha256 digest (64 lowercase hex characters)", "invalid-digest")
        wanted = list(dict.fromkeys(digests))
        lease = now + timedelta(seconds=self.settings.blob_lease_seconds)
        present: set[str] = set()
        with self.db.write() as s:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                present.update(s.scalars(select(Blob.digest).where(Blob.digest.in_(chunk))))
                # Pin what we say is present until the lease ends (or the build commits).
                s.execute(
                    update(Blob).where(Blob.digest.in_(chunk), Blob.leased_until < lease).values(leased_until=lease)
                )
        return {"missing": [d for d in wanted if d not in present], "lease_seconds": self.settings.blob_lease_seconds}

    def _check_bytes(self, ctx: AuthContext, nbytes: int) -> None:
        if ctx.token is not None and nbytes:
            check_draw(self.db, ctx.token, files=0, nbytes=nbytes)

    def write_blob(self, ctx: AuthContext, digest: str, chunks: Iterable[bytes], *, declared: int | None, now: datetime) -> int:
        """Store one blob from a stream of chunks; the store verifies the digest."""
        if declared is not None:
            if declared > self.settings.max_blob_bytes:
                raise Problem(413, "blob-too-large", f"files are limited to {self.settings.max_blob_bytes} bytes")
            self._check_bytes(ctx, declared)
        size = self._store_one(digest, chunks, declared=declared, max_size=self.settings.max_blob_bytes, durable=True)
        self._record_blobs([(digest, size)], now)
        return size

    def _store_one(self, digest: str, chunks: Iterable[bytes], *, declared: int | None, max_size: int,
                   durable: bool) -> int:
        if not DIGEST_RE.match(digest):
            raise bad_request(f"{digest[:80]!r} is not a sha256 digest (64 lowercase hex characters)", "invalid-digest")
        writer = self.store.writer(digest, max_size=max_size, durable=durable)
        try:
            for chunk in chunks:
                writer.write(chunk)
            if declared is not None and writer.size != declared:
                raise bad_request(
                    f"the upload was truncated: {writer.size} of {declared} bytes arrived for {digest}; "
                    "nothing of it was stored",
                    "truncated-upload",
                )
            return writer.commit()
        except DigestMismatch as exc:
            writer.abort()
            raise bad_request(f"blob {digest}: {exc}; nothing was stored", "blob-digest-mismatch") from None
        except BlobTooLarge:
            writer.abort()
            raise Problem(413, "blob-too-large", f"blobs of this kind are limited to {max_size} bytes") from None
        except BaseException:
            writer.abort()
            raise

    def _record_blobs(self, blobs: list[tuple[str, int]], now: datetime) -> None:
        """Say the blobs exist (only once they are durable), pinned for the lease."""
        if not blobs:
            return
        lease = now + timedelta(seconds=self.settings.blob_lease_seconds)
        sizes = dict(blobs)
        with self.db.write() as s:
            keys = list(sizes)
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                known = set(s.scalars(select(Blob.digest).where(Blob.digest.in_(chunk))))
                s.execute(update(Blob).where(Blob.digest.in_(chunk), Blob.leased_until < lease).values(leased_until=lease))
                fresh = [{"digest": d, "size": sizes[d], "created_at": now, "leased_until": lease} for d in chunk if d not in known]
                if fresh:
                    s.execute(Blob.__table__.insert(), fresh)

    def write_batch(self, ctx: AuthContext, frames: Iterator[tuple[str, int, Iterator[bytes]]], *, now: datetime) -> list[str]:
        """Store many small blobs sent in one request (see docs/publish.md for the framing).

        The blobs are written without a sync each; one filesystem sync then makes the
        whole batch durable before one transaction records it, so a recorded blob is
        always a durable blob, at a fraction of the cost of syncing every small file."""
        written: list[tuple[str, int]] = []
        try:
            for digest, size, body in frames:
                if size > BATCH_MAX_BLOB:
                    raise bad_request(f"blobs in a batch are limited to {BATCH_MAX_BLOB} bytes; send {digest} alone")
                written.append((digest, self._store_one(digest, body, declared=size, max_size=BATCH_MAX_BLOB,
                                                        durable=False)))
        finally:
            # Even when a later frame is refused, the good ones before it are kept and known.
            if written:
                self.store.sync()
                self._record_blobs(written, now)
        self._check_bytes(ctx, sum(size for _, size in written))
        return [d for d, _ in written]

    # ------------------------------------------------------------ resumable uploads

    def start_upload(self, ctx: AuthContext, t: Target, digest: str, size: int, *, now: datetime) -> dict:
        if not DIGEST_RE.match(digest):
            raise bad_request(f"{digest[:80]!r} is not a sha256 digest", "invalid-digest")
        if size < 0 or size > self.settings.max_blob_bytes:
            raise Problem(413, "blob-too-large", f"files are limited to {self.settings.max_blob_bytes} bytes")
        self._check_bytes(ctx, size)
        upload_id = secrets.token_hex(16)
        self.uploads_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.uploads_dir / upload_id).touch(mode=0o600)
        with self.db.write() as s:
            s.add(Upload(id=upload_id, digest=digest, size=size, user=ctx.user.name,
                         token_id=ctx.token.id if ctx.token else None, space=t.space, created_at=now))
        return {"id": upload_id, "offset": 0, "size": size}

    def _upload(self, ctx: AuthContext, upload_id: str) -> tuple[Upload, Path]:
        if not (len(upload_id) == 32 and all(c in "0123456789abcdef" for c in upload_id)):
            raise bad_request("not an upload id")
        with self.db.read() as s:
            up = s.get(Upload, upload_id)
        if up is None or up.user != ctx.user.name:
            raise not_found(f"upload {upload_id}")
        return up, self.uploads_dir / upload_id

    def upload_status(self, ctx: AuthContext, upload_id: str) -> dict:
        up, path = self._upload(ctx, upload_id)
        offset = path.stat().st_size if path.exists() else 0
        return {"id": up.id, "offset": offset, "size": up.size, "complete": False}

    def upload_chunk(self, ctx: AuthContext, upload_id: str, offset: int, chunks: Iterable[bytes], *, now: datetime) -> dict:
        import os

        up, path = self._upload(ctx, upload_id)
        have = path.stat().st_size if path.exists() else 0
        if offset != have:
            raise Problem(409, "wrong-offset", f"the upload has {have} bytes; send the chunk at offset {have}", offset=have)
        # No fsync per chunk: after a crash the file's size says where to resume, and the
        # final digest check refuses anything a crash could have garbled.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            written = have
            for chunk in chunks:
                written += len(chunk)
                if written > up.size:
                    os.ftruncate(fd, have)  # drop this chunk: the upload stays as it was
                    raise bad_request(f"the upload is {up.size} bytes; this chunk goes past the end")
                os.write(fd, chunk)
        finally:
            os.close(fd)
        if written < up.size:
            return {"id": up.id, "offset": written, "size": up.size, "complete": False}

        try:
            adopt = getattr(self.store, "adopt", None)
            if adopt is not None:  # filesystem store: link the file in, no second copy
                try:
                    adopt(up.digest, path)
                except DigestMismatch as exc:
                    raise bad_request(f"blob {up.digest}: {exc}; nothing was stored; start the upload again",
                                      "blob-digest-mismatch") from None
                self._record_blobs([(up.digest, up.size)], now)
            else:
                def read():
                    with open(path, "rb") as fh:
                        while block := fh.read(1 << 20):
                            yield block

                self.write_blob(ctx, up.digest, read(), declared=up.size, now=now)
        finally:
            path.unlink(missing_ok=True)
            with self.db.write() as s:
                s.execute(delete(Upload).where(Upload.id == up.id))
        return {"id": up.id, "offset": up.size, "size": up.size, "complete": True}

    # ------------------------------------------------------------ commit

    def commit(self, ctx: AuthContext, t: Target, files: list[dict], *, public: bool | None, latest: bool,
               now: datetime) -> dict:
        try:
            entries = validate_manifest(files)
        except PathError as exc:
            raise bad_request(f"the manifest is not valid: {exc}; nothing was published", "invalid-manifest") from None
        full_paths = [f"{t.prefix}/{e.path}" for e in entries]
        # A token scoped below the build's prefix must cover every file.
        if not authorize(ctx.principal, "publish.write", Resource(space=t.space, path=t.prefix)).allowed:
            for p in full_paths:
                ctx.require("publish.write", Resource(space=t.space, path=p))
        digests = {e.digest: e.size for e in entries}
        total = sum(e.size for e in entries)
        with self.db.write() as s:
            known: dict[str, int] = {}
            keys = list(digests)
            for i in range(0, len(keys), 500):
                known.update(s.execute(select(Blob.digest, Blob.size).where(Blob.digest.in_(keys[i : i + 500]))).all())
            absent = [d for d in digests if d not in known]
            if absent:
                raise bad_request(
                    f"{len(absent)} blob(s) named by the manifest were never uploaded (e.g. {', '.join(absent[:5])}); "
                    "upload them first; nothing was published",
                    "missing-blobs", missing=absent[:100],
                )
            wrong = [d for d, size in digests.items() if known[d] != size]
            if wrong:
                raise bad_request(f"the manifest gives the wrong size for {', '.join(wrong[:5])}", "invalid-manifest")
            existing = s.scalar(
                select(Build).where(Build.space_id == t.space_id, Build.type == t.type, Build.build_id == t.build_id)
            )
            if existing is not None:
                if not t.config.overwrite:
                    raise conflict(
                        f"build {t.build_id} of type {t.type} already exists in {t.space}; publish under a new id "
                        "(this type does not allow overwriting)"
                    )
                s.delete(existing)
                s.flush()
            self._refuse_nesting(s, t)
            if ctx.token is not None:
                draw_budget(s, ctx.token, files=len(entries), nbytes=total)
            build = Build(
                space_id=t.space_id, type=t.type, build_id=t.build_id, path=t.prefix,
                public=t.default_public() if public is None else public, user=ctx.user.name,
                token_id=ctx.token.id if ctx.token else None, files=len(entries), bytes=total, created_at=now,
            )
            s.add(build)
            try:
                s.flush()
            except IntegrityError:
                raise conflict(f"build {t.build_id} was published concurrently; publish under a new id") from None
            s.execute(
                BuildFile.__table__.insert(),
                [{"build": build.id, "path": e.path, "digest": e.digest, "size": e.size, "mode": e.mode} for e in entries],
            )
            if latest:
                s.merge(Latest(space_id=t.space_id, type=t.type, build=build.id))
        return {
            "space": t.space, "type": t.type, "build": t.build_id, "path": t.prefix, "files": len(entries),
            "bytes": total, "public": build.public, "url": f"/files/{t.space}/{t.prefix}/",
        }

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

    # ------------------------------------------------------------ downloads

    def resolve(self, ctx: AuthContext | None, space: str, path: str) -> dict:
        """What ``/files/SPACE/PATH`` names: a file, a directory listing, or nothing."""
        path = path.strip("/")
        if path:
            try:
                validate_path(path)
            except PathError as exc:
                raise bad_request(str(exc), "invalid-path") from None
        with self.db.read() as s:
            sp = s.scalar(select(Space).where(Space.name == space))
            if sp is None:
                raise not_found(f"{space}/{path}")
            segs = path.split("/") if path else []
            candidates = ["/".join(segs[:i]) for i in range(1, len(segs) + 1)]
            build = None
            if candidates:
                build = s.scalar(select(Build).where(Build.space_id == sp.id, Build.path.in_(candidates)))
            if build is None and "latest" in segs[1:]:
                # TYPE_PATH/latest/REST follows the type's latest pointer.
                i = segs.index("latest", 1)
                build = self._latest(s, sp.id, "/".join(segs[:i]))
                if build is not None:
                    path = "/".join([build.path, *segs[i + 1 :]])
            if build is not None:
                self._may_read(ctx, space, build, path)
                rest = path[len(build.path) + 1 :] if len(path) > len(build.path) else ""
                if rest:
                    f = s.get(BuildFile, (build.id, rest))
                    if f is not None:
                        return {"kind": "file", "digest": f.digest, "size": f.size, "mode": f.mode, "path": path}
                under = rest + "/" if rest else ""
                rows = s.execute(
                    select(BuildFile.path, BuildFile.size, BuildFile.digest).where(
                        BuildFile.build == build.id, BuildFile.path.like(_like_prefix(under), escape="\\")
                    )
                ).all()
                if not rows:
                    raise not_found(f"{space}/{path}")
                return {"kind": "dir", "path": path, "entries": _entries(rows, under)}
            # Above any build: list the next path segment of the builds the caller may see.
            under = path + "/" if path else ""
            rows = s.execute(
                select(Build).where(Build.space_id == sp.id, Build.path.like(_like_prefix(under), escape="\\"))
            ).scalars()
            visible = [b for b in rows if self._readable(ctx, space, b)]
            if not visible:
                raise not_found(f"{space}/{path}")
            names = sorted({b.path[len(under):].split("/")[0] for b in visible})
            return {"kind": "dir", "path": path, "entries": [{"name": n, "dir": True} for n in names]}

    def _latest(self, s: Session, space_id: int, type_path: str) -> Build | None:
        row = s.execute(
            select(Build).join(Latest, Latest.build == Build.id).where(Latest.space_id == space_id)
        ).scalars()
        for b in row:
            if b.path.rsplit("/", 1)[0] == type_path or b.type == type_path:
                return b
        return None

    def _readable(self, ctx: AuthContext | None, space: str, build: Build) -> bool:
        if build.public:
            return True
        return ctx is not None and authorize(ctx.principal, "publish.read", Resource(space=space, path=build.path)).allowed

    def _may_read(self, ctx: AuthContext | None, space: str, build: Build, path: str) -> None:
        if build.public:
            return
        if ctx is None:
            raise Problem(401, "unauthenticated", "this build is private: send a token with read access",
                          headers={"WWW-Authenticate": 'Bearer realm="tether"'})
        ctx.require("publish.read", Resource(space=space, path=path))

    # ------------------------------------------------------------ garbage collection

    def gc(self, ctx: AuthContext, *, now: datetime, dry_run: bool = False) -> dict:
        ctx.require("gc.run")
        from tether.auth.caveats import parse_duration

        grace = parse_duration(self.settings.gc_grace, caveat="gc_grace")
        removed_builds = self._apply_retention(now, dry_run)
        with self.db.read() as s:
            referenced = select(BuildFile.digest).where(BuildFile.digest == Blob.digest).exists()
            doomed = list(
                s.execute(
                    select(Blob.digest, Blob.size).where(
                        ~referenced, Blob.leased_until < now, Blob.created_at < now - grace
                    )
                ).all()
            )
        freed = 0
        deleted = 0
        for digest, size in doomed:
            if dry_run:
                deleted += 1
                freed += size
                continue
            with self.db.write() as s:
                # Re-check inside the transaction: a commit or a lease may have come since.
                gone = s.execute(
                    delete(Blob).where(
                        Blob.digest == digest, Blob.leased_until < now,
                        ~select(BuildFile.digest).where(BuildFile.digest == digest).exists(),
                    )
                ).rowcount
                if gone:
                    self.store.delete(digest)
                    deleted += 1
                    freed += size
        stale_uploads = 0 if dry_run else self._sweep_uploads(now)
        return {"builds_removed": removed_builds, "blobs_removed": deleted, "bytes_freed": freed,
                "uploads_removed": stale_uploads, "dry_run": dry_run}

    def _sweep_uploads(self, now: datetime) -> int:
        """Abandoned resumable uploads (a day without completing) and the store's stale temp files."""
        with self.db.write() as s:
            stale = list(s.scalars(select(Upload.id).where(Upload.created_at < now - UPLOAD_EXPIRY)))
            if stale:
                s.execute(delete(Upload).where(Upload.id.in_(stale)))
        for upload_id in stale:
            (self.uploads_dir / upload_id).unlink(missing_ok=True)
        self.store.sweep_tmp(older_than=3600)
        return len(stale)

    def _apply_retention(self, now: datetime, dry_run: bool) -> list[str]:
        removed: list[str] = []
        for type_name, cfg in self.settings.publish_types.items():
            if cfg.keep_last is None and cfg.keep_days is None:
                continue
            with self.db.write() as s:
                for space_id, space in s.execute(select(Space.id, Space.name)).all():
                    builds = list(s.scalars(
                        select(Build).where(Build.space_id == space_id, Build.type == type_name)
                        .order_by(Build.created_at.desc(), Build.id.desc())
                    ))
                    latest = s.scalar(select(Latest.build).where(Latest.space_id == space_id, Latest.type == type_name))
                    for i, b in enumerate(builds):
                        too_many = cfg.keep_last is not None and i >= cfg.keep_last
                        too_old = cfg.keep_days is not None and b.created_at < now - timedelta(days=cfg.keep_days)
                        if (too_many or too_old) and b.id != latest:
                            removed.append(f"{space}/{b.path}")
                            if not dry_run:
                                s.delete(b)
        return removed


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _entries(rows, under: str) -> list[dict]:
    dirs: set[str] = set()
    files = []
    for path, size, digest in rows:
        rest = path[len(under):]
        if "/" in rest:
            dirs.add(rest.split("/")[0])
        else:
            files.append({"name": rest, "dir": False, "size": size, "digest": digest})
    return [{"name": d, "dir": True} for d in sorted(dirs)] + sorted(files, key=lambda f: f["name"])


def build_info(b: Build, space: str) -> dict:
    return {"space": space, "type": b.type, "build": b.build_id, "path": b.path, "files": b.files,
            "bytes": b.bytes, "public": b.public, "user": b.user, "created_at": iso(b.created_at)}


__all__ = ["Publisher", "Target", "build_info", "func"]
