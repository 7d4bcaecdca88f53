"""``chester plugins new NAME``: a package that installs and lists active before its author
writes a line, and whose conformance test names the contract each stub breaks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chester.errors import UserError
from chester.scaffold import new_plugin

from .helpers import uv

ROOT = Path(__file__).resolve().parents[1]


def test_bad_names_and_existing_folders_are_refused(tmp_path):
    for bad in ("Tmux", "1x", "a-b", "class", ""):
        with pytest.raises(UserError):
            new_plugin(bad, tmp_path)
    new_plugin("tmux", tmp_path)
    with pytest.raises(UserError) as ei:
        new_plugin("tmux", tmp_path)
    assert "already exists" in str(ei.value)


def test_the_plugin_is_a_backend_class_named_by_its_entry_point(tmp_path, monkeypatch):
    import importlib

    from chester.plugin.manager import build_plugin_manager
    from chester.remote.backend import Backend

    root = new_plugin("tmux", tmp_path)
    assert '[project.entry-points.chester]\ntmux = "chester_backend_tmux.plugin:TmuxBackend"' \
        in (root / "pyproject.toml").read_text()
    monkeypatch.syspath_prepend(str(root / "src"))
    mod = importlib.import_module("chester_backend_tmux.plugin")
    assert issubclass(mod.TmuxBackend, Backend)
    mgr = build_plugin_manager(load_entry_points=False)
    mgr.register(mod.TmuxBackend, "tmux")  # a class: one instance of it is registered
    assert isinstance(mgr.get_backend("tmux").plugin, mod.TmuxBackend)
    assert set(mgr.records["tmux"].hooks) == {
        "chester_backends", "chester_prepare", "chester_submit", "chester_status",
        "chester_pull", "chester_cancel", "chester_logs"}
    for m in [m for m in sys.modules if m.startswith("chester_backend_tmux")]:
        monkeypatch.delitem(sys.modules, m)


@pytest.mark.slow  # a venv and an install
def test_a_new_plugin_installs_lists_active_and_runs_the_conformance_suite(tmp_path):
    r = subprocess.run([str(Path(sys.executable).parent / "chester"), "plugins", "new", "tmux",
                        "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pkg = tmp_path / "chester-backend-tmux"
    assert f"wrote {pkg}" in r.stdout
    venv = tmp_path / "venv"
    uv("venv", "-q", str(venv))
    py = str(venv / "bin" / "python")
    # chester-ml from this checkout (its own dependency on the local backend too)
    uv("pip", "install", "-q", "--python", py, str(ROOT), str(ROOT / "chester_backends/local"),
        "-e", f"{pkg}[test]", env={**os.environ, "VIRTUAL_ENV": str(venv)}, timeout=600)
    (tmp_path / "proj" / ".git").mkdir(parents=True)
    r = subprocess.run([str(venv / "bin/chester"), "plugins", "list", "--json"],
                       cwd=tmp_path / "proj", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    recs = {x["name"]: x for x in json.loads(r.stdout)}
    assert recs["tmux"]["status"] == "active"
    assert recs["tmux"]["distribution"] == "chester-backend-tmux"
    assert set(recs["tmux"]["hooks"]) >= {"chester_prepare", "chester_submit", "chester_status",
                                          "chester_pull", "chester_cancel", "chester_logs"}
    r = subprocess.run([py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        str(pkg / "tests")], cwd=pkg, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout[-2000:]  # the stubs fail, naming the contract
    assert "chester_prepare must return a PreparedSweep" in r.stdout, r.stdout[-2000:]


def test_the_scaffold_fills_broken_options_and_matches_the_plugin_guide(tmp_path):
    """The scaffolded conformance test leaves no check skipped: it gives ``broken_options``
    (an option the options class has), and docs/plugins.md shows the tree it writes."""
    import re

    from chester.plugin.scaffold import LAYOUT

    root = new_plugin("tmux", tmp_path)
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == sorted(rel.format(name="tmux") for rel in LAYOUT)
    test = (root / "tests/test_tmux_conformance.py").read_text()
    assert 'broken_options={"python": "/nonexistent/python3"}' in test
    assert "python: str" in (root / "src/chester_backend_tmux/options.py").read_text()
    plugin = (root / "src/chester_backend_tmux/plugin.py").read_text()
    assert "chester.target.worker" in plugin and "python -m chester.worker" not in plugin
    assert "never started" in plugin  # the pull advice for runs written on this machine
    guide = (ROOT / "docs/plugins.md").read_text()
    tree = re.search(r"```\nchester-backend-foo/\n(.*?)```", guide, flags=re.S).group(1)
    assert [line.strip() for line in tree.splitlines()] == \
        [rel.format(name="foo") for rel in LAYOUT]
    assert "ConformanceEnv(broken_options" not in guide
