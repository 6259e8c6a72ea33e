"""Appending blob bytes to a file around the page cache (``O_DIRECT``).

The hub fsyncs every blob before it says the blob exists, so the bytes must reach
the disk before the request ends whatever we do. Written through the page cache
they are copied twice (into the cache, then to the disk at fsync) and the fsync
at the end waits for all of it; written with ``O_DIRECT`` they go from one reused,
page-aligned buffer straight to the disk while the rest of the upload is still
arriving, and the final fsync has only the file's size and the last partial
block left to flush. On a virtual machine whose fresh page-cache memory is slow
to touch, that was the difference between 0.55 s and 1.6-3 s for writing 1 GiB
durably (``docs/benchmarks.md``).

``O_DIRECT`` needs the buffer, the length and the file offset aligned to the
device's block; :class:`Appender` keeps its staging buffer aligned to
:data:`BLOCK` (4096, a multiple of every common logical block size) and writes
whole blocks that way. Whatever is not a whole block (the tail at :meth:`flush`)
goes through the page cache and is rewritten in place by the next direct write;
Linux keeps the two paths coherent. Where ``O_DIRECT`` is missing or refused
(tmpfs, some network filesystems, not Linux) every write goes through the page
cache instead; nothing else changes.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from typing import Self

__all__ = ["BLOCK", "BUFFER", "Appender"]

BLOCK = 4096
BUFFER = 4 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_writers = None  # shared by every appender; started on first use

# Staging buffers outlive their appenders: a fresh mapping costs a page fault per 4 KiB
# the first time it is touched (measured on the benchmark's VM: ~55 ms of CPU to copy
# 55 MB through fresh 4 MiB buffers, 5 ms through one already touched), and every
# batch upload's pack used to fill a fresh one. Up to POOL_KEPT idle buffers are kept;
# their pages stay resident (16 MiB at most with the default size).
POOL_KEPT = 4
_pool: list[mmap.mmap] = []
_pool_lock = threading.Lock()


def _take_buffer(size: int) -> mmap.mmap:
    with _pool_lock:
        for i, buf in enumerate(_pool):
            if len(buf) == size:
                return _pool.pop(i)
    return mmap.mmap(-1, size)  # page-aligned


def _give_back(buf: mmap.mmap) -> None:
    """Keep ``buf`` for the next appender, or unmap it. Only a buffer no view of which is
    alive is kept (resizing fails while one is): no one can read what the next appender
    stages in it."""
    try:
        buf.resize(len(buf))
    except BufferError:  # a slice still alive somewhere: unmapped when it goes
        return
    except (OSError, ValueError, SystemError):  # cannot resize here: not pooled
        buf.close()
        return
    with _pool_lock:
        if len(_pool) < POOL_KEPT:
            _pool.append(buf)
            return
    buf.close()


def _writer_pool():
    global _writers
    if _writers is None:
        from concurrent.futures import ThreadPoolExecutor

        _writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tether-direct")
    return _writers


class Appender:
    """Appends to ``path`` from ``offset`` (default: its end); one thread at a time.

    ``position`` is the logical end (what a reader sees after :meth:`flush`). The
    bytes of the last partial block stay in the buffer until :meth:`flush`, so call
    :meth:`flush` (or :meth:`sync`, or :meth:`close`) before anything reads the file.

    ``background=True`` hands each full buffer's direct write to a writer thread and goes
    on filling a second buffer meanwhile, so the disk works while the caller receives
    and hashes the next bytes (a 1 GiB upload: ~0.2 s less here). A write error then
    surfaces at the next buffer switch or at :meth:`flush`. For long sequential
    writes; small packs are faster without the hand-over.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, offset: int | None = None,
                 direct: bool = True, buffer_size: int = BUFFER, background: bool = False) -> None:
        if buffer_size < BLOCK or buffer_size % BLOCK:
            raise ValueError(f"buffer_size must be a positive multiple of {BLOCK}")
        flags = os.O_RDWR | _CLOEXEC | ((os.O_CREAT | os.O_EXCL) if create else 0)
        self.fd = os.open(path, flags, 0o600)
        self._dfd = -1
        try:
            if direct and hasattr(os, "O_DIRECT"):
                try:
                    self._dfd = os.open(path, os.O_WRONLY | os.O_DIRECT | _CLOEXEC)
                except OSError:
                    pass  # a filesystem without O_DIRECT: the page cache it is
            self._buf = _take_buffer(buffer_size)  # page-aligned, reused for every block
            self._view = memoryview(self._buf)
            self._spare: mmap.mmap | None = None  # the second buffer, while the first is being written
            self._spare_view: memoryview | None = None
            self._pending = None  # the writer thread's write of the spare buffer
            self._background = background
            end = os.fstat(self.fd).st_size
            start = end if offset is None else offset
            if not 0 <= start <= end:
                raise ValueError(f"offset {start} is outside the file (0..{end})")
            if start < end:
                os.ftruncate(self.fd, start)
            self._on_disk = start  # the file's size
            self._load_block(start)
            self._flushed = start  # position up to which the file holds every byte
        except BaseException:
            self._close_fds()
            raise

    @property
    def position(self) -> int:
        return self._base + self._len

    @property
    def direct(self) -> bool:
        """Whether whole blocks currently bypass the page cache."""
        return self._dfd >= 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        start = self._len
        end = start + memoryview(data).nbytes
        if end < len(self._buf):  # fits (the common case: small blobs into a pack)
            self._buf[start:end] = data
            self._len = end
            return
        mv = memoryview(data).cast("B")
        cap = len(self._buf)
        while mv:
            n = min(len(mv), cap - self._len)
            self._view[self._len : self._len + n] = mv[:n]
            self._len += n
            mv = mv[n:]
            if self._len == cap:
                self._drain()

    def truncate(self, offset: int) -> None:
        """Cut the file back to ``offset`` bytes (dropping what was appended after it)."""
        if not 0 <= offset <= self.position:
            raise ValueError(f"offset {offset} is outside 0..{self.position}")
        self._settle()
        if offset < self._on_disk:
            os.ftruncate(self.fd, offset)
            self._on_disk = offset
        self._flushed = min(self._flushed, offset)
        if offset >= self._base:
            self._len = offset - self._base
        else:
            self._load_block(offset)

    def flush(self) -> None:
        """Write everything appended so far into the file (not yet durable: see :meth:`sync`)."""
        if self.position == self._flushed:
            return  # nothing new (e.g. close() after sync()): the tail is not written again
        self._drain()
        self._settle()
        if self._len:  # the partial last block, through the page cache; kept for the next drain
            self._pwrite(self.fd, self._view[: self._len], self._base)
            self._on_disk = max(self._on_disk, self.position)
        self._flushed = self.position

    def sync(self) -> None:
        """:meth:`flush`, then fsync: the bytes and the file's size are on the disk."""
        self.flush()
        os.fsync(self.fd)

    def close(self) -> None:
        """:meth:`flush` and release the descriptors and the buffer."""
        if self.fd < 0:
            return
        try:
            self.flush()
        finally:
            self._close_fds()

    def abort(self) -> None:
        """Release everything without writing what is still buffered."""
        self._close_fds()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- inside ---------------------------------------------------------------

    def _load_block(self, offset: int) -> None:
        """Start the buffer at the block holding ``offset``, with that block's bytes before it."""
        self._base = offset - offset % BLOCK
        self._len = offset - self._base
        if self._len:
            head = os.pread(self.fd, self._len, self._base)
            if len(head) != self._len:
                raise OSError(errno.EIO, f"short read of {len(head)} of {self._len} bytes")
            self._view[: self._len] = head

    def _settle(self) -> None:
        """Wait for the writer thread's write, if one is under way; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None and pending.result():
            self._use_page_cache()

    def _use_page_cache(self) -> None:
        # Opened, but this filesystem or device will not take these writes directly.
        os.close(self._dfd)
        self._dfd = -1

    def _write_direct(self, view: memoryview, offset: int) -> bool:
        """Write whole blocks directly; True if the device refused and the page cache took them."""
        try:
            try:
                self._pwrite(self._dfd, view[:], offset)
                return False
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
            self._pwrite(self.fd, view[:], offset)
            return True
        finally:
            view.release()

    def _drain(self) -> None:
        """Write the buffer's whole blocks; keep the partial last one at its front.

        With ``background``, a direct write goes to a writer thread while the appends go on
        into a second buffer: the disk works while the caller hashes and copies the next bytes."""
        whole = self._len - self._len % BLOCK
        if not whole:
            return
        self._settle()  # the spare buffer is free again (and a fallback is known)
        rest = self._len - whole
        if self._dfd >= 0 and self._background:
            if self._spare is None:
                self._spare = _take_buffer(len(self._buf))
                self._spare_view = memoryview(self._spare)
            self._pending = _writer_pool().submit(self._write_direct, self._view[:whole], self._base)
            assert self._spare_view is not None
            if rest:
                self._spare_view[:rest] = self._view[whole : self._len]
            self._buf, self._spare = self._spare, self._buf
            self._view, self._spare_view = self._spare_view, self._view
        else:
            if self._dfd < 0:
                self._pwrite(self.fd, self._view[:whole], self._base)
            elif self._write_direct(self._view[:whole], self._base):
                self._use_page_cache()
            if rest:
                self._view[:rest] = self._view[whole : self._len]
        self._base += whole
        self._on_disk = max(self._on_disk, self._base)
        self._len = rest

    @staticmethod
    def _pwrite(fd: int, view: memoryview, offset: int) -> None:
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view = view[n:]
                offset += n
        finally:
            # A write error's traceback keeps this frame: without the release, its slice
            # would pin the buffer and closing it would fail.
            view.release()

    def _close_fds(self) -> None:
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:  # never close what the writer thread still writes to
            try:
                pending.result()
            except OSError:
                pass  # closing after a failure: the caller has that error already
        for name in ("_dfd", "fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)
        for view_name, buf_name in (("_view", "_buf"), ("_spare_view", "_spare")):
            view = getattr(self, view_name, None)
            if view is not None:
                view.release()
                setattr(self, view_name, None)
            buf = getattr(self, buf_name, None)
            if buf is not None:
                setattr(self, buf_name, None)
                _give_back(buf)
