"""A small seccomp filter for sandboxed apps (x86-64), handed to bubblewrap as classic BPF.

It refuses what gives an unprivileged process new kernel surface without any use to a web
app: making user namespaces (``unshare``/``clone`` with CLONE_NEWUSER; ``clone3``, whose
flags a filter cannot read, answers ENOSYS so the C library falls back to ``clone``),
the kernel keyring, eBPF, perf events, userfaultfd, and system calls of other ABIs
(i386, x32) that would dodge the checks. Everything else is allowed: the namespaces,
uid, capabilities and nftables do the isolating; this only narrows the kernel's surface.
"""

from __future__ import annotations

import errno
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

# x86-64 system call numbers
NR_CLONE, NR_UNSHARE, NR_CLONE3 = 56, 272, 435
REFUSED = {
    248: "add_key", 249: "request_key", 250: "keyctl", 298: "perf_event_open",
    321: "bpf", 323: "userfaultfd",
}

# classic BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def supported() -> bool:
    return platform.machine() == "x86_64"


def program() -> bytes:
    """The filter as a sequence of ``struct sock_filter`` (what ``bwrap --seccomp FD`` reads)."""
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    enosys = SECCOMP_RET_ERRNO | errno.ENOSYS
    refused = sorted(REFUSED)
    # layout: [0] ld arch, [1] arch check, [2] ld nr, [3] x32 check, [4] clone3,
    # [5] clone, [6] unshare, [7..] refused list, then: ALLOW, flags check (ld, jset, ALLOW),
    # EPERM, ENOSYS
    n_ref = len(refused)
    allow = 7 + n_ref
    flags = allow + 1
    ret_eperm = flags + 3
    ret_enosys = ret_eperm + 1
    code = [
        _insn(LD_W_ABS, 4),  # seccomp_data.arch
        _insn(JEQ_K, AUDIT_ARCH_X86_64, 0, ret_eperm - 2),
        _insn(LD_W_ABS, 0),  # seccomp_data.nr
        _insn(JGE_K, X32_SYSCALL_BIT, ret_eperm - 4, 0),
        _insn(JEQ_K, NR_CLONE3, ret_enosys - 5, 0),
        _insn(JEQ_K, NR_CLONE, flags - 6, 0),
        _insn(JEQ_K, NR_UNSHARE, flags - 7, 0),
    ]
    for i, nr in enumerate(refused):
        pc = 7 + i
        code.append(_insn(JEQ_K, nr, ret_eperm - pc - 1, 0))
    code += [
        _insn(RET_K, SECCOMP_RET_ALLOW),  # allow
        _insn(LD_W_ABS, 16),  # args[0], low 32 bits (little-endian)
        _insn(JSET_K, CLONE_NEWUSER, 1, 0),
        _insn(RET_K, SECCOMP_RET_ALLOW),
        _insn(RET_K, eperm),
        _insn(RET_K, enosys),
    ]
    assert len(code) == ret_enosys + 1
    return b"".join(code)
