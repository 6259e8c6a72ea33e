"""An instance's /data filesystem, set up in process (tether.apps.disk): a sparse copy of a
per-size template, a loop device by LOOP_CONFIGURE with autoclear, mount(2)/umount2(2).
Real loop devices and ext4, as root. The properties a user relies on: the size is a hard
limit (ENOSPC), the data outlives a stop, images of one template are independent, an
image is never mounted twice, and whatever fails leaves nothing mounted or attached."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tether.apps import disk

SIZE = 16 << 20


def attached(image: Path) -> list[str]:
    """Loop devices whose backing file is ``image``."""
    found = []
    for dev in os.listdir("/sys/block"):
        backing = Path("/sys/block", dev, "loop", "backing_file")
        try:
            if backing.read_text().strip() in (str(image), f"{image} (deleted)"):
                found.append(dev)
        except (FileNotFoundError, OSError):
            continue
    return found


def mounted(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if line.split()[4] == str(path)]


@pytest.fixture
def root(tmp_path):
    yield tmp_path
    # whatever a failing test left: unmount, so the loop devices detach
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split()[4]
        if point.startswith(str(tmp_path)):
            subprocess.run(["umount", "-l", point], check=False)


def test_size_is_a_hard_limit_and_stop_leaves_nothing_attached(root):
    image, mnt = root / "disks" / "a.img", root / "data" / "a"
    assert disk.ensure(image, mnt, SIZE, 64001, 64002)
    st = os.stat(mnt)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (64001, 64002, 0o700)
    (line,) = mounted(mnt)
    assert {"nosuid", "nodev", "noatime"} <= set(line.split()[5].split(","))
    assert image.stat().st_mode & 0o777 == 0o600 and len(attached(image)) == 1
    wrote = 0
    with pytest.raises(OSError) as exc:
        with open(mnt / "fill", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
                wrote += 1
    assert exc.value.errno == 28 and wrote <= 16  # ENOSPC inside its own filesystem
    assert image.stat().st_size == SIZE and image.stat().st_blocks * 512 <= SIZE + (1 << 20)
    disk.unmount(mnt)
    assert not mounted(mnt) and attached(image) == [] and image.exists()
    # a later start finds the data as it was left
    assert disk.ensure(image, mnt, SIZE, 64001, 64002)
    assert (mnt / "fill").stat().st_size >= wrote << 20
    disk.release(image, mnt)
    disk.release(image, mnt)  # idempotent
    assert not mounted(mnt) and attached(image) == [] and not image.exists()


def test_images_of_one_template_are_independent_and_sparse(root):
    a, b = (root / "disks" / f"{n}.img" for n in "ab")
    ma, mb = root / "data" / "a", root / "data" / "b"
    disk.ensure(a, ma, SIZE, 64001, 64001)
    disk.ensure(b, mb, SIZE, 64003, 64003)
    (ma / "only-a").write_text("a")
    assert not (mb / "only-a").exists() and os.stat(mb).st_uid == 64003
    templates = list((root / "disks" / "templates").iterdir())
    assert [t.name for t in templates] == [f"ext4-{SIZE}.img"]  # made once, for both
    assert templates[0].stat().st_blocks * 512 < 2 << 20  # sparse: the empty filesystem's metadata only
    groups = subprocess.run(["dumpe2fs", str(templates[0])], capture_output=True, text=True).stdout
    assert groups.count("ITABLE_ZEROED") == len(re.findall(r"^Group \d+:", groups, re.M))  # no lazy init will write zeros
    # each copy has a UUID of its own (the host's udev and blkid tell them apart by it), and
    # the checksums stay valid: e2fsck finds nothing to mend
    uuids = {fs_uuid(x) for x in (a, b, templates[0])}
    assert len(uuids) == 3
    for image, mnt in ((a, ma), (b, mb)):
        disk.unmount(mnt)
        check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        disk.release(image, mnt)
        assert attached(image) == []


def fs_uuid(image: Path) -> str:
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(image)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_template_from_before_seeded_checksums_is_made_again(root):
    """A hub upgraded in place has templates made without csum_seed, whose copies cannot get a
    UUID of their own without rewriting every checksum: the template is made again."""
    templates = root / "disks" / "templates"
    templates.mkdir(parents=True)
    old = templates / f"ext4-{SIZE}.img"
    with open(old, "wb") as f:
        f.truncate(SIZE)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(old)], check=True)
    before = fs_uuid(old)
    image, mnt = root / "disks" / "a.img", root / "data" / "a"
    assert disk.ensure(image, mnt, SIZE, 64001, 64001)
    assert "metadata_csum_seed" in subprocess.run(["dumpe2fs", "-h", str(old)], capture_output=True,
                                                  text=True).stdout
    assert len({before, fs_uuid(old), fs_uuid(image)}) == 3
    disk.release(image, mnt)


def test_an_image_in_use_is_never_mounted_twice(root):
    image, mnt, other = root / "disks" / "a.img", root / "data" / "a", root / "data" / "b"
    disk.ensure(image, mnt, SIZE, 64001, 64001)
    started = time.monotonic()
    with pytest.raises(disk.DiskError, match="in use"):
        disk.ensure(image, other, SIZE, 64001, 64001, wait=0.3)
    assert time.monotonic() - started >= 0.3  # it waited for a release that did not come
    assert not mounted(other) and len(attached(image)) == 1
    disk.release(image, mnt)
    assert attached(image) == []


def test_a_start_waits_for_the_release_of_a_mount_just_given_up(root):
    """The kernel lets go of an unmounted image a moment later (a sandbox's mount namespace
    exiting, the loop device's rundown): a start right after a stop waits for it, not fails.
    Here another open of the image holds its lock, as the loop device does, for 0.5 s."""
    image, mnt = root / "disks" / "a.img", root / "data" / "a"
    disk.ensure(image, mnt, SIZE, 64001, 64001)
    disk.unmount(mnt)
    holder = os.open(image, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    threading.Timer(0.5, os.close, (holder,)).start()
    started = time.monotonic()
    assert disk.ensure(image, mnt, SIZE, 64001, 64001)
    assert time.monotonic() - started >= 0.4 and len(mounted(mnt)) == 1 and len(attached(image)) == 1
    disk.release(image, mnt)
    assert attached(image) == []


def test_a_failed_mount_leaves_no_loop_device(root):
    image, mnt = root / "disks" / "bad.img", root / "data" / "bad"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\0" * SIZE)  # no filesystem in it
    with pytest.raises(disk.DiskError, match="mounting"):
        disk.ensure(image, mnt, SIZE, 64001, 64001)
    assert not mounted(mnt) and attached(image) == []


def test_a_size_mkfs_refuses_leaves_no_image(root):
    image, mnt = root / "disks" / "tiny.img", root / "data" / "tiny"
    with pytest.raises(disk.DiskError, match="mkfs.ext4"):
        disk.ensure(image, mnt, 4096, 64001, 64001)
    assert not image.exists() and not mounted(mnt)
    assert list((root / "disks").rglob("*.img*")) == []


def test_a_busy_filesystem_is_not_left_lazily(root):
    image, mnt = root / "disks" / "a.img", root / "data" / "a"
    disk.ensure(image, mnt, SIZE, 64001, 64001)
    with open(mnt / "open", "w"):
        with pytest.raises(disk.DiskError, match="busy"):
            disk.unmount(mnt)
        assert mounted(mnt)
    disk.release(image, mnt)
    assert not mounted(mnt) and attached(image) == []


def test_old_data_without_an_image_is_not_hidden(root):
    image, mnt = root / "disks" / "old.img", root / "data" / "old"
    mnt.mkdir(parents=True)
    (mnt / "kept").write_text("from before disk limits")
    assert disk.ensure(image, mnt, SIZE, 64001, 64001) is False
    assert not mounted(mnt) and not image.exists() and (mnt / "kept").read_text() == "from before disk limits"


def test_the_copy_stays_sparse_where_holes_are_not_reported(root):
    """A source whose zeros are real blocks (what a filesystem without SEEK_HOLE looks like):
    the copy writes only the chunks that hold data."""
    src, dst = root / "dense.img", root / "copy.img"
    with open(src, "wb") as f:
        f.write(b"\0" * (8 << 20))
        f.seek(3 << 20)
        f.write(b"superblock")
        f.flush()
        os.fsync(f.fileno())
    assert src.stat().st_blocks * 512 >= 8 << 20
    disk._sparse_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 <= 1 << 20 and dst.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):  # never over an existing file
        disk._sparse_copy(src, dst)
