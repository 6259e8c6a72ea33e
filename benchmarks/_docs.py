"""Shared by the benchmark scripts: replace one ``## `` section of docs/benchmarks.md, and the machine facts it starts with."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nMeasured numbers for tether, with the command that produced each table. "
          "Scripts live in `benchmarks/`.\n")


def write_section(heading: str, body: str, docs: Path = DOCS) -> None:
    """Put ``body`` (which starts with ``heading``) in place of that section, or append it;
    the other sections are left as they are, one blank line between sections."""
    text = docs.read_text() if docs.exists() else HEADER
    body = body.strip("\n") + "\n"
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        rest = text[nxt + 1:] if nxt != -1 else ""
        text = text[:start] + body + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text.rstrip("\n") + "\n")


def sh(argv: list[str]) -> str:
    """A command's stdout (stripped), or ``?`` if it cannot run. An argv, no shell."""
    import subprocess

    try:
        r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (r.stdout or r.stderr).strip()


def machine_lines(*, cpu_note: str, memory_note: str = "", load: float | None = None,
                  extra: list[str] = ()) -> list[str]:
    """The "Machine:" list every section starts with: CPU (model, cores, SHA
    extensions), memory, Python and kernel, ``extra`` lines, date and load.
    ``cpu_note`` says who shares the cores; ``memory_note`` follows the memory."""
    import os
    import platform
    from datetime import UTC, datetime

    lscpu = sh(["lscpu"])
    model = next((ln.partition(":")[2].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln for ln in lscpu.splitlines() if ln.startswith("Flags")), "")
    mem = next((ln.split()[1] for ln in sh(["free", "-g"]).splitlines() if ln.startswith("Mem:")), "?")
    load = os.getloadavg()[0] if load is None else load
    return [
        f"- CPU: {model}, {sh(['nproc'])} cores (`nproc`), {'with' if 'sha_ni' in flags else 'without'} SHA "
        f"extensions (`sha_ni`); {cpu_note}",
        f"- memory: {mem} GiB (`free -g`)" + (f"; {memory_note}" if memory_note else ""),
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        *extra,
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- load average before the run: {load:.2f} (1 min); other work on the machine skews the numbers",
    ]
