"""The O_DIRECT appender: whatever the mix of writes, truncates and flushes, the file
holds exactly the bytes appended, with O_DIRECT and without it."""

from __future__ import annotations

import errno
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.blobs.direct import BLOCK, Appender


def test_direct_io_is_used_where_the_filesystem_takes_it(tmp_path):
    with Appender(tmp_path / "f", create=True, buffer_size=BLOCK * 4) as a:
        a.write(os.urandom(BLOCK * 5 + 17))
        took = a.direct
    assert (tmp_path / "f").stat().st_size == BLOCK * 5 + 17
    if not took:
        pytest.skip("this filesystem does not take O_DIRECT")


def test_a_device_refusing_direct_writes_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    """Some filesystems open with O_DIRECT and then refuse the writes (EINVAL): stand-in
    for one, since none is at hand here."""
    real = os.pwrite
    a = Appender(tmp_path / "f", create=True, buffer_size=BLOCK * 2)
    direct_fd = a._dfd

    def pwrite(fd, data, offset):
        if fd == direct_fd and direct_fd >= 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    data = os.urandom(BLOCK * 7 + 3)
    a.write(data)
    a.close()
    assert not a.direct
    assert (tmp_path / "f").read_bytes() == data


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 3 * BLOCK + 5)),
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("flush"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, start=st.integers(0, 3 * BLOCK), seed=st.integers(0, 2**32 - 1))
def test_any_sequence_leaves_exactly_the_model(tmp_path_factory, ops, start, seed):
    rng = random.Random(seed)
    base = tmp_path_factory.mktemp("direct")
    for direct, background in ((True, False), (False, False), (True, True)):
        path = base / f"f{direct}{background}"
        model = bytearray(rng.randbytes(start + rng.randint(0, BLOCK)))
        path.write_bytes(model)
        a = Appender(path, offset=start, buffer_size=BLOCK * 2, direct=direct, background=background)
        del model[start:]  # everything after the offset is dropped
        try:
            for op, arg in ops:
                if op == "write":
                    data = rng.randbytes(arg)
                    a.write(data)
                    model += data
                elif op == "truncate":
                    cut = int(arg * len(model))
                    a.truncate(cut)
                    del model[cut:]
                else:
                    a.flush()
                    assert path.read_bytes() == model
                assert a.position == len(model)
            a.close()
            assert path.read_bytes() == model
        finally:
            a.abort()


def test_resuming_inside_a_block_keeps_the_bytes_before_it(tmp_path):
    path = tmp_path / "upload"
    head = os.urandom(BLOCK + 100)
    path.write_bytes(head + b"garbage after the offset")
    with Appender(path, offset=len(head), buffer_size=BLOCK * 2) as a:
        a.write(b"tail" * 5000)
    assert path.read_bytes() == head + b"tail" * 5000


def test_abort_drops_what_was_not_flushed(tmp_path):
    path = tmp_path / "f"
    a = Appender(path, create=True, buffer_size=BLOCK * 2)
    a.write(b"a" * 100)
    a.flush()
    a.write(b"b" * 100)
    a.abort()
    assert path.read_bytes() == b"a" * 100
    a.abort()  # twice is fine
    a.close()  # and close after abort does nothing


def test_refuses_offsets_outside_the_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    with pytest.raises(ValueError, match="outside the file"):
        Appender(path, offset=6)
    with Appender(path) as a:
        assert a.position == 5
        with pytest.raises(ValueError, match="outside"):
            a.truncate(6)
    with pytest.raises(ValueError, match="multiple"):
        Appender(path, buffer_size=100)
    assert path.read_bytes() == b"12345"


def test_create_refuses_an_existing_file_and_makes_it_private(tmp_path):
    path = tmp_path / "f"
    with Appender(path, create=True) as a:
        a.write(b"x")
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        Appender(path, create=True)
    assert path.read_bytes() == b"x"


def test_a_full_disk_fails_the_write_and_leaves_nothing_pinned(tmp_path, monkeypatch):
    def pwrite(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    a = Appender(tmp_path / "f", create=True, buffer_size=BLOCK * 2)
    monkeypatch.setattr(os, "pwrite", pwrite)
    try:
        a.write(os.urandom(BLOCK * 3))
    except OSError as exc:
        assert "No space left" in str(exc)
        a.abort()  # while the error's traceback is alive, as BlobWriter.write does: no BufferError
    else:
        pytest.fail("the write should have failed")
    assert a.fd == -1 and not a.direct


def test_a_pack_on_a_full_disk_is_refused_and_removed(tmp_path, monkeypatch):
    import hashlib

    from tether.blobs.fs import FsBlobStore

    store = FsBlobStore(tmp_path / "blobs")
    data = os.urandom(5 << 20)  # more than the buffer: a write reaches the disk at once
    pw = store.pack_writer()

    def pwrite(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", pwrite)
    try:
        pw.add(hashlib.sha256(data).hexdigest(), [data])
    except OSError as exc:
        assert "No space left" in str(exc)
        pw.abort()  # as the hub does while handling the error
    else:
        pytest.fail("the add should have failed")
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_background_writes_keep_every_byte_in_order(tmp_path):
    """The writer thread writes one buffer while the next fills: many switches, one file."""
    rng = random.Random(5)
    pieces = [rng.randbytes(rng.randint(1, 3 * BLOCK)) for _ in range(400)]
    with Appender(tmp_path / "f", create=True, buffer_size=BLOCK * 4, background=True) as a:
        for p in pieces:
            a.write(p)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def test_a_background_write_error_surfaces_and_nothing_is_pinned(tmp_path, monkeypatch):
    real = os.pwrite
    a = Appender(tmp_path / "f", create=True, buffer_size=BLOCK * 2, background=True)
    if not a.direct:
        pytest.skip("this filesystem does not take O_DIRECT: no background writes")
    direct_fd = a._dfd

    def pwrite(fd, data, offset):
        if fd == direct_fd:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    a.write(os.urandom(BLOCK * 2))  # fills the buffer: handed to the writer thread, which fails
    try:
        a.flush()  # waits for it: its error comes here
    except OSError as exc:
        assert "Input/output error" in str(exc)
        a.abort()
    else:
        pytest.fail("the failed write should have been reported")
    assert a.fd == -1


def test_a_closed_appenders_buffer_is_reused_and_leaks_nothing_into_the_next_file(tmp_path):
    """Staging buffers are pooled (a fresh mapping faults on every page): the next
    appender gets the same memory, still holding the last file's bytes, and its own
    file must hold only what it was given, partial last block included."""
    from tether.blobs import direct

    size = BLOCK * 3
    direct._pool.clear()
    secret = b"S" * (BLOCK * 2 + 100)
    with Appender(tmp_path / "a", create=True, buffer_size=size) as a:
        a.write(secret)
        first = a._buf
    assert direct._pool == [first]
    with Appender(tmp_path / "b", create=True, buffer_size=size) as b:
        assert b._buf is first
        b.write(b"x" * 10)
        b.flush()
        b.write(b"y" * (BLOCK + 5))
        b.truncate(BLOCK)
    assert (tmp_path / "b").read_bytes() == b"x" * 10 + b"y" * (BLOCK - 10)
    assert (tmp_path / "a").read_bytes() == secret


def test_a_buffer_with_a_live_view_is_not_pooled(tmp_path):
    from tether.blobs import direct

    direct._pool.clear()
    a = Appender(tmp_path / "a", create=True, buffer_size=BLOCK * 2)
    view = memoryview(a._buf)[:10]  # e.g. kept alive by an error's traceback
    a.close()
    assert direct._pool == []
    view.release()


def test_the_pool_keeps_at_most_pool_kept_buffers(tmp_path):
    from tether.blobs import direct

    direct._pool.clear()
    appenders = [Appender(tmp_path / f"f{i}", create=True, buffer_size=BLOCK * 2) for i in range(direct.POOL_KEPT + 2)]
    for a in appenders:
        a.close()
    assert len(direct._pool) == direct.POOL_KEPT
