"""The plugin's rules for the whole suite (``chester_testinfra.suite``), each checked on a small
test folder run by a pytest of its own: the markers the fixtures apply, the xdist group of
the SLURM tests, the CI skip rule, the slots folder of each session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import chester_testinfra

# the plugin for the inner pytest, whether or not its entry point is installed
SRC = str(Path(chester_testinfra.__file__).resolve().parents[1])

TESTS = '''
import os
import pytest

@pytest.fixture
def login_host(sshd_loopback):  # depends on a server fixture: its tests are integration
    return sshd_loopback

@pytest.fixture
def slurm_mine():  # a slurm_* fixture
    return 1

def test_plain():
    pass

def test_uses_a_server(login_host):
    pass

@pytest.mark.parametrize("i", range(4))
def test_uses_slurm(slurm_mine, i):
    pass

def test_aws(aws_endpoint):
    pass

def test_skips_listed():
    pytest.skip("this machine has no frobnicator")

def test_skips_unlisted():
    pytest.skip("nothing to see")

def test_slots(tmp_path_factory):
    with open(os.environ["SLOTS_LOG"], "a") as f:
        f.write(os.environ.get("CHESTER_SLOTS_DIR", "") + "\\n")
'''

# prints each test's marks once the collection is done (after the plugin set them, and after
# -m deselected some)
CONFTEST = '''
import pytest

def _marks(item):
    return ",".join(sorted(m.name + (":" + m.args[0] if m.args else "")
                           for m in item.iter_markers()))

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        print("SELECTED", item.name, _marks(item))

def pytest_deselected(items):
    for item in items:
        print("DESELECTED", item.name, _marks(item))
'''


def _folder(tmp_path: Path, allowed: list[str] | None = None) -> Path:
    (tmp_path / "test_some.py").write_text(TESTS)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    lines = "".join(f"    {a!r},\n" for a in (allowed or []))
    (tmp_path / "pyproject.toml").write_text(
        f"[tool.pytest.ini_options]\nci_allowed_skips = [\n{lines}]\n")
    return tmp_path


def _pytest(folder: Path, *args: str, ci: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CHESTER_SLOTS_DIR")}
    env.update(PYTHONPATH=SRC, SLOTS_LOG=str(folder / "slots.log"))
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "chester_testinfra.plugin",
                           "-p", "no:cacheprovider", "-s", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def _marks(out: str, kind: str) -> dict[str, str]:
    return {ln.split()[1]: (ln.split() + [""])[2] for ln in out.splitlines()
            if ln.startswith(kind + " ")}


def test_the_fixtures_mark_integration_and_put_slurm_in_one_group(tmp_path):
    """And before -m selects: `-m "not integration"` leaves out every test they marked."""
    r = _pytest(_folder(tmp_path), "--collect-only", "-q", "-m", "not integration")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _marks(r.stdout, "DESELECTED") == {
        "test_uses_a_server": "integration", "test_aws": "integration",
        **{f"test_uses_slurm[{i}]": "integration,parametrize:i,xdist_group:slurm"
           for i in range(4)}}
    assert _marks(r.stdout, "SELECTED") == {
        "test_plain": "", "test_skips_listed": "", "test_skips_unlisted": "", "test_slots": ""}


def test_with_loadgroup_one_worker_runs_every_slurm_test(tmp_path):
    r = _pytest(_folder(tmp_path), "-n", "2", "--dist", "loadgroup", "-v", "-k",
                "uses_slurm or plain or skips")
    assert r.returncode == 0, r.stdout + r.stderr
    ran = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("[gw")]
    slurm = {words[0] for words in ran if "test_uses_slurm[" in words[-1]}
    assert len([w for w in ran if "test_uses_slurm[" in w[-1]]) == 4
    assert len(slurm) == 1, r.stdout  # and the others may go anywhere
    assert all(w[-1].endswith("@slurm") for w in ran if "test_uses_slurm[" in w[-1])


def _run_plain(folder: Path, *args: str, ci: bool) -> subprocess.CompletedProcess:
    return _pytest(folder, "-m", "not integration", *args, ci=ci)


def test_under_ci_an_unlisted_skip_fails_the_run_and_is_named(tmp_path):
    folder = _folder(tmp_path, ["test_some.py::test_skips_listed | no frobnicator here"])
    r = _run_plain(folder, ci=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 passed, 2 skipped" in r.stdout
    tail = r.stdout.split("skips not allowed under CI", 1)[1]
    assert "test_some.py::test_skips_unlisted: Skipped: nothing to see" in tail
    assert "test_skips_listed" not in tail
    # the same without CI=true: the skips are allowed
    assert _run_plain(folder, ci=False).returncode == 0


def test_under_ci_the_controller_sees_the_skips_of_its_workers(tmp_path):
    folder = _folder(tmp_path, ["*::test_skips_l* | no frobnicator here"])  # fnmatch patterns
    r = _run_plain(folder, "-n", "2", ci=True)
    assert r.returncode == 1, r.stdout + r.stderr
    tail = r.stdout.split("skips not allowed under CI", 1)[1]
    assert "test_skips_unlisted" in tail and "test_skips_listed" not in tail


def test_under_ci_listed_skips_pass_and_a_listed_skip_needs_a_reason(tmp_path):
    folder = _folder(tmp_path, ["test_some.py::test_skips_listed | no frobnicator here",
                                "test_some.py::test_skips_unlisted | nothing to see"])
    r = _run_plain(folder, ci=True)
    assert r.returncode == 0 and "2 passed, 2 skipped" in r.stdout, r.stdout + r.stderr
    r = _run_plain(_folder(tmp_path, ["test_some.py::test_skips_listed"]), ci=True)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "needs a node id pattern and a reason" in r.stderr


def test_each_session_has_a_slots_folder_of_its_own(tmp_path):
    folder = _folder(tmp_path)
    _pytest(folder, "-k", "slots")
    (slots,) = (folder / "slots.log").read_text().split()
    assert "chester-test-slots-" in slots
    assert not Path(slots).exists()  # removed at the end of its session
