"""Talks to a hub for ``tether app``: sends an app's files as a build (only what the hub
lacks: the blob store is content-addressed), then registers the app naming that build.

No click here; every error is the hub client's (:mod:`tether.hubclient.errors`)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from tether.hubclient.hub import Hub, q

APP_BUILD_TYPE = "apps"
MAX_FILES = 20_000


class TreeError(ValueError):
    """The --dir cannot be sent (say why)."""


def scan(root: Path) -> list[dict[str, Any]]:
    """Every regular file under ``root``: relative path, sha256, size, mode (0644/0755).
    Symbolic links are refused (they would point outside the app); hidden VCS
    directories (.git, .hg) and __pycache__ are left out."""
    if not root.is_dir():
        raise TreeError(f"--dir {root} is not a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", ".hg", "__pycache__"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                raise TreeError(f"{rel} is a symbolic link; an app's files must be regular files (copy its target)")
            if not stat.S_ISREG(st.st_mode):
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            files.append({"path": rel, "digest": h.hexdigest(), "size": st.st_size,
                          "mode": 0o755 if st.st_mode & 0o111 else 0o644})
            if len(files) > MAX_FILES:
                raise TreeError(f"--dir {root} has more than {MAX_FILES} files; is it the app's directory?")
    if not files:
        raise TreeError(f"--dir {root} holds no files")
    return files


def tree_id(files: list[dict[str, Any]]) -> str:
    """The tree's identity: sha256 over its paths, digests and modes (its build id)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f["path"]):
        h.update(f"{f['path']}\0{f['digest']}\0{f['mode']:o}\n".encode())
    return h.hexdigest()[:24]


def send_tree(hub: Hub, root: Path, *, space: str, app: str) -> tuple[str, int]:
    """Publish ``root`` as build ``SPACE/apps/APP-TREE`` (TREE: the tree's content hash), so
    the same tree is one build however often it is registered: the hub already has it
    and nothing travels. Else upload the blobs the hub lacks, then the manifest.
    Returns (the build's SPACE/TYPE/ID, files uploaded)."""
    from tether.hubclient.errors import HubError

    files = scan(root)
    build = f"{app}-{tree_id(files)}"
    ref = f"{space}/{APP_BUILD_TYPE}/{build}"
    where = {"space": space, "type": APP_BUILD_TYPE, "build": build}
    digests = sorted({f["digest"] for f in files})
    missing: set[str] = set()
    try:
        for i in range(0, len(digests), 10_000):
            answer = hub.post("/api/v1/blobs/missing", json={**where, "digests": digests[i:i + 10_000]}) or {}
            missing |= set(answer.get("missing") or [])
    except HubError as exc:
        if exc.status == 409:  # this very tree is published already
            return ref, 0
        raise
    sent = 0
    for f in files:
        if f["digest"] in missing:
            data = (root / f["path"]).read_bytes()
            hub.request("PUT", f"/api/v1/blobs/sha256/{f['digest']}", params=where, content=data,
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
            missing.discard(f["digest"])
            sent += 1
    hub.post(f"/api/v1/publish/{q(space)}/{APP_BUILD_TYPE}/{q(build)}", json={"files": files})
    return ref, sent


def register(hub: Hub, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return hub.post(f"/api/v1/apps/{q(name)}", json=body) or {}


def instance_path(ref: str) -> str:
    return f"/api/v1/app-instances/{q(ref)}"
