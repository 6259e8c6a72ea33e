"""NATS nkey seeds and public keys, read and written with the standard library.

An nkey seed (``SU…`` for a user, ``SA…``, ``SO…``) is base32, without padding, of
two prefix bytes (the seed marker and the key's role), the 32-byte ed25519 seed, and
a CRC-16 (XMODEM, little-endian) of the bytes before it; a public key (``U…``, ``A…``,
``O…``) is the same with one role byte and the 32-byte public key. A one-shot send
signs the server's nonce with the seed of its ``.creds`` file or ``nkey_seed`` file;
this reads it without the ``nkeys`` package (and the PyNaCl API it imports), checking
what the NATS server's own library checks: the length, the seed marker, a known role
and the checksum.

Sans-IO: text in, bytes out; :class:`NkeyError` for anything malformed.
"""

from __future__ import annotations

import base64
import binascii

_SEED = 18 << 3  # the first five bits of a seed: "S"
#: role -> prefix byte (its first five bits give the key's first letter)
ROLES = {"operator": 14 << 3, "account": 0, "user": 20 << 3, "server": 13 << 3, "cluster": 2 << 3}


class NkeyError(ValueError):
    """Not a well-formed nkey seed or public key."""


def _crc16(data: bytes) -> bytes:
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")


def _b32decode(text: bytes | str) -> bytes:
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    text = text.strip()
    try:
        return base64.b32decode(text + b"=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise NkeyError("not base32") from None


def decode_seed(text: bytes | str) -> tuple[int, bytes]:
    """The role's prefix byte and the 32-byte ed25519 seed of an nkey seed."""
    raw = _b32decode(text)
    if len(raw) != 36:
        raise NkeyError(f"an nkey seed is 36 bytes, this one {len(raw)}")
    body, crc = raw[:34], raw[34:]
    if _crc16(body) != crc:
        raise NkeyError("the nkey seed's checksum does not match")
    if body[0] & 0xF8 != _SEED:
        raise NkeyError("not an nkey seed (it must start with S)")
    role = (body[0] & 0x07) << 5 | (body[1] & 0xF8) >> 3
    if role not in ROLES.values():
        raise NkeyError("an nkey seed of no known role")
    return role, body[2:]


def encode_public(role: int, public: bytes) -> str:
    """The nkey public key (``U…`` for a user) of a 32-byte ed25519 public key."""
    if role not in ROLES.values() or len(public) != 32:
        raise NkeyError("a public nkey needs a known role and 32 bytes")
    body = bytes([role]) + public
    return base64.b32encode(body + _crc16(body)).rstrip(b"=").decode("ascii")


__all__ = ["ROLES", "NkeyError", "decode_seed", "encode_public"]
