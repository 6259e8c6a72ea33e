"""Token secrets: format, generation, hashing and constant-time checking.

A token reads ``tth_<id>_<secret>``: the ``tth_`` prefix lets secret scanners spot
it, the 16-hex-digit id is public (it names the token in audit records and the
CLI), and only the sha256 of the 256-bit secret is stored. A high-entropy secret
needs no slow hash; the comparison is constant-time all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "tth_"
_TOKEN_RE = re.compile(r"\Atth_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
_ID_RE = re.compile(r"\A[0-9a-f]{16}\Z")


def new_token() -> tuple[str, str, str]:
    """Return (id, secret_hash, full token string)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, hash_secret(secret), f"{PREFIX}{token_id}_{secret}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(value: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    m = _TOKEN_RE.match(value)
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def is_token_id(value: str) -> bool:
    return bool(_ID_RE.match(value))
