"""What a publish shows: the progress bar on a terminal (quiet in CI logs) and the
one-line summary after it."""

from __future__ import annotations

from typing import Any


def human_bytes(n: int) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def summary_line(s: dict[str, Any]) -> str:
    """The one line printed on stderr after a publish (or a dry run)."""
    if s.get("dry_run"):
        # the hub is not asked: the space may come from the token, the path from the type's config
        where = f"space {s['space']}" if s.get("space") else "the space of the token's scope"
        return (
            f"dry run: would publish {_files(s['files'])} ({human_bytes(s['bytes'])}) as build {s['build']} "
            f"of type {s['type']} in {where}: "
            f"hashed {human_bytes(s['bytes_hashed'])}, {s['seconds']:.1f} s"
        )
    return (
        f"published {_files(s['files'])} ({human_bytes(s['bytes'])}) to {s.get('url') or s.get('path')}: "
        f"hashed {human_bytes(s['bytes_hashed'])}, sent {human_bytes(s['bytes_sent'])}, "
        f"{s['deduplicated']} deduplicated, {s['seconds']:.1f} s"
    )


class NoProgress:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class RichProgress:
    """A rich progress bar on stderr, one task per phase (thread-safe advance)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._p = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            DownloadColumn(binary_units=False),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._p.start()
        self._task: Any = None
        self._total = 0
        self._closed = False

    def phase(self, name: str, total: int) -> None:
        if self._task is not None:
            self._p.update(self._task, completed=self._total)
        self._total = total
        self._task = self._p.add_task(name, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, n)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._task is not None:
                self._p.update(self._task, completed=self._total)
            self._p.stop()


class Gate:
    """The progress bar as the upload workers see it: silent until :meth:`open`
    (while hashing has the bar)."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._open = False

    def open(self) -> None:
        self._open = True

    def advance(self, n: int) -> None:
        if self._open:
            self._bar.advance(n)



__all__ = ["human_bytes", "summary_line"]
