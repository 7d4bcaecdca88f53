"""The built wheels (not editable installs) install into a fresh venv and every plugin loads."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import chester

from .helpers import uv as _uv

pytestmark = pytest.mark.slow  # builds wheels and venvs

ROOT = Path(__file__).resolve().parents[1]



def _backend_dirs():
    """Backend folders under version control (work in progress elsewhere is left out)."""
    found = sorted(p.parent for p in (ROOT / "chester_backends").glob("*/pyproject.toml"))
    try:
        tracked = subprocess.run(["git", "ls-files", "chester_backends"], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return found
    return [d for d in found if f"{d.relative_to(ROOT).as_posix()}/pyproject.toml" in tracked]


def _dist_name(d: Path) -> str:
    text = (d / "pyproject.toml").read_text()
    return text.split('name = "', 1)[1].split('"', 1)[0]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """Every distribution of the repository built as a wheel, in one folder."""
    out = tmp_path_factory.mktemp("wheels")
    dists = [ROOT] + _backend_dirs()
    for d in dists:
        _uv("build", "--wheel", "-q", "-o", str(out), str(d))
    return out, dists


@pytest.fixture(scope="module")
def wheel_venv(wheels, tmp_path_factory):
    wheels, dists = wheels
    tmp = tmp_path_factory.mktemp("dist")
    venv = tmp / "venv"
    _uv("venv", "-q", str(venv))
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    _uv("pip", "install", "-q", "--python", str(venv / "bin" / "python"),
        *map(str, sorted(wheels.glob("*.whl"))), env=env)
    return venv, dists


def test_the_core_wheel_holds_every_module_of_the_package(wheels):
    """Every module under chester/ (the subpackages target, variants, plugin, launcher,
    compat, remote, cli included) is in the chester-ml wheel, and nothing of the tests."""
    import zipfile

    wheel_dir, _ = wheels
    (wheel,) = wheel_dir.glob("chester_ml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "chester").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    for package in ("target", "variants", "plugin", "launcher", "compat", "remote", "cli"):
        assert f"chester/{package}/__init__.py" in names
    assert "chester/target/__main__.py" in names and "chester/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)


def test_wheels_install_and_every_plugin_loads(wheel_venv, tmp_path):
    venv, dists = wheel_venv
    chester_exe = venv / "bin" / "chester"
    (tmp_path / ".git").mkdir()
    r = subprocess.run([str(chester_exe), "plugins", "list", "--json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    recs = {x["name"]: x for x in json.loads(r.stdout)}
    assert recs["local"]["status"] == "active"
    assert recs["local"]["version"] == chester.__version__
    assert recs["local"]["distribution"] == "chester-backend-local"
    for name, rec in recs.items():
        assert rec["status"] == "active", (name, rec["error"])
        assert rec["version"] == chester.__version__
    # every backend distribution registers one plugin; others (the Hydra launcher) none
    backends = [d for d in dists[1:] if _registers_backend(d)]
    assert len(backends) < len(dists) - 1  # the Hydra launcher is built and installed too
    # and the core's own backend type (the pool), from chester-ml itself
    assert recs["chester.pool"]["distribution"] == "chester-ml"
    assert len(recs) == len(backends) + 1


def _registers_backend(dist_dir: Path) -> bool:
    """The distribution declares a ``chester`` entry point (a backend plugin)."""
    return "[project.entry-points.chester]" in (dist_dir / "pyproject.toml").read_text()


def test_hydra_launcher_wheel_is_found_by_hydra(wheel_venv, tmp_path):
    venv, _ = wheel_venv
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from hydra.core.plugins import Plugins\n"
         "from hydra.plugins.launcher import Launcher\n"
         "print(sorted(p.__name__ for p in Plugins.instance().discover(Launcher)))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ChesterLauncher" in r.stdout


def test_installed_core_runs_a_sweep(wheel_venv, tmp_path):
    venv, _ = wheel_venv
    (tmp_path / ".git").mkdir()
    (tmp_path / "go.py").write_text(
        "import chester\n"
        "def f(v, d, n):\n    open(d + '/x', 'w').write(str(v['a']))\n"
        "s = chester.launch(f, [{'a': 1}, {'a': 2}], exp_prefix='wheel')\n"
        "print(sorted(st.value for st in s.wait(timeout=120, progress=False).values()))\n")
    r = subprocess.run([str(venv / "bin/python"), "go.py"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=180,
                       env={**os.environ, "CHESTER_SLOTS_DIR": str(tmp_path / "slots")})
    assert r.returncode == 0, r.stderr
    assert "['succeeded', 'succeeded']" in r.stdout


@pytest.mark.parametrize("backend", [d.name for d in _backend_dirs() if _registers_backend(d)])
def test_each_backend_installs_alone(wheels, backend, tmp_path):
    """``pip install chester-backend-X`` alone (here: uv pip, from the folder of built wheels)
    gives a working ``chester`` whose plugin list shows X, and what X depends on, active."""
    wheel_dir, _ = wheels
    dist = _dist_name(ROOT / "chester_backends" / backend)
    venv = tmp_path / "venv"
    _uv("venv", "-q", str(venv))
    _uv("pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--find-links",
        str(wheel_dir), dist, env={**os.environ, "VIRTUAL_ENV": str(venv)})
    (tmp_path / "proj" / ".git").mkdir(parents=True)
    r = subprocess.run([str(venv / "bin" / "chester"), "plugins", "list", "--json"],
                       cwd=tmp_path / "proj", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    recs = {x["name"]: x for x in json.loads(r.stdout)}
    assert recs[backend]["status"] == "active", recs[backend]["error"]
    assert recs[backend]["distribution"] == dist
    assert recs[backend]["version"] == chester.__version__
    # the local backend comes with chester-ml; every plugin that came along loads
    assert recs["local"]["status"] == "active"
    for name, rec in recs.items():
        assert rec["status"] == "active", (name, rec["error"])
