"""Public key parsing: real keys from ssh-keygen, raw ed25519 signing keys, hostile input."""

from __future__ import annotations

import base64
import hashlib
import pathlib
import shutil
import struct
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tether.auth.keys import (
    MAX_COMMENT_CHARS,
    InvalidKey,
    ParsedKey,
    parse_public_key,
    parse_signing_key,
    parse_ssh_public_key,
)

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def _keygen(tmp_path: pathlib.Path, name: str, *args: str) -> pathlib.Path:
    if not pathlib.Path(SSH_KEYGEN).exists():
        pytest.fail("ssh-keygen not found; run `make test` to install openssh-client")
    key = tmp_path / name
    subprocess.run(
        [SSH_KEYGEN, "-q", "-N", "", "-C", f"{name}@test", "-f", str(key), *args],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return key


def _keygen_fingerprint(pub: pathlib.Path) -> str:
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # "256 SHA256:xxxx comment (ED25519)"
    return out.split()[1]


def _s(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _line(blob: bytes, algo: str, comment: str = "") -> str:
    return f"{algo} {base64.b64encode(blob).decode()}" + (f" {comment}" if comment else "")


def _ed25519_raw() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _refused(fn, text, *fragments: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidKey) as info:
        fn(text)
    msg = str(info.value)
    assert msg and msg.isprintable(), msg
    assert len(msg) < 400, msg
    for f in fragments:
        assert f.lower() in msg.lower(), msg
    return msg


# -- real keys from ssh-keygen -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "algorithm"),
    [
        ("ed25519", ["-t", "ed25519"], "ssh-ed25519"),
        ("ecdsa256", ["-t", "ecdsa", "-b", "256"], "ecdsa-sha2-nistp256"),
        ("ecdsa384", ["-t", "ecdsa", "-b", "384"], "ecdsa-sha2-nistp384"),
        ("ecdsa521", ["-t", "ecdsa", "-b", "521"], "ecdsa-sha2-nistp521"),
        ("rsa3072", ["-t", "rsa", "-b", "3072"], "ssh-rsa"),
    ],
)
def test_real_ssh_keys_match_ssh_keygen(tmp_path, name, args, algorithm) -> None:
    key = _keygen(tmp_path, name, *args)
    pub = key.with_name(key.name + ".pub")
    text = pub.read_text()

    parsed = parse_ssh_public_key(text)
    assert parsed.kind == "ssh"
    assert parsed.algorithm == algorithm
    assert parsed.fingerprint == _keygen_fingerprint(pub)
    assert parsed.comment == f"{name}@test"
    algo, b64 = text.split()[:2]
    assert parsed.public_key == f"{algo} {b64}"
    assert parsed.authorized_keys_line('restrict,command="x"') == f'restrict,command="x" {algo} {b64} {name}@test'

    # auto-detection and explicit kind agree
    assert parse_public_key(text) == parsed
    assert parse_public_key(text, kind="ssh") == parsed
    # surrounding blank lines, comment lines and CRLF are fine
    assert parse_ssh_public_key(f"# my laptop\r\n\r\n{text.strip()}\r\n\n") == parsed


def test_rsa_1024_is_refused(tmp_path) -> None:
    key = _keygen(tmp_path, "rsa1024", "-t", "rsa", "-b", "1024")
    text = key.with_name("rsa1024.pub").read_text()
    msg = _refused(parse_ssh_public_key, text, "RSA key of 1024 bits is too weak; use ed25519")
    assert "ssh-keygen -t ed25519" in msg


def test_private_key_file_is_refused(tmp_path) -> None:
    key = _keygen(tmp_path, "ed", "-t", "ed25519")
    for fn in (parse_ssh_public_key, parse_signing_key, parse_public_key):
        _refused(fn, key.read_text(), "PRIVATE key", ".pub")
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _refused(parse_public_key, pem.decode(), "PRIVATE key")


def test_ssh_ed25519_line_as_signing_key(tmp_path) -> None:
    key = _keygen(tmp_path, "ed", "-t", "ed25519")
    pub = key.with_name("ed.pub")
    text = pub.read_text()
    raw = serialization.load_ssh_public_key(text.encode()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    parsed = parse_signing_key(text)
    assert parsed.kind == "signing"
    assert parsed.algorithm == "ed25519"
    assert parsed.public_key == base64.b64encode(raw).decode()
    assert parsed.raw == raw
    assert parsed.fingerprint == "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    assert parse_public_key(text, kind="signing") == parsed
    # without a kind, an OpenSSH line is an ssh key
    assert parse_public_key(text).kind == "ssh"


def test_non_ed25519_ssh_key_is_not_a_signing_key(tmp_path) -> None:
    key = _keygen(tmp_path, "ec", "-t", "ecdsa")
    _refused(parse_signing_key, key.with_name("ec.pub").read_text(), "ed25519")


# -- security keys (structure built by hand; ssh-keygen fingerprints them without hardware) --


def test_sk_keys_are_accepted(tmp_path) -> None:
    ed = _ed25519_raw()
    sk_ed = _s(b"sk-ssh-ed25519@openssh.com") + _s(ed) + _s(b"ssh:")
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    sk_ec = _s(b"sk-ecdsa-sha2-nistp256@openssh.com") + _s(b"nistp256") + _s(point) + _s(b"ssh:")
    for algo, blob in (
        ("sk-ssh-ed25519@openssh.com", sk_ed),
        ("sk-ecdsa-sha2-nistp256@openssh.com", sk_ec),
    ):
        line = _line(blob, algo, "yubikey")
        pub = tmp_path / "sk.pub"
        pub.write_text(line + "\n")
        parsed = parse_ssh_public_key(line)
        assert parsed.algorithm == algo
        assert parsed.comment == "yubikey"
        assert parsed.fingerprint == _keygen_fingerprint(pub)
        # a missing application string is a damaged key
        _refused(parse_ssh_public_key, _line(blob[: -len(_s(b"ssh:"))], algo), "truncated")


# -- signing keys -------------------------------------------------------------------


def test_signing_key_encodings() -> None:
    raw = _ed25519_raw()
    expected = ParsedKey(
        kind="signing",
        algorithm="ed25519",
        public_key=base64.b64encode(raw).decode(),
        fingerprint="SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("="),
        comment="",
    )
    std = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    forms = [std, std.rstrip("="), url, url.rstrip("="), raw.hex(), raw.hex().upper(), f"  {std}\n"]
    for form in forms:
        assert parse_signing_key(form) == expected, form
        assert parse_public_key(form) == expected, form
        assert parse_public_key(form, kind="signing") == expected, form


def test_signing_key_refusals() -> None:
    raw = _ed25519_raw()
    _refused(parse_signing_key, base64.b64encode(raw[:31]).decode(), "32 bytes", "31")
    _refused(parse_signing_key, raw.hex()[:62], "32 bytes")
    _refused(parse_signing_key, base64.b64encode(raw + raw).decode(), "SECRET key")
    _refused(parse_signing_key, (raw + raw).hex(), "SECRET key")
    _refused(parse_signing_key, "not a key at all", "one word")
    _refused(parse_signing_key, "zzzz!!!!", "base64", "hex")
    _refused(parse_signing_key, base64.b64encode(raw).decode() + " " + raw.hex(), "one word")
    _refused(parse_signing_key, "", "no key found")


# -- hostile input -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ed_line() -> str:
    raw = _ed25519_raw()
    return _line(_s(b"ssh-ed25519") + _s(raw), "ssh-ed25519", "me@host")


def test_ed_line_fixture_parses(ed_line) -> None:
    assert parse_ssh_public_key(ed_line).comment == "me@host"


def test_garbage(ed_line) -> None:
    _refused(parse_ssh_public_key, "hello world", "OpenSSH public key")
    _refused(parse_public_key, "hello", "neither")
    _refused(parse_ssh_public_key, "", "no key found")
    _refused(parse_ssh_public_key, "   \n# only a comment\n", "no key found")
    _refused(parse_ssh_public_key, "ssh-ed25519", "no key data")
    _refused(parse_ssh_public_key, "ssh-ed25519 !!!notbase64!!!", "not valid base64")
    _refused(parse_ssh_public_key, "ssh-ed25519 AAAA\u00e9AAA", "non-ASCII")
    _refused(parse_ssh_public_key, "ssh-foo AAAAC3NzaC1lZDI1NTE5", "unsupported SSH key type", "ssh-ed25519")
    _refused(parse_ssh_public_key, b"\xff\xfe ssh-ed25519", "UTF-8")
    with pytest.raises(ValueError, match="unknown key kind"):
        parse_public_key(ed_line, kind="gpg")


def test_truncated_base64(ed_line) -> None:
    algo, b64, _ = ed_line.split()
    _refused(parse_ssh_public_key, f"{algo} {b64[:-5]}", "base64")
    # valid base64, but the blob stops early
    blob = base64.b64decode(b64)
    _refused(parse_ssh_public_key, _line(blob[:-4], algo), "truncated")
    _refused(parse_ssh_public_key, _line(blob[:6], algo), "truncated")
    # trailing junk inside the blob
    _refused(parse_ssh_public_key, _line(blob + b"\0\0\0\0", algo), "unexpected bytes")


def test_mismatched_algorithm_name(tmp_path, ed_line) -> None:
    _, b64, _ = ed_line.split()
    _refused(parse_ssh_public_key, f"ssh-rsa {b64}", "says 'ssh-rsa'", "'ssh-ed25519'")
    _refused(parse_ssh_public_key, f"ecdsa-sha2-nistp256 {b64}", "ssh-ed25519")
    key = _keygen(tmp_path, "ec", "-t", "ecdsa", "-b", "384")
    _, ec_b64 = key.with_name("ec.pub").read_text().split()[:2]
    _refused(parse_ssh_public_key, f"ecdsa-sha2-nistp256 {ec_b64}", "ecdsa-sha2-nistp384")
    # blob claims nistp256 but names another curve
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    bad = _s(b"ecdsa-sha2-nistp256") + _s(b"nistp384") + _s(point)
    _refused(parse_ssh_public_key, _line(bad, "ecdsa-sha2-nistp256"), "curve")
    # a point that is not on the curve
    bad = _s(b"ecdsa-sha2-nistp256") + _s(b"nistp256") + _s(b"\x04" + b"\x01" * 64)
    _refused(parse_ssh_public_key, _line(bad, "ecdsa-sha2-nistp256"), "not on the curve")
    # wrong ed25519 length
    bad = _s(b"ssh-ed25519") + _s(b"\x01" * 31)
    _refused(parse_ssh_public_key, _line(bad, "ssh-ed25519"), "32 bytes")


@pytest.mark.parametrize(
    "prefix",
    [
        'command="tether ssh-serve alice"',
        "no-pty,no-port-forwarding",
        'from="10.0.0.0/8",command="echo hi there"',
        "restrict",
        'environment="A=B"',
    ],
)
def test_options_prefix_refused(ed_line, prefix) -> None:
    for fn in (parse_ssh_public_key, parse_public_key):
        _refused(fn, f"{prefix} {ed_line}", "options", "tether writes the options itself")


def test_private_key_text_refused(ed_line) -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    _refused(parse_ssh_public_key, text, "PRIVATE key", "give the .pub file")
    _refused(parse_public_key, text, "PRIVATE key")
    _refused(parse_ssh_public_key, "PuTTY-User-Key-File-3: ssh-ed25519\n", "PRIVATE key")


def test_two_keys_refused(ed_line) -> None:
    other = _line(_s(b"ssh-ed25519") + _s(_ed25519_raw()), "ssh-ed25519", "other")
    for fn in (parse_ssh_public_key, parse_public_key, parse_signing_key):
        _refused(fn, f"{ed_line}\n{other}\n", "2 lines", "exactly one")
    raw = base64.b64encode(_ed25519_raw()).decode()
    _refused(parse_signing_key, f"{raw}\n{raw}", "exactly one")


def test_huge_input_refused(ed_line) -> None:
    _refused(parse_ssh_public_key, ed_line + " " + "x" * 20_000, "16384")
    _refused(parse_public_key, "A" * 17_000, "16384")
    _refused(parse_signing_key, b"A" * 17_000, "16384")


def test_nul_bytes_refused(ed_line) -> None:
    for fn in (parse_ssh_public_key, parse_public_key, parse_signing_key):
        _refused(fn, ed_line.replace(" me@host", " me\x00@host"), "NUL")
        _refused(fn, "\x00" + ed_line, "NUL")


def test_dsa_and_certificates_refused() -> None:
    _refused(parse_ssh_public_key, "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA", "ssh-keygen -t ed25519")
    _refused(
        parse_ssh_public_key,
        "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQ= me",
        "certificate",
    )
    _refused(parse_ssh_public_key, "---- BEGIN SSH2 PUBLIC KEY ----", "ssh-keygen -i")
    _refused(parse_ssh_public_key, "-----BEGIN PUBLIC KEY-----", "PEM")


def test_comment_is_cleaned(ed_line) -> None:
    key_part = " ".join(ed_line.split()[:2])
    parsed = parse_ssh_public_key(f"{key_part} evil\x1b[31mred\u202e\x07 \tname\x7f")
    assert parsed.comment == "evil[31mred name"
    long = parse_ssh_public_key(f"{key_part} " + "c" * 1000)
    assert long.comment == "c" * MAX_COMMENT_CHARS
    assert parse_ssh_public_key(key_part).comment == ""
    # the canonical form never carries the comment
    assert parsed.public_key == key_part


def test_multiline_foreign_formats_named(tmp_path) -> None:
    key = _keygen(tmp_path, "ed", "-t", "ed25519")
    rfc4716 = subprocess.run(
        [SSH_KEYGEN, "-e", "-f", str(key.with_name("ed.pub"))], check=True, capture_output=True, text=True
    ).stdout
    assert rfc4716.count("\n") > 1
    _refused(parse_ssh_public_key, rfc4716, "RFC 4716", "ssh-keygen -i")
    _refused(parse_public_key, rfc4716, "RFC 4716")
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    _refused(parse_ssh_public_key, pem, "PEM", "ssh-keygen -i -m PKCS8")
    _refused(parse_signing_key, pem, "PEM")
