"""Helpers shared by the core tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHESTER = [sys.executable, "-m", "chester.cli"]


def make_project(root: Path, config: str | None = None) -> Path:
    """A project folder (a git root) with an optional chester.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".git").mkdir(exist_ok=True)
    if config is not None:
        (root / "chester.yaml").write_text(textwrap.dedent(config))
    return root


def run_chester(args: list[str], cwd: Path, env: dict | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("CHESTER_CONFIG_PATH", None)
    e.update(env or {})
    return subprocess.run([*CHESTER, *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=timeout)


def write_plugin_dist(site: Path, dist: str, entry_points: dict[str, str],
                      modules: dict[str, str] | None = None, version: str = "1.0") -> None:
    """Install a tiny distribution (dist-info + modules) into ``site`` by hand."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "[chester]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps)
    for name, src in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(src))
