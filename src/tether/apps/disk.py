"""Each instance's /data is a filesystem of its own, so its size is a hard limit.

An instance's data directory is the mount point of an ext4 filesystem in a sparse
image file (only what the app writes takes room on the host, and its filesystem has a UUID of
its own), made when the instance first starts, and loop-mounted ``nosuid,nodev`` while the instance runs (across
crashes of the app and restarts of the hub; unmounted when it stops, so with an
``apps_root`` shared between replicas only the one running it has it mounted). An app that
writes past it gets ENOSPC inside its own filesystem; the host's filesystem only
ever holds the image. Removing the instance unmounts it (the loop device goes with
it) and deletes the image.

All of it happens in this process, without the mount tools (a spawn's time is mostly
theirs otherwise): an image is a sparse copy of a template made once per size by
``mkfs.ext4`` (``templates``); the loop device is taken with ``LOOP_CTL_GET_FREE`` and set
up in one ``LOOP_CONFIGURE`` with autoclear, so it detaches by itself when the filesystem
is unmounted or a failed mount closes it; ``mount(2)`` and ``umount2(2)`` do the rest.
While attached, the loop device holds the image's open file and with it an exclusive
``flock``: an image already mounted (by another hub process, or a mount not yet gone) is
refused, never mounted twice, which would corrupt it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import subprocess
import time
import uuid
from pathlib import Path

import google_crc32c

MKFS = "/usr/sbin/mkfs.ext4"
LOOP_CONTROL = "/dev/loop-control"
TIMEOUT = 60
# A mount just given up is released by the kernel a moment later (an exiting sandbox's mount
# namespace, the loop device's rundown): the image's lock waits this long for it.
RELEASE_WAIT = 5.0
# <linux/loop.h>
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
LO_NAME_SIZE = 64
# struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 reserved[8]; }, and in
# loop_info64: 5 u64 (device, inode, rdevice, offset, sizelimit), 4 u32 (number, encrypt_type,
# encrypt_key_size, flags), file_name[64], crypt_name[64], encrypt_key[32], u64 init[2].
_LOOP_CONFIG = struct.Struct("=II 5Q 4I 64s 64s 32s 2Q 8Q")
# <linux/mount.h>
MS_NOSUID, MS_NODEV, MS_NOATIME = 0x2, 0x4, 0x400
MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOATIME
FICLONE = 0x40049409  # <linux/fs.h>
# the ext4 superblock (at byte 1024): features, UUID, and its own crc32c; with the csum_seed
# feature, every other checksum is seeded from a field of its own, not from the UUID
SUPERBLOCK, SUPERBLOCK_SIZE = 1024, 1024
S_FEATURE_INCOMPAT, S_FEATURE_RO_COMPAT, S_UUID, S_CHECKSUM = 0x60, 0x64, 0x68, 0x3FC
INCOMPAT_CSUM_SEED, RO_COMPAT_METADATA_CSUM = 0x2000, 0x400
COPY_CHUNK = 1 << 16

_libc = ctypes.CDLL(None, use_errno=True)
_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


class DiskError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def missing() -> str | None:
    """None when data filesystems can be made here, else what to install or load."""
    if not os.access(MKFS, os.X_OK):
        return f"{MKFS} is missing: install the Debian package 'e2fsprogs'"
    if not os.path.exists(LOOP_CONTROL):
        return f"{LOOP_CONTROL} is missing: load the loop module (`modprobe loop`)"
    return None


def _oserror(what: str) -> DiskError:
    err = ctypes.get_errno()
    return DiskError(f"{what}: {os.strerror(err)} (errno {err})")


def _sparse_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to a new ``dst`` (0600) and keep it sparse: a reflink (FICLONE) where the
    filesystem has them; else the data ranges only (SEEK_DATA/SEEK_HOLE), chunk by chunk,
    skipping chunks of zeros (so a filesystem that reports no holes, an NFS before 4.2,
    still gets a sparse copy)."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.ioctl(fout, FICLONE, fin)  # shares the blocks, copy-on-write
                return
            except OSError:
                pass
            size = os.fstat(fin).st_size
            os.ftruncate(fout, size)
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fin, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(fin, start, os.SEEK_HOLE)
                while start < end:
                    chunk = os.pread(fin, min(COPY_CHUNK, end - start), start)
                    if not chunk:
                        raise DiskError(f"copying {src}: it ended early")
                    if chunk.count(0) != len(chunk):
                        os.pwrite(fout, chunk, start)
                    start += len(chunk)
                pos = end
            os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _superblock(fd: int) -> tuple[bytearray, int, int]:
    sb = bytearray(os.pread(fd, SUPERBLOCK_SIZE, SUPERBLOCK))
    if len(sb) != SUPERBLOCK_SIZE:
        raise DiskError("not an ext4 image: it ends before its superblock does")
    incompat, ro_compat = struct.unpack_from("<II", sb, S_FEATURE_INCOMPAT)
    return sb, incompat, ro_compat


def _seeded(path: Path) -> bool:
    """Whether the filesystem's checksums are seeded apart from its UUID (a template made
    before images got UUIDs of their own is not, and is made again)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return bool(_superblock(fd)[1] & INCOMPAT_CSUM_SEED)
    finally:
        os.close(fd)


def _new_uuid(image: Path) -> None:
    """Give a fresh copy of a template a UUID of its own, as ``tune2fs -U random`` would (a
    host's udev and blkid tell filesystems apart by it), without its process and its fsync:
    only the superblock changes, since with csum_seed no other checksum depends on the UUID."""
    fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        sb, incompat, ro_compat = _superblock(fd)
        if not incompat & INCOMPAT_CSUM_SEED:
            raise DiskError(f"{image}: its template has no csum_seed feature; remove the templates directory")
        sb[S_UUID:S_UUID + 16] = uuid.uuid4().bytes
        if ro_compat & RO_COMPAT_METADATA_CSUM:  # crc32c from ~0, not inverted at the end (e2fsprogs)
            struct.pack_into("<I", sb, S_CHECKSUM, google_crc32c.value(bytes(sb[:S_CHECKSUM])) ^ 0xFFFFFFFF)
        os.pwrite(fd, sb, SUPERBLOCK)
    finally:
        os.close(fd)


def template(templates: Path, size: int) -> Path:
    """The empty filesystem of ``size`` bytes that images are copied from, made the first
    time by ``mkfs.ext4``. The journal is kept: without one, a host that crashes leaves a
    filesystem that needs ``e2fsck`` before it can be trusted, and the hub runs none. It
    costs the host nothing: ``lazy_journal_init`` leaves its blocks holes of the sparse
    file (they read as zeros, which is all a fresh journal needs), and mkfs's discard of the
    file (holes again) lets it mark the inode tables zeroed, so no lazy init writes later."""
    path = templates / f"ext4-{size}.img"
    if path.exists() and _seeded(path):
        return path
    templates.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_name(f"{path.name}.{os.getpid()}.new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)  # sparse: no block is taken until the app writes one
    finally:
        os.close(fd)
    argv = [MKFS, "-q", "-F", "-m", "0", "-L", "tether-data", "-O", "metadata_csum_seed", "-E", "lazy_journal_init=1",
            str(staging)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        if done.returncode != 0:
            raise DiskError(f"making a data filesystem: mkfs.ext4 exited {done.returncode}: "
                            f"{done.stderr.strip()[:300]}")
        os.rename(staging, path)  # whole or not at all; a concurrent maker's is as good
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"making a data filesystem: {exc}") from None
    finally:
        staging.unlink(missing_ok=True)
    return path


def _lock(img: int, image: Path, wait: float) -> None:
    """The image's exclusive lock, waiting up to ``wait`` s for a mount being released."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(img, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the loop device keeps it while attached
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise DiskError(f"{image} is in use (mounted by another process, or not released "
                                f"{wait:g} s after its instance stopped): stop the instance there first") from None
            time.sleep(0.02)


def _attach(image: Path, wait: float = RELEASE_WAIT) -> tuple[int, str]:
    """A loop device backed by ``image``, set up with autoclear: (its open fd, its path).
    Closing the fd before anything else holds the device detaches it."""
    img = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        _lock(img, image, wait)
        name = os.fsencode(image)[:LO_NAME_SIZE - 1]
        config = _LOOP_CONFIG.pack(img, 0, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, name, b"", b"", 0, 0,
                                   *[0] * 8)
        ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(16):  # another process may take the free device first: EBUSY, try the next
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{number}"
                loop = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(loop, LOOP_CONFIGURE, config)
                    return loop, dev
                except OSError as exc:
                    os.close(loop)
                    if exc.errno != errno.EBUSY:
                        raise DiskError(f"setting up a loop device for {image}: {exc.strerror}") from None
            raise DiskError(f"no free loop device for {image}: every one was taken first, try again")
        finally:
            os.close(ctl)
    except OSError as exc:
        raise DiskError(f"setting up a loop device for {image}: {exc}") from None
    finally:
        os.close(img)  # the loop device holds its own reference (and the lock with it)


def ensure(image: Path, mountpoint: Path, size: int, uid: int, gid: int, *, wait: float = RELEASE_WAIT) -> bool:
    """Mount the instance's data filesystem at ``mountpoint``, making the image first if
    there is none (``size`` bytes, a copy of the size's template; the root directory is
    given to the instance's uid). False when it stays a plain directory: data written
    before disk limits existed (a non-empty directory and no image), which mounting over
    would hide. On failure nothing is left mounted or attached."""
    if os.path.ismount(mountpoint):
        return True
    mountpoint.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not image.exists():
        if any(mountpoint.iterdir()):
            return False
        image.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        src = template(image.parent / "templates", size)
        staging = image.with_name(image.name + ".new")
        staging.unlink(missing_ok=True)
        try:
            _sparse_copy(src, staging)
            _new_uuid(staging)
            os.rename(staging, image)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            raise DiskError(f"making the instance's data filesystem: {exc}") from None
        except DiskError:
            staging.unlink(missing_ok=True)
            raise
    loop, dev = _attach(image, wait)
    try:
        if _mount(dev.encode(), os.fsencode(mountpoint), b"ext4", MOUNT_FLAGS, None) != 0:
            raise _oserror(f"mounting the instance's data filesystem {image} at {mountpoint}")
    finally:
        os.close(loop)  # mounted: the filesystem holds the device; not: autoclear detaches it
    try:
        os.chown(mountpoint, uid, gid)
        os.chmod(mountpoint, 0o700)
    except OSError as exc:
        unmount(mountpoint)
        raise DiskError(f"giving {mountpoint} to uid {uid}: {exc}") from None
    return True


def unmount(mountpoint: Path) -> None:
    """Unmount the data filesystem (its loop device goes with it); the image stays. The app
    must have stopped: a busy filesystem is an error, not left lazily."""
    if os.path.ismount(mountpoint) and _umount2(os.fsencode(mountpoint), 0) != 0:
        raise _oserror(f"unmounting the instance's data filesystem at {mountpoint}")


def release(image: Path, mountpoint: Path) -> None:
    """Unmount the data filesystem and delete the image. Idempotent."""
    unmount(mountpoint)
    image.unlink(missing_ok=True)
    image.with_name(image.name + ".new").unlink(missing_ok=True)
