"""Each instance's /data is a filesystem of its own, so its size is a hard limit.

An instance's data directory is the mount point of an ext4 filesystem in a sparse
image file (only what the app writes takes room on the host), made when the instance
first starts, and loop-mounted ``nosuid,nodev`` while the instance runs (across
crashes of the app and restarts of the hub; unmounted when it stops, so with an
``apps_root`` shared between replicas only the one running it has it mounted). An app that
writes past it gets ENOSPC inside its own filesystem; the host's filesystem only
ever holds the image. Removing the instance unmounts it (the loop device goes with
it) and deletes the image. Commands are argv lists; their failures say what failed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MKFS = "/usr/sbin/mkfs.ext4"
MOUNT, UMOUNT = "/usr/bin/mount", "/usr/bin/umount"
TIMEOUT = 60


class DiskError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def missing() -> str | None:
    """None when data filesystems can be made here, else what to install."""
    for tool, package in ((MKFS, "e2fsprogs"), (MOUNT, "mount"), (UMOUNT, "mount")):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing: install the Debian package '{package}'"
    return None


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"{what}: {exc}") from None
    if done.returncode != 0:
        raise DiskError(f"{what}: {' '.join(argv[:2])} exited {done.returncode}: {done.stderr.strip()[:300]}")


def ensure(image: Path, mountpoint: Path, size: int, uid: int, gid: int) -> bool:
    """Mount the instance's data filesystem at ``mountpoint``, making the image first if
    there is none (``size`` bytes, the root directory owned by the instance's uid).
    False when it stays a plain directory: data written before disk limits existed
    (a non-empty directory and no image), which mounting over would hide."""
    if os.path.ismount(mountpoint):
        return True
    mountpoint.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not image.exists():
        if any(mountpoint.iterdir()):
            return False
        image.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = image.with_name(image.name + ".new")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)  # sparse: no block is taken until the app writes one
        finally:
            os.close(fd)
        try:
            _run([MKFS, "-q", "-F", "-m", "0", "-L", "tether-data", "-E", f"root_owner={uid}:{gid}", str(staging)],
                 "making the instance's data filesystem")
        except DiskError:
            staging.unlink(missing_ok=True)
            raise
        os.rename(staging, image)
    _run([MOUNT, "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", str(image), str(mountpoint)],
         "mounting the instance's data filesystem")
    os.chown(mountpoint, uid, gid)
    os.chmod(mountpoint, 0o700)
    return True


def unmount(mountpoint: Path) -> None:
    """Unmount the data filesystem (its loop device goes with it); the image stays. The app
    must have stopped: a busy filesystem is an error, not left lazily."""
    if os.path.ismount(mountpoint):
        _run([UMOUNT, str(mountpoint)], "unmounting the instance's data filesystem")


def release(image: Path, mountpoint: Path) -> None:
    """Unmount the data filesystem and delete the image. Idempotent."""
    unmount(mountpoint)
    image.unlink(missing_ok=True)
    image.with_name(image.name + ".new").unlink(missing_ok=True)
