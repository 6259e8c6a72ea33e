"""The import rules of docs/architecture.md hold (import-linter's contracts in pyproject.toml).

A capability reaching into another, a core importing I/O, or a lower layer importing a
higher one fails here, with import-linter's explanation of the offending chain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_every_package_of_tether_is_in_a_layer():
    """A new package must be placed in the layers contract, or nothing checks its imports."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layered = set()
    for contract in config["contracts"]:
        if contract["type"] == "layers":
            for layer in contract["layers"]:
                layered.update(m.strip() for m in layer.replace(":", "|").split("|"))
    src = ROOT / "src" / "tether"
    packages = {f"tether.{p.name}" for p in src.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {f"tether.{p.stem}" for p in src.glob("*.py") if p.stem not in ("__init__", "__main__")}
    missing = sorted((packages | modules) - layered)
    assert not missing, f"add these to the layers contract in pyproject.toml: {missing}"
