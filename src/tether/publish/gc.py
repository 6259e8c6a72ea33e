"""Garbage collection: builds past their type's retention, blobs no build names whose lease
is over (one DELETE decides and deletes, so no commit or lease comes between), then
their files, half-empty packs, abandoned uploads and files left by a crash."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from tether.auth.service import AuthContext
from tether.db.models import Blob, Build, BuildFile, Latest, Space, Upload
from tether.publish.storage import (
    UPLOAD_EXPIRY,
    PublisherBase,
    _chunks,
    _lock_digests,
)


# Seconds after gc deleted a blob's object during which an upload recording the same digest
# checks that its object is there (S3). The window that matters runs from an upload's
# last write to its record: a batch's duration at most.
COLLECTED_WINDOW = 600.0


class Collector(PublisherBase):
    """Garbage collection: retention, unreferenced blobs whose lease is over, packs, abandoned
    uploads and files no row names."""

    def gc(self, ctx: AuthContext, *, now: datetime, dry_run: bool = False) -> dict:
        ctx.require("gc.run")
        from tether.auth.caveats import parse_duration

        grace = parse_duration(self.settings.gc_grace, caveat="gc_grace")
        removed_builds = self._apply_retention(now, dry_run)
        doomed = self._doomed(now, grace)
        if dry_run:
            with self.db.read() as s:
                found = s.execute(select(Blob.digest, Blob.size).where(*doomed)).all()
            return {"builds_removed": removed_builds, "blobs_removed": len(found),
                    "bytes_freed": sum(size for _, size in found), "uploads_removed": 0, "orphans_removed": 0,
                    "dry_run": True}
        # One DELETE decides and deletes in one write transaction: no commit or lease
        # can come between the check and the deletion.
        with self.db.write() as s:
            gone = s.execute(delete(Blob).where(*doomed).returning(Blob.digest, Blob.size, Blob.pack),
                             execution_options={"synchronize_session": False}).all()
        # Files only once their rows are gone for good: a failed transaction deletes nothing.
        self._delete_files([digest for digest, _, pack in gone if pack is None])
        deleted, freed = len(gone), sum(size for _, size, _ in gone)
        touched_packs = {pack for _, _, pack in gone if pack is not None}
        for pack in sorted(touched_packs):
            self._tidy_pack(pack)
        stale_uploads = self._sweep_uploads(now)
        orphans = self._sweep_loose(now)
        return {"builds_removed": removed_builds, "blobs_removed": deleted, "bytes_freed": freed,
                "uploads_removed": stale_uploads, "orphans_removed": orphans, "dry_run": False}

    def _doomed(self, now: datetime, grace: timedelta) -> tuple[Any, ...]:
        """What gc deletes: blobs no build names, whose lease is over, older than ``grace``.

        build_files has no index by digest (a commit's 10,000 rows would each add a
        random-keyed entry to one), so "no build names it" is one pass over build_files
        for all blobs at once, in the form each database plans that way: SQLite reads
        a NOT IN list into a temporary index once (a correlated NOT EXISTS it would run
        as a scan per blob); PostgreSQL turns NOT EXISTS into an anti-join (NOT IN over
        a list larger than its work_mem it would check row by row)."""
        if self.db.dialect == "sqlite":
            unreferenced = Blob.digest.not_in(select(BuildFile.digest))
        else:
            unreferenced = ~select(BuildFile.digest).where(BuildFile.digest == Blob.digest).exists()
        return unreferenced, Blob.leased_until < now, Blob.created_at < now - grace

    def _delete_files(self, digests: list[str]) -> int:
        """Delete the files of blobs whose rows gc deleted, unless an upload stored and
        recorded the digest again since (see :meth:`_claim_placed`); how many."""
        deleted = 0
        with self._collected_lock:  # forget what is past its window
            now = time.monotonic()
            self._collected = {d: until for d, until in self._collected.items() if until > now}
        for chunk in _chunks(digests, 200):
            with self._collected_lock:
                until = time.monotonic() + COLLECTED_WINDOW
                self._collected.update(dict.fromkeys(chunk, until))
            with self.db.write() as s:
                conn = s.connection()
                _lock_digests(conn, chunk)
                back = set(conn.execute(select(Blob.digest).where(Blob.digest.in_(chunk))).scalars())
                for digest in chunk:
                    if digest not in back:
                        deleted += self.store.delete(digest)
        return deleted

    def _sweep_loose(self, now: datetime) -> int:
        """Blob files that no row names, stored more than a day ago: left by a crash
        between storing and recording one, or between gc's two steps. Deleted as gc
        deletes, only where still no row names them; how many. (One pass over the whole
        store: a listing, and on a filesystem one stat per blob.)"""
        iter_aged = getattr(self.store, "iter_aged", None)
        if iter_aged is None:
            return 0
        cutoff = now.timestamp() - UPLOAD_EXPIRY.total_seconds()
        removed = 0
        old: list[str] = []

        def delete_unnamed() -> int:  # (a cheap read first: most files have rows)
            with self.db.read() as s:
                named = set(s.scalars(select(Blob.digest).where(Blob.digest.in_(old))))
            return self._delete_files([d for d in old if d not in named])

        for digest, changed in iter_aged():
            if changed < cutoff:
                old.append(digest)
                if len(old) == 1000:
                    removed += delete_unnamed()
                    old = []
        return removed + (delete_unnamed() if old else 0)

    def _tidy_pack(self, pack: str) -> None:
        """After blobs of ``pack`` were deleted: delete the pack when none is left; when
        less than half of its bytes are still live, copy those blobs out to files of
        their own (verified again on the way) and then delete it."""
        with self.db.read() as s:
            live = s.execute(select(Blob.digest, Blob.size, Blob.pack_offset).where(Blob.pack == pack)).all()
        if live:
            if 2 * sum(b.size for b in live) >= (self.store.pack_size(pack) or 0):
                return
            for b in live:
                self.store.put(b.digest, self.store.open_packed(b.digest, pack, b.pack_offset, b.size), max_size=b.size)
            with self.db.write() as s:
                for chunk in _chunks([b.digest for b in live]):
                    s.execute(update(Blob).where(Blob.pack == pack, Blob.digest.in_(chunk))
                              .values(pack=None, pack_offset=None), execution_options={"synchronize_session": False})
                if s.scalar(select(Blob.digest).where(Blob.pack == pack).limit(1)) is not None:
                    return
        self.store.delete_pack(pack)

    def _sweep_packs(self) -> None:
        """Packs no blob row names, an hour old: left by a crash between writing a pack
        and recording its blobs."""
        iter_packs = getattr(self.store, "iter_packs", None)
        if iter_packs is None:
            return
        cutoff = time.time() - 3600
        old = [name for name, mtime in iter_packs() if mtime < cutoff]
        if not old:
            return
        with self.db.read() as s:
            named = set(s.scalars(select(Blob.pack).where(Blob.pack.is_not(None)).distinct()))
        for name in old:
            if name not in named:
                self.store.delete_pack(name)

    def _sweep_uploads(self, now: datetime) -> int:
        """Abandoned resumable uploads (a day without completing) and the store's stale temp files."""
        with self.db.write() as s:
            stale = list(s.scalars(select(Upload.id).where(Upload.created_at < now - UPLOAD_EXPIRY)))
            if stale:
                s.execute(delete(Upload).where(Upload.id.in_(stale)))
        for upload_id in stale:
            self._upload_hashes.drop(upload_id)
            self.store.pieces.drop(upload_id)
        self._sweep_upload_files()
        self._sweep_upload_pieces()
        self.store.sweep_tmp(older_than=3600)
        self._sweep_packs()
        return len(stale)

    def _sweep_upload_pieces(self) -> None:
        """Pieces in the blob store of uploads that have no row (a crash between storing a
        piece and recording it, an upload finished while a late request still wrote), once
        untouched for as long as an abandoned upload."""
        cutoff = time.time() - UPLOAD_EXPIRY.total_seconds()
        old = [upload_id for upload_id, mtime in self.store.pieces.uploads() if mtime < cutoff]
        if not old:
            return
        with self.db.read() as s:
            known = set(s.scalars(select(Upload.id).where(Upload.id.in_(old))))
        for upload_id in old:
            if upload_id not in known:
                self.store.pieces.drop(upload_id)

    def _sweep_upload_files(self) -> None:
        """Local upload files (one-file publishes spooled in DATA/uploads, and the resumable
        uploads of hubs before pieces lived in the blob store) with no upload row (a crash between the two, a migration downgrade
        that dropped rows), once as old as an abandoned upload. A file younger than that
        may belong to an upload being started right now, so it stays."""
        if not self.uploads_dir.is_dir():
            return
        cutoff = time.time() - UPLOAD_EXPIRY.total_seconds()
        with self.db.read() as s:
            known = set(s.scalars(select(Upload.id)))
        with os.scandir(self.uploads_dir) as entries:
            for entry in entries:
                if entry.name not in known and entry.is_file(follow_symlinks=False) \
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    Path(entry.path).unlink(missing_ok=True)

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
                                self._delete_build(s, b)
        return removed
