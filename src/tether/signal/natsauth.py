"""NATS decentralised auth, sans-IO: nkeys, the JWTs `nsc` signs, and `.creds` files.

A nats-server in operator mode trusts one operator key; the operator signs
account JWTs, an account signs user JWTs, and a client proves it is the user
by signing the server's nonce with the user's nkey seed. A ``.creds`` file holds
the user JWT and that seed. This module makes all of them the way ``nsc`` does
(JWT v2: header ``{"typ":"JWT","alg":"ed25519-nkey"}``, claims with ``jti``,
``iat``, ``iss``, ``sub``, ``name`` and a ``nats`` object, base64url without
padding, ed25519 signature by the issuer's nkey), so the hub can run its
embedded nats-server with real per-user credentials and tests can stand up a
server that really requires them.

No I/O and no clock: times are arguments, keys come in or from ``new_key``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import nkeys

__all__ = ["NKey", "new_key", "operator_jwt", "account_jwt", "user_jwt", "creds_file", "decode_jwt", "UNLIMITED"]

_PREFIX = {"operator": nkeys.PREFIX_BYTE_OPERATOR, "account": nkeys.PREFIX_BYTE_ACCOUNT, "user": nkeys.PREFIX_BYTE_USER}

#: an account's limits with nothing limited, JetStream included (as `nsc edit account --js-mem-storage -1 ...`)
UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
             "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class NKey:
    """An nkey pair: ``seed`` (``SO…``/``SA…``/``SU…``) is the secret, ``public`` (``O…``/``A…``/``U…``) its name."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(self.seed.encode()).sign(data)

    @classmethod
    def from_seed(cls, seed: str) -> NKey:
        return cls(seed, nkeys.from_seed(seed.encode()).public_key.decode())


def new_key(kind: str, raw: bytes | None = None) -> NKey:
    """A fresh nkey of ``kind`` (operator, account or user); ``raw`` (32 bytes) makes it reproducible."""
    seed = nkeys.encode_seed(raw if raw is not None else secrets.token_bytes(32), _PREFIX[kind]).decode()
    return NKey.from_seed(seed)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _encode(claims: dict[str, Any], issuer: NKey) -> str:
    claims = {**claims, "iss": issuer.public, "jti": ""}
    # the jti is the base32 of the claims' SHA-512/256, as the Go library computes it
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


def operator_jwt(operator: NKey, *, name: str, issued_at: int) -> str:
    """The self-signed operator JWT the server's ``operator:`` setting trusts."""
    return _encode({"iat": issued_at, "name": name, "sub": operator.public, "nats": {"type": "operator", "version": 2}},
                   operator)


def account_jwt(operator: NKey, account: NKey, *, name: str, issued_at: int,
                limits: dict[str, Any] | None = None) -> str:
    """An account signed by the operator; ``limits`` default to none (JetStream on)."""
    nats = {"limits": dict(UNLIMITED if limits is None else limits), "default_permissions": {"pub": {}, "sub": {}},
            "type": "account", "version": 2}
    return _encode({"iat": issued_at, "name": name, "sub": account.public, "nats": nats}, operator)


def user_jwt(account: NKey, user: NKey, *, name: str, issued_at: int, expires: int | None = None,
             allow_pub: list[str] | None = None, allow_sub: list[str] | None = None) -> str:
    """A user signed by its account; ``expires`` (Unix seconds) and subject permissions optional."""
    nats: dict[str, Any] = {"pub": {"allow": allow_pub} if allow_pub else {},
                            "sub": {"allow": allow_sub} if allow_sub else {},
                            "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
    claims: dict[str, Any] = {"iat": issued_at, "name": name, "sub": user.public, "nats": nats}
    if expires is not None:
        claims["exp"] = expires
    return _encode(claims, account)


def creds_file(jwt: str, user: NKey) -> str:
    """The ``.creds`` text ``nsc generate creds`` writes: the user JWT, then the user's seed."""
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


def decode_jwt(jwt: str) -> dict[str, Any]:
    """The claims of a JWT (not verified: for reading back what was issued)."""
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
