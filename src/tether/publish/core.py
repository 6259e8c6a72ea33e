"""Publishing rules with no I/O: path validation, type mapping, manifest checks.

Shared by the hub (which trusts nothing a client says) and the client (which
refuses bad input before sending anything).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import NamedTuple

from tether.units import NAME_RE

DIGEST_RE = re.compile(r"\A[0-9a-f]{64}\Z")
_HEX_DIGITS = "0123456789abcdef"
_HEX_RUN = re.compile(r"[0-9a-f]*")
BUILD_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")
TYPE_RE = NAME_RE  # a build type is named like a space
MAX_PATH = 1024
MAX_SEGMENT = 255
MAX_MANIFEST_FILES = 100_000
MAX_SIZE = 2**63 - 1  # what the database's integers hold
MODES = (0o644, 0o755)
UNHASHED_MIN = 64 << 20
"""An upload may start before its digest is known only for a file of at least this
size (the partial index ``ix_blobs_large_size`` covers these sizes)."""


class PathError(ValueError):
    """A path that must not be published; the message says why."""


def validate_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise PathError.

    Refused: empty, absolute, ``..`` or ``.`` segments, empty segments (``a//b``),
    backslashes, NUL and other control or format characters, over-long paths.
    No silent normalisation: what is published is exactly what was asked for.
    """
    if not isinstance(path, str) or not path:
        raise PathError("empty path")
    if len(path) > MAX_PATH:
        raise PathError(f"path is {len(path)} characters; at most {MAX_PATH} are allowed")
    if "\\" in path:
        raise PathError(f"path {_shown(path)!r} contains a backslash; use '/' to separate directories")
    if not (path.isascii() and path.isprintable()):  # printable ASCII has none of these
        for ch in path:
            if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
                raise PathError(f"path {_shown(path)!r} contains a control character (U+{ord(ch):04X})")
    if path.startswith("/"):
        raise PathError(f"path {_shown(path)!r} is absolute; paths are relative to the build")
    # each segment between slashes: "//" is an empty one (a trailing "/" too)
    framed = f"/{path}/"
    if "//" in framed or "/./" in framed or "/../" in framed:
        raise PathError(f"path {_shown(path)!r} has an empty, '.' or '..' segment")
    if len(path) > MAX_SEGMENT // 4:  # shorter, no segment can pass the limit (4 bytes a character at most)
        for seg in path.split("/"):
            if len(seg) > MAX_SEGMENT // 4 and len(seg.encode()) > MAX_SEGMENT:
                raise PathError(f"path {_shown(path)!r} has a segment longer than {MAX_SEGMENT} bytes")
    return path


# A path every rule of validate_path accepts, for the common case (printable ASCII)
# in one regex match instead of a dozen string operations: segments of 1-255
# characters other than "/" and "\\", none of them "." or "..", joined by single
# slashes. What it does not match (non-ASCII, or wrong) goes through validate_path.
_SIMPLE_SEGMENT = r"(?!\.\.?(?:/|\Z))[ -.0-\[\]-~]{1,%d}" % MAX_SEGMENT
_SIMPLE_PATH = re.compile(rf"{_SIMPLE_SEGMENT}(?:/{_SIMPLE_SEGMENT})*")


def is_simple_path(path: str) -> bool:
    """True for a printable-ASCII path that validate_path accepts (no call to it needed)."""
    return len(path) <= MAX_PATH and _SIMPLE_PATH.fullmatch(path) is not None


def _shown(path: str) -> str:
    return path.encode("unicode_escape").decode("ascii")[:200]


def collision_key(path: str) -> str:
    """Paths that would land on the same name on a case-insensitive or
    Unicode-normalising filesystem (or in a browser) share a key."""
    if path.isascii():  # the same key, faster: NFC leaves ASCII alone, casefold is lower
        return path.lower()
    # NFC again after folding: casefold can undo composition (U+0390 folds to three code
    # points whose NFC is U+0390 again; its capital, U+03AA U+0301, folds to two)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())


def file_dir_clash(keys: Mapping[str, object]) -> tuple[str, str] | None:
    """A path that another path needs as its directory ("a" and "a/b"), as
    ``(file_key, key_under_it)``, or None. Files share parents, so each directory is
    looked up once, not once per file in it."""
    dirs_seen: set[str] = set()
    for key in keys:
        parent = key.rpartition("/")[0]
        while parent and parent not in dirs_seen:  # "a/b", then "a"
            dirs_seen.add(parent)
            if parent in keys:
                return parent, key
            parent = parent.rpartition("/")[0]
    return None


def validate_build_id(build_id: str) -> str:
    if not BUILD_ID_RE.match(build_id or ""):
        raise PathError(
            f"build id {build_id!r} is not valid: 1-128 characters A-Z a-z 0-9 . _ + -, starting with a letter or digit"
        )
    return build_id


def validate_type(build_type: str) -> str:
    if not TYPE_RE.match(build_type or ""):
        raise PathError(f"build type {build_type!r} is not valid: 1-64 characters a-z 0-9 . _ -")
    return build_type


def build_prefix(template: str | None, build_type: str, build_id: str) -> str:
    """Where a build of this type lands in its space: the type's template
    (``android/{build_id}``) or ``TYPE/BUILD_ID``."""
    validate_type(build_type)
    validate_build_id(build_id)
    prefix = (template or "{type}/{build_id}").format(type=build_type, build_id=build_id)
    return validate_path(prefix)


class ManifestEntry(NamedTuple):  # a tuple: 10,000 of them are made per commit
    path: str
    digest: str
    size: int
    mode: int = 0o644


def validate_manifest(entries: list[dict], *, max_files: int = MAX_MANIFEST_FILES) -> list[ManifestEntry]:
    """Check a whole manifest; raise PathError naming the first problem.

    Every path valid, no two paths colliding after normalisation, no path that is
    also a directory of another (``a`` and ``a/b``), digests well-formed, sizes
    non-negative, modes 0644 or 0755.
    """
    if not isinstance(entries, list) or not entries:
        raise PathError("the manifest names no files")
    if len(entries) > max_files:
        raise PathError(f"the manifest names {len(entries)} files; at most {max_files} are allowed")
    out: list[ManifestEntry] = []
    seen: dict[str, str] = {}
    simple = _SIMPLE_PATH.fullmatch
    new_entry = tuple.__new__  # ManifestEntry(...) goes through a Python-level __new__
    for e in entries:
        path = e.get("path", "") if type(e) is dict else ""
        if not (type(path) is str and len(path) <= MAX_PATH and simple(path)):
            validate_path(path)  # the exact rule, and the message saying what is wrong
        digest = e.get("digest", "")
        if type(digest) is not str or len(digest) != 64:  # its characters: all at once, below
            raise PathError(f"{path}: digest must be 64 lowercase hex characters (sha256)")
        size = e.get("size")
        if type(size) is not int or not 0 <= size <= MAX_SIZE:  # (not a bool: its type is bool)
            raise PathError(f"{path}: size must be an integer from 0 to {MAX_SIZE}")
        mode = e.get("mode", 0o644)
        if mode not in MODES:
            raise PathError(f"{path}: mode must be 0644 or 0755 (420 or 493)")
        key = path.lower() if path.isascii() else collision_key(path)
        if key in seen:
            raise PathError(f"{path!r} collides with {seen[key]!r} (same name after case and Unicode normalisation)")
        seen[key] = path
        out.append(new_entry(ManifestEntry, (path, digest, size, mode)))
    # every digest's characters in one match over all of them (DIGEST_RE's rule); the
    # first bad one named if any
    if _HEX_RUN.fullmatch("".join([e.digest for e in out])) is None:
        bad = next(e for e in out if e.digest.strip(_HEX_DIGITS))
        raise PathError(f"{bad.path}: digest must be 64 lowercase hex characters (sha256)")
    clash = file_dir_clash(seen)  # a file may not also be a directory: "a" and "a/b"
    if clash is not None:
        raise PathError(f"{seen[clash[0]]!r} is a file but {seen[clash[1]]!r} needs it to be a directory")
    return out


def manifest_digest(entries: list[tuple[str, str, int, int]]) -> str:
    """The sha256 naming a manifest's content: its ``(path, digest, size, mode)``
    entries in path order, one ``path NUL digest NUL size NUL mode LF`` line each
    (a valid path holds no NUL or LF). The client and the hub compute it the same
    way, so a client can commit "the same files as an earlier build" by this name
    instead of sending 10,000 entries again."""
    lines = "".join(f"{path}\0{digest}\0{size}\0{mode}\n" for path, digest, size, mode in sorted(entries))
    return hashlib.sha256(lines.encode()).hexdigest()
