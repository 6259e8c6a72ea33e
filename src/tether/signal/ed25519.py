"""ed25519 signing for a process that lives a few milliseconds: libsodium, as PyNaCl ships it.

``tether signal -s`` signs twice (the server's nonce, the envelope) and derives each
configured identity's public key once; what it pays for that is mostly the import of
the library. PyNaCl's compiled libsodium module (``nacl._sodium``, what ``nacl.bindings``
wraps) imports in about a millisecond; ``cryptography``'s ed25519 API or PyNaCl's own
API cost more than ten (``benchmarks/ed25519_start.py`` measures them side by side).
ed25519 signatures are deterministic (RFC 8032), so these are the same bytes as any
other implementation's; the fixed vectors in ``tests/signal`` hold them to that.

Verifying a received message stays with ``cryptography`` (:func:`tether.signal.core.verify`):
its checks of odd encodings are the ones the receive path has always had.

Sans-IO: no clock, files or randomness; keys and data come in as bytes.
"""

from __future__ import annotations

SEED_LEN = 32
PUBLIC_LEN = 32
SECRET_LEN = 64  # libsodium's secret key: the seed, then the public key
SIGNATURE_LEN = 64

_impl = None  # (secret_key, sign), chosen on first use


def _libsodium():
    """libsodium's secret_key and sign, through PyNaCl's cffi module, initialised once; or,
    should a PyNaCl release move that private module, through its public bindings (the same
    libsodium, about 13 ms more to import)."""
    global _impl
    if _impl is not None:
        return _impl
    try:
        from nacl._sodium import ffi, lib
    except ImportError:
        from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

        _impl = (lambda seed: crypto_sign_seed_keypair(seed)[1], lambda secret, data: crypto_sign(data, secret)[:64])
        return _impl
    if lib.sodium_init() < 0:  # 0 the first time, 1 after (PyNaCl's own init), -1 a failure
        raise RuntimeError("libsodium failed to initialise")

    def secret_key(seed: bytes) -> bytes:
        public = ffi.new("unsigned char[]", PUBLIC_LEN)
        secret = ffi.new("unsigned char[]", SECRET_LEN)
        if lib.crypto_sign_seed_keypair(public, secret, seed) != 0:
            raise ValueError("libsodium refused the seed")
        return ffi.buffer(secret, SECRET_LEN)[:]

    def sign(secret: bytes, data: bytes) -> bytes:
        signed = ffi.new("unsigned char[]", SIGNATURE_LEN + len(data))  # libsodium's combined form: signature, data
        if lib.crypto_sign(signed, ffi.NULL, data, len(data), secret) != 0:
            raise ValueError("libsodium could not sign")
        return ffi.buffer(signed, SIGNATURE_LEN)[:]

    _impl = secret_key, sign
    return _impl


def secret_key(seed: bytes) -> bytes:
    """The 64-byte secret key of a 32-byte seed: the seed, then its public key."""
    if len(seed) != SEED_LEN:
        raise ValueError(f"an ed25519 seed is {SEED_LEN} bytes, got {len(seed)}")
    return _libsodium()[0](bytes(seed))


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of a 32-byte seed."""
    return secret_key(seed)[SEED_LEN:]


def sign(secret: bytes, data: bytes) -> bytes:
    """The 64-byte signature of ``data`` by ``secret`` (:func:`secret_key`'s 64 bytes)."""
    if len(secret) != SECRET_LEN:
        raise ValueError(f"an ed25519 secret key is {SECRET_LEN} bytes (seed + public key), got {len(secret)}")
    return _libsodium()[1](bytes(secret), bytes(data))


__all__ = ["SEED_LEN", "PUBLIC_LEN", "SECRET_LEN", "SIGNATURE_LEN", "secret_key", "public_key", "sign"]
