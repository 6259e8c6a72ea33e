"""Which ed25519 implementation a one-shot ``tether signal -s`` should sign with: import + sign, per process.

A quick send is a new process that signs twice (the server's nonce with the creds'
nkey seed, the envelope with the config's identity) and derives the public key of
each identity in its config once. For a process that lives a few milliseconds, the
library's import is most of that cost, so each option runs as its own fresh
process (``python -c`` of this checkout's interpreter) doing exactly that work:
import, derive a public key from a 32-byte seed, sign 2 messages; next to ``python
-c pass`` (the floor), taking turns in one run. Reported: the median CPU time (user
+ system, from ``wait4``) and wall time, each minus the floor's, and the share of
it that is the import alone (a second process that only imports). Every option's
signature is checked against the same fixed vector, so they are all doing the same
work. Options whose package is not installed are listed as such; ``--path DIR``
adds a directory of extra packages (e.g. ``pip install --target DIR pysodium
ecdsa pycryptodomex``) for the options the project does not depend on.

Run from the repository root::

    .venv/bin/python benchmarks/ed25519_start.py --write-docs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine_lines, write_section  # noqa: E402

SECTION = "## ed25519 for a one-shot send"
SEED = bytes(range(32))
MESSAGES = (b"nonce-from-the-server", b"**,18a0b2c3d4e5f607,00112233445566778899aabb,ping,_,hello")

#: label -> (what the import is, the code that imports; the code that signs, with SEED and MSGS bound)
#: each signing snippet leaves the public key in PUB and the signatures in SIGS
OPTIONS: dict[str, tuple[str, str]] = {
    "cryptography, public API (`hazmat.primitives.asymmetric.ed25519`)": (
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey",
        "k = Ed25519PrivateKey.from_private_bytes(SEED); PUB = k.public_key().public_bytes_raw()\n"
        "SIGS = [k.sign(m) for m in MSGS]"),
    "cryptography, its Rust binding only (`hazmat.bindings._rust.openssl.ed25519`)": (
        "from cryptography.hazmat.bindings._rust import openssl",
        "k = openssl.ed25519.from_private_bytes(SEED); PUB = k.public_key().public_bytes_raw()\n"
        "SIGS = [k.sign(m) for m in MSGS]"),
    "PyNaCl, public API (`nacl.signing`, as nkeys uses it)": (
        "import nacl.signing",
        "k = nacl.signing.SigningKey(SEED); PUB = bytes(k.verify_key)\n"
        "SIGS = [k.sign(m).signature for m in MSGS]"),
    "PyNaCl, its bindings (`nacl.bindings`)": (
        "from nacl.bindings import crypto_sign, crypto_sign_seed_keypair",
        "PUB, sk = crypto_sign_seed_keypair(SEED)\nSIGS = [crypto_sign(m, sk)[:64] for m in MSGS]"),
    "PyNaCl's libsodium through cffi (`nacl._sodium`)": (
        "from nacl._sodium import ffi, lib",
        "lib.sodium_init(); pk = ffi.new('unsigned char[32]'); sk = ffi.new('unsigned char[64]')\n"
        "lib.crypto_sign_seed_keypair(pk, sk, SEED); PUB = bytes(pk)\n"
        "def sign(m):\n"
        "    s = ffi.new('unsigned char[]', len(m) + 64); lib.crypto_sign(s, ffi.NULL, m, len(m), sk)\n"
        "    return ffi.buffer(s, 64)[:]\n"
        "SIGS = [sign(m) for m in MSGS]"),
    "pysodium (libsodium through ctypes)": (
        "import pysodium",
        "PUB, sk = pysodium.crypto_sign_seed_keypair(SEED)\nSIGS = [pysodium.crypto_sign_detached(m, sk) for m in MSGS]"),
    "PyCryptodome (`Cryptodome.Signature.eddsa`)": (
        "from Cryptodome.PublicKey import ECC\nfrom Cryptodome.Signature import eddsa",
        "k = ECC.construct(curve='Ed25519', seed=SEED); PUB = k.public_key().export_key(format='raw')\n"
        "SIGS = [eddsa.new(k, 'rfc8032').sign(m) for m in MSGS]"),
    "ecdsa (pure Python)": (
        "from ecdsa import Ed25519, SigningKey",
        "k = SigningKey.from_string(SEED, curve=Ed25519); PUB = k.get_verifying_key().to_string()\n"
        "SIGS = [k.sign(m) for m in MSGS]"),
}  # fmt: skip


def programs(imports: str, signs: str) -> tuple[str, str]:
    """The import-only program and the whole one (which prints the public key and signatures)."""
    whole = f"{imports}\nSEED = {SEED!r}\nMSGS = {MESSAGES!r}\n{signs}\nprint(PUB.hex(), *(s.hex() for s in SIGS))"
    return imports, whole


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall and CPU milliseconds of one process, and its stdout."""
    import time

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[-1][:60]!r} failed")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000, out


def expected() -> str:
    """The fixed vector every option must print: cryptography's answer, computed here."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.from_private_bytes(SEED)
    return " ".join([k.public_key().public_bytes_raw().hex(), *(k.sign(m).hex() for m in MESSAGES)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="timed runs of each program (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    ap.add_argument("--path", help="a directory of extra packages for the options the project does not depend on")
    ap.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r} in docs/benchmarks.md")
    args = ap.parse_args()

    env = dict(os.environ)
    if args.path:
        env["PYTHONPATH"] = args.path
    load = os.getloadavg()[0]
    want = expected()
    cases: dict[str, list[str]] = {"floor": [sys.executable, "-c", "pass"]}
    missing: list[str] = []
    for label, (imports, signs) in OPTIONS.items():
        only_import, whole = programs(imports, signs)
        try:
            _, _, out = run([sys.executable, "-c", whole], env)
        except RuntimeError:
            missing.append(label)
            continue
        if out.decode().strip() != want:
            raise SystemExit(f"{label}: a different key or signature than cryptography's: {out!r}")
        cases[f"import: {label}"] = [sys.executable, "-c", only_import]
        cases[label] = [sys.executable, "-c", whole]
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in cases}
    for i in range(args.warmup + args.runs):
        for key, argv in cases.items():
            wall, cpu, _ = run(argv, env)
            if i >= args.warmup:
                times[key][0].append(wall)
                times[key][1].append(cpu)
    med = {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in times.items()}
    fw, fc = med["floor"]
    lines = ["| option | CPU over the floor (ms) | of which the import (ms) | wall over the floor (ms) |",
             "|---|---:|---:|---:|", f"| `python -c pass` (the floor: {fc:.1f} ms CPU, {fw:.1f} ms wall) | — | — | — |"]
    for label in OPTIONS:
        if label in missing:
            lines.append(f"| {label} | not installed | | |")
            continue
        (w, c), (_, ic) = med[label], med[f"import: {label}"]
        lines.append(f"| {label} | {c - fc:.1f} | {ic - fc:.1f} | {w - fw:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        body = "\n".join([
            SECTION, "",
            "What signing costs a process that lives a few milliseconds (issue 22's `tether signal -s`): each "
            "option runs as a fresh `python -c` that imports it, derives the public key of a 32-byte seed and "
            "signs two messages (the server's nonce, an envelope), and prints them; every option's output is "
            "checked against cryptography's (the same fixed vector). A second process only imports, to show "
            f"the import's share. {args.warmup} warm-up rounds, then {args.runs} rounds in which the programs "
            "take turns with `python -c pass`; medians, minus the floor's. CPU time (user + system, from "
            "`wait4`) is what the process costs whatever else runs; wall time grows with the machine's load.",
            "",
            "The choice: `tether.signal.ed25519` signs with PyNaCl's libsodium through cffi (`nacl._sodium`), "
            "the cheapest here by several milliseconds; PyNaCl is a dependency already (nkeys signs with it), "
            "and libsodium's signatures are the same bytes as OpenSSL's (ed25519 is deterministic; the check "
            "above and the fixed vectors in tests/signal hold it). The long-running paths (verification of "
            "received messages, key generation) keep `cryptography`.",
            "", "Machine:", "",
            *machine_lines(cpu_note="shared with other work", load=load),
            "", "Command (from the repository root):", "", "```sh",
            ".venv/bin/python benchmarks/ed25519_start.py --write-docs"
            + (" --path DIR  # DIR: pip install --target DIR pysodium ecdsa pycryptodomex" if args.path else ""),
            "```", "", table, "",
        ])
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
