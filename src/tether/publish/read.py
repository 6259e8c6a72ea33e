"""Files out: resolving a download path to a file or a directory listing (builds,
``latest`` pointers), the read rule (public builds, else a token with read access), and
the blob's bytes wherever it lives (on its own or in a pack)."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.auth.policy import Resource, authorize
from tether.auth.service import AuthContext, iso
from tether.blobs import BlobNotFound
from tether.db.models import Blob, Build, BuildFile, Latest, Space
from tether.problems import Problem, bad_request, not_found
from tether.publish.core import PathError, validate_path
from tether.publish.storage import PublisherBase, _like_prefix


class Reads(PublisherBase):
    """Files out: what ``/files/SPACE/PATH`` names, who may read it, and its bytes."""

    def resolve(self, ctx: AuthContext | None, space: str, path: str) -> dict:
        """What ``/files/SPACE/PATH`` names: a file, a directory listing, or nothing."""
        # One trailing "/" asks for a directory; every other empty segment ("SPACE//x",
        # "x//", "a//b") is refused by the same rule as in published paths.
        if path:
            path = path[:-1] if path.endswith("/") else path
            if path[:1] in ("", "/"):  # not "absolute": the URL has a "//" after the space
                raise bad_request(f"/files/{space}/ is followed by an empty segment ('//')", "invalid-path")
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
                    f = s.get(BuildFile, (build.entries, rest))
                    if f is not None:
                        where = s.execute(select(Blob.pack, Blob.pack_offset).where(Blob.digest == f.digest)).first()
                        return {"kind": "file", "digest": f.digest, "size": f.size, "mode": f.mode, "path": path,
                                "pack": where.pack if where else None, "pack_offset": where.pack_offset if where else None}
                under = rest + "/" if rest else ""
                rows = s.execute(
                    select(BuildFile.path, BuildFile.size, BuildFile.digest).where(
                        BuildFile.build == build.entries, BuildFile.path.like(_like_prefix(under), escape="\\")
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
            names = {b.path[len(under):].split("/")[0] for b in visible}
            latest = self._latest(s, sp.id, path) if path else None
            if latest is not None and self._readable(ctx, space, latest):
                names.add("latest")  # browsable like the builds beside it
            return {"kind": "dir", "path": path, "entries": [{"name": n, "dir": True} for n in sorted(names)]}

    def overview(self, ctx: AuthContext, *, recent: int = 20, scan: int = 500) -> list[dict]:
        """What ``ctx`` may read, for the hub's front page: each space it may read (or read a
        build in), with the build types it may read and its newest readable builds (``recent``
        of them, looked for among the space's newest ``scan``)."""
        out = []
        with self.db.read() as s:
            for sp in s.scalars(select(Space).order_by(Space.name)):
                newest = s.scalars(select(Build).where(Build.space_id == sp.id)
                                   .order_by(Build.created_at.desc(), Build.id.desc()).limit(scan))
                visible = [b for b in newest if self._readable(ctx, sp.name, b)]
                if visible or authorize(ctx.principal, "publish.read", Resource(space=sp.name)).allowed:
                    types = sorted({b.path.rsplit("/", 1)[0] for b in visible})
                    out.append({"space": sp.name, "description": sp.description, "types": types,
                                "recent": [build_info(b, sp.name) for b in visible[:recent]]})
        return out

    def open_blob(self, f: dict, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of a file :meth:`resolve` found, wherever its blob lives.
        Raises BlobNotFound."""
        digest, pack = f["digest"], f.get("pack")
        if pack is None:
            return self.store.open_range(digest, start, end)
        try:
            return self.store.open_packed(digest, pack, f["pack_offset"], f["size"], start, end)
        except BlobNotFound:
            # Garbage collection may have just moved the blob out of its pack: look again.
            with self.db.read() as s:
                where = s.execute(select(Blob.pack, Blob.pack_offset).where(Blob.digest == digest)).first()
            if where is None or where.pack == pack:
                raise
            if where.pack is None:
                return self.store.open_range(digest, start, end)
            return self.store.open_packed(digest, where.pack, where.pack_offset, f["size"], start, end)

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
