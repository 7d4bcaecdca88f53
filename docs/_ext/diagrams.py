"""mkdocs hook: the pictures of the site are text (graphviz ``dot``), drawn at build time.

Every ``docs/diagrams/NAME.dot`` becomes ``diagrams/NAME.svg`` in the built site, rendered by
graphviz's ``dot`` (Debian's ``graphviz``, installed by ``.ci/install.sh``), offline: a
picture never drifts from the text beside it, and no script from another host draws it.
Pages show one with ``![what it shows](diagrams/NAME.svg)``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SOURCES = Path(__file__).resolve().parents[1] / "diagrams"


def render(dot_file: Path) -> str:
    """The SVG text of one diagram."""
    dot = shutil.which("dot")
    if dot is None:
        raise PluginError("graphviz's `dot` is needed to draw docs/diagrams/*.dot: "
                          "apt-get install graphviz (.ci/install.sh does)")
    r = subprocess.run([dot, "-Tsvg", str(dot_file)], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise PluginError(f"{dot_file}: dot failed: {r.stderr.strip()}")
    return r.stdout


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for src in sorted(SOURCES.glob("*.dot")):
        files.append(File.generated(config, f"diagrams/{src.stem}.svg", content=render(src)))
    return files
