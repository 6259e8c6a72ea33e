"""``authorized_keys`` lines: write them for tether's forced command, and check
that a file lets no key in without it. Sans-IO: strings in, results out.

The parser follows OpenSSH's ``sshd(8)`` AUTHORIZED_KEYS FILE FORMAT: a line is
``[options] keytype base64-key [comment]``; options are comma-separated, each
``name`` or ``name="value"``, where a value may hold commas and spaces and
``\\"`` stands for a quote; option names are case-insensitive; they are applied
in order, so ``restrict,port-forwarding`` re-enables port forwarding.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from tether.units import USER_NAME_RE

__all__ = [
    "KEY_TYPES",
    "KeyLine",
    "LineReport",
    "ParseError",
    "check_line",
    "check_text",
    "forced_line",
    "parse_line",
]

#: Key types sshd accepts on a line (certificates and security keys included).
KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com", "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
})

#: Options that take a ``="value"``.
VALUE_OPTIONS = frozenset({"command", "environment", "from", "permitopen", "permitlisten", "principals",
                           "tunnel", "expiry-time"})
#: Flags (no value), each either switching a permission on or off, or neutral.
_FLAG_EFFECT = {
    "port-forwarding": ("port-forwarding", True), "no-port-forwarding": ("port-forwarding", False),
    "agent-forwarding": ("agent-forwarding", True), "no-agent-forwarding": ("agent-forwarding", False),
    "x11-forwarding": ("x11-forwarding", True), "no-x11-forwarding": ("x11-forwarding", False),
    "pty": ("pty", True), "no-pty": ("pty", False),
    "user-rc": ("user-rc", True), "no-user-rc": ("user-rc", False),
}
_NEUTRAL_FLAGS = frozenset({"cert-authority", "no-touch-required", "verify-required", "touch-required"})
_PERMISSIONS = ("port-forwarding", "agent-forwarding", "x11-forwarding", "pty", "user-rc")
_B64 = re.compile(r"\A[A-Za-z0-9+/]+={0,2}\Z")


class ParseError(ValueError):
    """The line is not a valid ``authorized_keys`` line (sshd would skip it)."""


@dataclass(frozen=True)
class KeyLine:
    options: tuple[tuple[str, str | None], ...]  # (lower-cased name, unescaped value or None), in order
    keytype: str
    key: str
    comment: str = ""

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.options if n == name and v is not None]


@dataclass
class LineReport:
    lineno: int
    text: str
    reasons: list[str] = field(default_factory=list)
    key: KeyLine | None = None

    @property
    def safe(self) -> bool:
        return not self.reasons


def _parse_options(text: str) -> tuple[tuple[tuple[str, str | None], ...], int]:
    """Parse the options at the start of ``text``; return them and where the key starts."""
    opts: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while True:
        m = re.match(r"[A-Za-z0-9-]+", text[i:])
        if not m:
            raise ParseError(f"bad option syntax at column {i + 1}")
        name = m.group(0).lower()
        i += m.end()
        value: str | None = None
        if i < n and text[i] == "=":
            if i + 1 >= n or text[i + 1] != '"':
                raise ParseError(f"option {name}= must be followed by a double-quoted value")
            i += 2
            buf = []
            while True:
                if i >= n:
                    raise ParseError(f"unterminated quoted value of option {name}")
                c = text[i]
                if c == "\\" and i + 1 < n and text[i + 1] == '"':
                    buf.append('"')
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                buf.append(c)
                i += 1
            value = "".join(buf)
            if name not in VALUE_OPTIONS:
                raise ParseError(f"option {name} takes no value")
        elif name in VALUE_OPTIONS:
            raise ParseError(f"option {name} needs a value ({name}=\"...\")")
        elif name != "restrict" and name not in _FLAG_EFFECT and name not in _NEUTRAL_FLAGS:
            raise ParseError(f"unknown option {name}")
        opts.append((name, value))
        if i >= n:
            raise ParseError("options with no key after them")
        if text[i] == ",":
            i += 1
            continue
        if text[i] in " \t":
            return tuple(opts), i
        raise ParseError(f"unexpected {text[i]!r} after option {name} (column {i + 1})")


def parse_line(line: str) -> KeyLine | None:
    """Parse one line; ``None`` for a blank line or a comment. :class:`ParseError` if invalid."""
    text = line.strip(" \t\r\n")
    if not text or text.startswith("#"):
        return None
    if any(ord(c) < 32 and c != "\t" for c in text):
        raise ParseError("control characters in the line")
    first = re.split(r"[ \t]+", text, maxsplit=1)[0]
    options: tuple[tuple[str, str | None], ...] = ()
    rest = text
    if first not in KEY_TYPES:
        options, end = _parse_options(text)
        rest = text[end:].lstrip(" \t")
    parts = re.split(r"[ \t]+", rest, maxsplit=2)
    if len(parts) < 2:
        raise ParseError("no key data")
    keytype, key = parts[0], parts[1]
    if keytype not in KEY_TYPES:
        raise ParseError(f"unknown key type {keytype[:40]!r}")
    if not _B64.match(key):
        raise ParseError("key data is not base64")
    return KeyLine(options, keytype, key, parts[2] if len(parts) > 2 else "")


def check_line(line: str, lineno: int = 1) -> LineReport | None:
    """Check one line; ``None`` for a blank line or comment. Reasons list what is unsafe."""
    report = LineReport(lineno, line.rstrip("\r\n"))
    try:
        k = parse_line(line)
    except ParseError as exc:
        report.reasons.append(f"invalid line: {exc} (sshd skips it; fix or remove it)")
        return report
    if k is None:
        return None
    report.key = k
    perm = dict.fromkeys(_PERMISSIONS, True)
    commands = 0
    for name, value in k.options:
        if name == "restrict":
            perm = dict.fromkeys(_PERMISSIONS, False)
        elif name in _FLAG_EFFECT:
            what, on = _FLAG_EFFECT[name]
            perm[what] = on
        elif name == "command":
            commands += 1
            if not (value or "").strip():
                report.reasons.append("empty command=: no real forced command")
        elif name in ("permitopen", "permitlisten"):
            report.reasons.append(f'{name}="{value}" opens forwarding destinations')
        elif name == "environment":
            report.reasons.append("environment= can change the forced command's environment "
                                  "(PATH, LD_PRELOAD) when sshd has PermitUserEnvironment on")
        elif name == "tunnel":
            report.reasons.append("tunnel= allows tun device forwarding")
    if commands == 0:
        report.reasons.insert(0, "no forced command (command=\"...\"): this key gets a shell")
    elif commands > 1:
        report.reasons.append("more than one command= option")
    for what in _PERMISSIONS:
        if perm[what] and what != "user-rc":
            report.reasons.append(f"{what} allowed (add restrict, or no-{what})")
    if perm["user-rc"] and any(n == "user-rc" for n, _ in k.options):
        report.reasons.append("user-rc re-enabled")
    return report


def check_text(text: str) -> list[LineReport]:
    """Check every line of a file's text; returns reports for non-blank, non-comment lines."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        r = check_line(line, n)
        if r is not None:
            out.append(r)
    return out


def forced_line(command_path: str, user: str, public_key: str, fingerprint: str) -> str:
    """``restrict,command="PATH ssh-serve USER" KEYTYPE BASE64 tether:USER:FINGERPRINT``.

    ``public_key`` is ``KEYTYPE BASE64`` (as the hub stores it). The command is
    shell-quoted (sshd runs it with the account's shell) and then escaped for
    the quoted option value.
    """
    if not USER_NAME_RE.match(user):
        raise ValueError(f"user name {user!r} is not a valid tether user name")
    if not command_path or any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in command_path):
        raise ValueError("the command path is empty or holds control characters")
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES or not _B64.match(parts[1]):
        raise ValueError(f"not an SSH public key: {public_key[:40]!r}")
    if not re.fullmatch(r"[A-Za-z0-9:+/=_.-]+", fingerprint):
        raise ValueError(f"odd fingerprint {fingerprint!r}")
    command = f"{shlex.quote(command_path)} ssh-serve {user}"
    escaped = command.replace('"', '\\"')
    return f'restrict,command="{escaped}" {parts[0]} {parts[1]} tether:{user}:{fingerprint}'
