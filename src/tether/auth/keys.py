"""Parse and check public keys given to tether by users (sans-IO, no clock, no files).

Two kinds of keys:

* ``"ssh"`` -- an OpenSSH public key line (``ALGO BASE64 [comment]``), as found in
  a ``.pub`` file. It binds an SSH login to a user. tether writes the
  ``authorized_keys`` options itself, so lines that carry options are refused.
* ``"signing"`` -- a raw ed25519 public key (32 bytes) used to verify signed
  messages; given as base64 (standard or URL-safe, padded or not) or as 64 hex
  digits. With ``kind="signing"`` an ``ssh-ed25519 AAAA...`` line is accepted too
  and reduced to its 32 raw bytes.

Every refusal is an :class:`InvalidKey` whose message says what is wrong and
what to do about it.

Fingerprints use the OpenSSH format: ``"SHA256:"`` + unpadded base64 of the
SHA-256 of the key blob, exactly what ``ssh-keygen -lf key.pub`` prints. For
signing keys the "blob" is the 32 raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

__all__ = [
    "InvalidKey",
    "ParsedKey",
    "KINDS",
    "SSH_ALGORITHMS",
    "MAX_INPUT_BYTES",
    "MAX_COMMENT_CHARS",
    "MIN_RSA_BITS",
    "parse_public_key",
    "parse_signing_key",
    "parse_ssh_public_key",
    "ssh_fingerprint",
]

KINDS = ("ssh", "signing")
MAX_INPUT_BYTES = 16 * 1024
MAX_COMMENT_CHARS = 200
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384

_ED25519 = "ssh-ed25519"
_RSA = "ssh-rsa"
_SK_ED25519 = "sk-ssh-ed25519@openssh.com"
_SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
_ECDSA_CURVES: dict[str, tuple[str, ec.EllipticCurve]] = {
    "ecdsa-sha2-nistp256": ("nistp256", ec.SECP256R1()),
    "ecdsa-sha2-nistp384": ("nistp384", ec.SECP384R1()),
    "ecdsa-sha2-nistp521": ("nistp521", ec.SECP521R1()),
}

SSH_ALGORITHMS: tuple[str, ...] = (
    _ED25519,
    *_ECDSA_CURVES,
    _RSA,
    _SK_ED25519,
    _SK_ECDSA,
)

_USE_INSTEAD = "create one with `ssh-keygen -t ed25519`"
_REFUSED_ALGORITHMS = {
    "ssh-dss": f"DSA (ssh-dss) keys are refused: they are weak and OpenSSH dropped them; {_USE_INSTEAD}",
}
_ALGO_TOKEN = re.compile(r"\A[a-z0-9][a-z0-9.@-]*\Z")
_HEX64 = re.compile(r"\A[0-9a-fA-F]{64}\Z")
_B64_CHARS = re.compile(r"\A[A-Za-z0-9+/_-]+={0,2}\Z")


class InvalidKey(ValueError):
    """A key given to tether was refused; the message says why and what to do."""


@dataclass(frozen=True)
class ParsedKey:
    kind: str  # "ssh" | "signing"
    algorithm: str  # "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ...; "ed25519" for signing keys
    public_key: str  # ssh: "ALGO BASE64" (no comment); signing: standard padded base64 of 32 raw bytes
    fingerprint: str  # "SHA256:..." as printed by `ssh-keygen -lf`
    comment: str = ""

    @property
    def raw(self) -> bytes:
        """The key blob (ssh) or the 32 raw bytes (signing)."""
        if self.kind == "ssh":
            return base64.b64decode(self.public_key.split(" ", 1)[1])
        return base64.b64decode(self.public_key)

    def authorized_keys_line(self, options: str = "") -> str:
        """``[options ]ALGO BASE64[ comment]`` for an ssh key (options are the caller's)."""
        if self.kind != "ssh":
            raise ValueError("only ssh keys go into authorized_keys")
        parts = [p for p in (options, self.public_key, self.comment) if p]
        return " ".join(parts)


def ssh_fingerprint(blob: bytes) -> str:
    """OpenSSH SHA256 fingerprint of a key blob (or of raw key bytes)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


# -- input hygiene -------------------------------------------------------------


def _as_text(text: str | bytes) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        if len(raw) > MAX_INPUT_BYTES:
            raise _too_big(len(raw))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidKey(
                "the key is not UTF-8 text (is this a binary file?); give the contents of the .pub file"
            ) from None
    if not isinstance(text, str):
        raise InvalidKey(f"expected the key as text, got {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_INPUT_BYTES:
        raise _too_big(size)
    if "\x00" in text:
        raise InvalidKey(
            "the key contains NUL bytes (is this a binary file?); give the text of the .pub file"
        )
    if text.startswith("\ufeff"):
        text = text[1:]
    _refuse_private(text)
    return text


def _too_big(size: int) -> InvalidKey:
    return InvalidKey(
        f"the key text is {size} bytes, more than the {MAX_INPUT_BYTES} allowed for one public key; "
        "give a single public key"
    )


def _refuse_private(text: str) -> None:
    upper = text.upper()
    if "PRIVATE KEY" in upper or "PUTTY-USER-KEY-FILE" in upper:
        raise InvalidKey(
            "this is a PRIVATE key; give the .pub file (the public key) instead, "
            "and keep the private key secret -- if you pasted it somewhere, make a new one"
        )


def _single_line(text: str, what: str) -> str:
    """The one non-empty, non-comment line of ``text``."""
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    if not lines:
        raise InvalidKey(f"no key found: the text is empty or only comments; give one {what}")
    if len(lines) > 1:
        raise InvalidKey(
            f"found {len(lines)} lines that look like keys; give exactly one {what} (add keys one at a time)"
        )
    return lines[0]


def _clean_comment(comment: str) -> str:
    out = []
    for ch in comment:
        cat = unicodedata.category(ch)
        if ch in "\t\v\f":
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue  # control, format (bidi overrides...), surrogate, private, unassigned
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    return cleaned[:MAX_COMMENT_CHARS].rstrip()


def _b64decode_strict(data: str, what: str) -> bytes:
    if not data.isascii():
        raise InvalidKey(f"the {what} contains non-ASCII characters; copy the key again from the .pub file")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey(
            f"the {what} is not valid base64 (truncated or damaged?); copy the whole line from the .pub file again"
        ) from None


# -- SSH wire format -----------------------------------------------------------


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0

    def string(self, field: str) -> bytes:
        if self.pos + 4 > len(self.blob):
            raise _truncated(field)
        n = int.from_bytes(self.blob[self.pos : self.pos + 4], "big")
        self.pos += 4
        if n > len(self.blob) - self.pos:
            raise _truncated(field)
        value = self.blob[self.pos : self.pos + n]
        self.pos += n
        return value

    def done(self) -> None:
        if self.pos != len(self.blob):
            raise InvalidKey(
                f"the key data has {len(self.blob) - self.pos} unexpected bytes at the end; "
                "copy the key again from the .pub file"
            )


def _truncated(field: str) -> InvalidKey:
    return InvalidKey(
        f"the key data is truncated (it stops inside the {field}); copy the whole line from the .pub file again"
    )


def _ascii_name(raw: bytes, field: str) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        name = ""
    if not name or not _ALGO_TOKEN.match(name):
        raise InvalidKey(f"the key data does not start with a key type name ({field}); this is not an OpenSSH public key")
    return name


def _check_blob_structure(algorithm: str, blob: bytes) -> None:
    """Check the OpenSSH wire structure of ``blob`` for ``algorithm`` (exact, no trailing bytes)."""
    r = _Reader(blob)
    embedded = _ascii_name(r.string("key type"), "key type")
    if embedded != algorithm:
        raise InvalidKey(
            f"the line says {algorithm!r} but the key data inside it is a {embedded!r} key; "
            "the line was edited or pieced together -- copy it again from the .pub file"
        )
    if algorithm in (_ED25519, _SK_ED25519):
        pk = r.string("ed25519 public key")
        if len(pk) != 32:
            raise InvalidKey(f"an ed25519 public key is 32 bytes, this one is {len(pk)}; the key is damaged")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(pk)
        except ValueError:
            raise InvalidKey("the ed25519 public key is not valid; the key is damaged") from None
    elif algorithm in _ECDSA_CURVES or algorithm == _SK_ECDSA:
        base = "ecdsa-sha2-nistp256" if algorithm == _SK_ECDSA else algorithm
        curve_name, curve = _ECDSA_CURVES[base]
        got_curve = r.string("curve name")
        if got_curve != curve_name.encode():
            raise InvalidKey(
                f"the key says {algorithm!r} but names the curve {got_curve[:32]!r}; the key is damaged"
            )
        point = r.string("curve point")
        if not point or point[0] != 0x04:
            raise InvalidKey("the ECDSA public point is not in uncompressed form; the key is damaged")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        except ValueError:
            raise InvalidKey("the ECDSA public point is not on the curve; the key is damaged") from None
    elif algorithm == _RSA:
        e = r.string("RSA exponent")
        n = r.string("RSA modulus")
        if not e or not n or e[0] & 0x80 or n[0] & 0x80:
            raise InvalidKey("the RSA numbers in the key are malformed; the key is damaged")
    else:  # pragma: no cover - guarded by the caller
        raise InvalidKey(f"unsupported key type {algorithm!r}")
    if algorithm in (_SK_ED25519, _SK_ECDSA):
        app = r.string("security key application")
        if not app or not app.isascii() or not app.decode("ascii").isprintable():
            raise InvalidKey("the security key's application string is missing or malformed; the key is damaged")
    r.done()


def _unsupported_algorithm(algorithm: str) -> InvalidKey:
    if algorithm in _REFUSED_ALGORITHMS:
        return InvalidKey(_REFUSED_ALGORITHMS[algorithm])
    if "-cert-v01@openssh.com" in algorithm:
        return InvalidKey(
            f"{algorithm!r} is an SSH certificate, not a plain public key; give the key's .pub file, not the -cert.pub"
        )
    return InvalidKey(
        f"unsupported SSH key type {algorithm!r}; tether accepts {', '.join(SSH_ALGORITHMS)} -- {_USE_INSTEAD}"
    )


_OPTION_NAMES = (
    "agent-forwarding", "cert-authority", "command", "environment", "expiry-time", "from",
    "no-agent-forwarding", "no-port-forwarding", "no-pty", "no-user-rc", "no-x11-forwarding",
    "permitlisten", "permitopen", "port-forwarding", "principals", "pty", "no-touch-required",
    "verify-required", "restrict", "tunnel", "user-rc", "x11-forwarding",
)
_OPTION_START = re.compile(r"^(?:" + "|".join(re.escape(o) for o in _OPTION_NAMES) + r")(?:$|[=,])", re.I)


def _is_key_type(token: str) -> bool:
    return token in SSH_ALGORITHMS or token in _REFUSED_ALGORITHMS


def _looks_like_options(line: str) -> bool:
    """True for ``OPTIONS ALGO BASE64 ...`` (an authorized_keys line with options)."""
    tokens = line.split()
    if not tokens or _is_key_type(tokens[0]):
        return False
    if _OPTION_START.match(tokens[0]):
        return True
    # Options can hold quoted spaces: look for a known key type later on the line.
    return any(_is_key_type(t) for t in tokens[1:])


def _refuse_other_formats(text: str) -> None:
    """PEM and RFC 4716 blocks span several lines: name them before counting lines."""
    stripped = text.lstrip()
    if stripped.startswith("---- BEGIN SSH2 PUBLIC KEY"):
        raise InvalidKey(
            "this is an RFC 4716 (SSH2/PuTTY) public key; convert it with `ssh-keygen -i -f FILE` and give the result"
        )
    if stripped.startswith("-----BEGIN"):
        raise InvalidKey(
            "this is a PEM key, not an OpenSSH public key line; "
            "convert it with `ssh-keygen -i -m PKCS8 -f FILE` and give the result"
        )


def _parse_ssh_line(line: str) -> ParsedKey:
    if _looks_like_options(line):
        raise InvalidKey(
            "the line starts with authorized_keys options (like command=\"...\" or no-pty); "
            "tether writes the options itself -- give only the key: 'ALGO BASE64 [comment]' from the .pub file"
        )
    _refuse_other_formats(line)
    parts = line.split(None, 2)
    algorithm = parts[0]
    if not _ALGO_TOKEN.match(algorithm) or "-" not in algorithm:
        raise InvalidKey(
            "this does not look like an OpenSSH public key; expected a line like 'ssh-ed25519 AAAA... comment' "
            "(the contents of ~/.ssh/id_ed25519.pub)"
        )
    if algorithm not in SSH_ALGORITHMS:
        raise _unsupported_algorithm(algorithm)
    if len(parts) < 2:
        raise InvalidKey(
            f"the line has the key type {algorithm!r} but no key data after it; copy the whole line from the .pub file"
        )
    blob = _b64decode_strict(parts[1], "key data")
    _check_blob_structure(algorithm, blob)
    canonical_b64 = base64.b64encode(blob).decode("ascii")
    canonical = f"{algorithm} {canonical_b64}"
    try:
        key = load_ssh_public_key(canonical.encode("ascii"))
    except UnsupportedAlgorithm:
        raise _unsupported_algorithm(algorithm) from None
    except ValueError as exc:
        raise InvalidKey(f"the {algorithm} key is not valid ({exc}); copy it again from the .pub file") from None
    if algorithm == _RSA:
        assert isinstance(key, rsa.RSAPublicKey)
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise InvalidKey(f"RSA key of {bits} bits is too weak; use ed25519 ({_USE_INSTEAD})")
        if bits > MAX_RSA_BITS:
            raise InvalidKey(f"RSA key of {bits} bits is larger than the {MAX_RSA_BITS} allowed; use ed25519")
    comment = _clean_comment(parts[2]) if len(parts) > 2 else ""
    return ParsedKey(
        kind="ssh",
        algorithm=algorithm,
        public_key=canonical,
        fingerprint=ssh_fingerprint(blob),
        comment=comment,
    )


def parse_ssh_public_key(text: str) -> ParsedKey:
    """Parse one OpenSSH public key line (the contents of a ``.pub`` file)."""
    text = _as_text(text)
    _refuse_other_formats(text)
    line = _single_line(text, "SSH public key line")
    return _parse_ssh_line(line)


# -- signing keys --------------------------------------------------------------


def _signing_from_raw(raw: bytes, comment: str = "") -> ParsedKey:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidKey("this is not a valid ed25519 public key") from None
    return ParsedKey(
        kind="signing",
        algorithm="ed25519",
        public_key=base64.b64encode(raw).decode("ascii"),
        fingerprint=ssh_fingerprint(raw),
        comment=comment,
    )


def _decode_signing_token(token: str) -> bytes | None:
    """32/64 raw bytes from hex or base64 text, or None if it is neither."""
    if _HEX64.match(token):
        return bytes.fromhex(token)
    if len(token) == 128 and re.fullmatch(r"[0-9a-fA-F]+", token):
        return bytes.fromhex(token)
    if not token.isascii() or not _B64_CHARS.match(token):
        return None
    body = token.rstrip("=")
    pad = len(token) - len(body)
    if pad and len(token) % 4:
        return None  # padding present but the length is wrong
    if ("-" in body or "_" in body) and ("+" in body or "/" in body):
        return None  # mixed standard and URL-safe alphabets
    body = body.replace("-", "+").replace("_", "/")
    if len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _signing_raw_from_token(token: str) -> bytes:
    raw = _decode_signing_token(token)
    if raw is None:
        raise InvalidKey(
            "this is not a signing key: expected an ed25519 public key as base64 (44 characters) "
            "or hex (64 characters)"
        )
    if len(raw) == 64:
        raise InvalidKey(
            "this is 64 bytes -- it looks like an ed25519 SECRET key (seed + public key); "
            "give only the 32-byte public key, and keep the secret key secret"
        )
    if len(raw) != 32:
        raise InvalidKey(
            f"an ed25519 public key is 32 bytes, this decodes to {len(raw)}; "
            "check you copied the whole public key (base64, 44 characters, or hex, 64 characters)"
        )
    return raw


def _parse_signing_line(line: str) -> ParsedKey:
    tokens = line.split()
    first = tokens[0] if tokens else ""
    if _is_key_type(first) or _looks_like_options(line):
        ssh_key = _parse_ssh_line(line)
        if ssh_key.algorithm != _ED25519:
            raise InvalidKey(
                f"signing keys are ed25519; a {ssh_key.algorithm} key cannot be used to sign messages "
                f"({_USE_INSTEAD})"
            )
        raw = ssh_key.raw[-32:]  # blob = string "ssh-ed25519" || string pk(32)
        return _signing_from_raw(raw, ssh_key.comment)
    if len(tokens) != 1:
        raise InvalidKey(
            "a signing key is one word: an ed25519 public key as base64 (44 characters) or hex (64 characters)"
        )
    return _signing_from_raw(_signing_raw_from_token(first))


def parse_signing_key(text: str) -> ParsedKey:
    """Parse an ed25519 signing (message verification) public key.

    Accepts 32 raw bytes as base64 (standard or URL-safe, padded or not) or 64
    hex digits, or an ``ssh-ed25519 AAAA...`` line.
    """
    text = _as_text(text)
    _refuse_other_formats(text)
    line = _single_line(text, "signing public key")
    return _parse_signing_line(line)


# -- entry point -----------------------------------------------------------------


def parse_public_key(text: str, kind: str | None = None) -> ParsedKey:
    """Parse one public key of ``kind`` ("ssh", "signing"), or guess the kind when None.

    Auto-detection: an OpenSSH line (``ALGO BASE64 ...``) is an ssh key; a single
    word holding 32 bytes as base64 or hex is a signing key.
    """
    if kind == "ssh":
        return parse_ssh_public_key(text)
    if kind == "signing":
        return parse_signing_key(text)
    if kind is not None:
        raise ValueError(f"unknown key kind {kind!r}; expected one of {KINDS} or None")
    text = _as_text(text)
    _refuse_other_formats(text)
    line = _single_line(text, "public key")
    tokens = line.split()
    if len(tokens) == 1 and not _is_key_type(tokens[0]):
        raw = _decode_signing_token(tokens[0])
        if raw is None or len(raw) not in (32, 64):
            raise InvalidKey(
                "this is neither an OpenSSH public key line ('ssh-ed25519 AAAA... comment', from a .pub file) "
                "nor an ed25519 signing key (32 bytes as base64 or hex)"
            )
        return _parse_signing_line(line)
    return _parse_ssh_line(line)
