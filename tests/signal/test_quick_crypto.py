"""What a one-shot send signs and encodes with, held to the libraries it replaced.

`tether signal -s` signs with libsodium through PyNaCl's cffi module
(tether.signal.ed25519), writes base58 itself (tether.signal.core) and reads nkey
seeds with the standard library (tether.signal.nkey), to spare its start-up the
imports of cryptography's API, the base58 package and nkeys. Each is checked here
against the library it stands in for, on fixed vectors and on random input, and
every malformed input is refused with its own error.
"""

from __future__ import annotations

import sys

import base58
import nkeys
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from tether.signal import core, ed25519, nkey

# RFC 8032, section 7.1, TEST 1 and TEST 2
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]  # fmt: skip


@pytest.mark.parametrize("seed, public, message, signature", RFC8032)
def test_rfc8032_vectors(seed, public, message, signature):
    secret = ed25519.secret_key(bytes.fromhex(seed))
    assert secret == bytes.fromhex(seed + public)
    assert ed25519.public_key(bytes.fromhex(seed)).hex() == public
    assert ed25519.sign(secret, bytes.fromhex(message)).hex() == signature


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=2048))
def test_signatures_are_cryptographys_byte_for_byte(seed, message):
    theirs = Ed25519PrivateKey.from_private_bytes(seed)
    public = theirs.public_key().public_bytes_raw()
    assert ed25519.public_key(seed) == public
    sig = ed25519.sign(ed25519.secret_key(seed), message)
    assert sig == theirs.sign(message)
    Ed25519PublicKey.from_public_bytes(public).verify(sig, message)  # raises if not


def test_without_pynacls_private_module_the_public_bindings_sign_the_same(monkeypatch):
    """Should a PyNaCl release move nacl._sodium, signing falls back to nacl.bindings."""
    monkeypatch.setitem(sys.modules, "nacl._sodium", None)  # (an import of it now raises ImportError)
    monkeypatch.setattr(ed25519, "_impl", None)
    for seed, public, message, signature in RFC8032:
        secret = ed25519.secret_key(bytes.fromhex(seed))
        assert secret == bytes.fromhex(seed + public)
        assert ed25519.sign(secret, bytes.fromhex(message)).hex() == signature
    assert "<lambda>" in ed25519._impl[0].__qualname__  # the fallback's, not the cffi module's secret_key


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_seed_of_the_wrong_size_is_refused(size):
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519.secret_key(b"\1" * size)


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_a_secret_key_of_the_wrong_size_is_refused(size):
    with pytest.raises(ValueError, match="64 bytes"):
        ed25519.sign(b"\1" * size, b"data")


def test_a_signing_key_signs_with_its_seed_whatever_public_half_it_was_given():
    key = core.SigningKey.from_seed(bytes(range(32)))
    forged = core.SigningKey(b"\0" * 32, key.private[:32] + b"\0" * 32)
    assert forged.sign(b"m") == key.sign(b"m") == Ed25519PrivateKey.from_private_bytes(bytes(range(32))).sign(b"m")


# -- base58 -------------------------------------------------------------------------------


@given(st.binary(max_size=80))
def test_base58_is_the_base58_packages(data):
    text = core.b58encode(data)
    assert text == base58.b58encode(data).decode()
    assert core.b58decode(text) == core.b58decode(text.encode()) == data == base58.b58decode(text)


@given(st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", max_size=60))
def test_base58_decodes_any_text_of_its_alphabet_as_the_package_does(text):
    assert core.b58decode(text) == base58.b58decode(text)


@pytest.mark.parametrize("text", ["0", "O", "I", "l", "abc!", "ÿ", "2 ", " 2", "2\n", "+", b"\xff2", "2\x00"])
def test_base58_refuses_what_is_not_in_its_alphabet(text):
    with pytest.raises(core.KeyError_, match="not base58"):
        core.b58decode(text)


# -- nkey seeds ---------------------------------------------------------------------------

ROLES = {"user": nkeys.PREFIX_BYTE_USER, "account": nkeys.PREFIX_BYTE_ACCOUNT, "operator": nkeys.PREFIX_BYTE_OPERATOR,
         "server": nkeys.PREFIX_BYTE_SERVER, "cluster": nkeys.PREFIX_BYTE_CLUSTER}


def test_the_roles_are_nkeys():
    assert nkey.ROLES == ROLES


@given(st.binary(min_size=32, max_size=32), st.sampled_from(sorted(ROLES)), st.binary(min_size=1, max_size=64))
def test_an_nkey_seed_reads_as_nkeys_reads_it(raw, role, nonce):
    seed = nkeys.encode_seed(raw, ROLES[role])
    pair = nkeys.from_seed(bytearray(seed))
    got_role, got_raw = nkey.decode_seed(seed)
    assert (got_role, got_raw) == (ROLES[role], raw)
    assert nkey.decode_seed(seed.decode() + "\n") == (got_role, got_raw)
    secret = ed25519.secret_key(got_raw)
    assert nkey.encode_public(got_role, secret[32:]) == pair.public_key.decode()
    assert ed25519.sign(secret, nonce) == pair.sign(nonce)


def _seed_bytes(body: bytes) -> bytes:
    """An nkey seed's text for any 34 bytes, with a right checksum."""
    import base64
    import binascii

    return base64.b32encode(body + binascii.crc_hqx(body, 0).to_bytes(2, "little")).rstrip(b"=")


GOOD = nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_USER)


@pytest.mark.parametrize("bad, why", [
    (b"", "36 bytes"),
    (GOOD[:-8], "36 bytes"),
    (_seed_bytes(bytes([nkeys.PREFIX_BYTE_SEED | 0x05, 0]) + bytes(33)), "36 bytes"),
    (GOOD[:-1] + (b"A" if GOOD[-1:] != b"A" else b"B"), "checksum"),
    (GOOD[:10] + (b"A" if GOOD[10:11] != b"A" else b"B") + GOOD[11:], "checksum"),
    (b"SU!" + GOOD[3:], "base32"),
    ("SUÿ" + GOOD[3:].decode(), "base32"),
    (_seed_bytes(bytes([nkeys.PREFIX_BYTE_USER, 0]) + bytes(32)), "start with S"),  # a user key's marker
    (_seed_bytes(bytes([nkeys.PREFIX_BYTE_SEED | 0x07, 0xF8]) + bytes(32)), "no known role"),
])  # fmt: skip
def test_a_malformed_nkey_seed_is_refused(bad, why):
    with pytest.raises(nkey.NkeyError, match=why):
        nkey.decode_seed(bad)


def test_a_public_nkey_needs_a_role_and_32_bytes():
    with pytest.raises(nkey.NkeyError):
        nkey.encode_public(1, bytes(32))
    with pytest.raises(nkey.NkeyError):
        nkey.encode_public(nkeys.PREFIX_BYTE_USER, bytes(31))
