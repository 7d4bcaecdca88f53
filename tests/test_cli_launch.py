"""``chester launch -- COMMAND key=a,b ...``: sweeps from the command line, run for real on
the local backend through the ``chester`` command in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chester import overrides
from chester.errors import UserError

CHESTER = [sys.executable, "-m", "chester.cli"]

TRAIN = '''
import json, os, sys
with open(os.path.join(os.environ["CHESTER_LOG_DIR"], "argv.json"), "w") as f:
    json.dump(sys.argv[1:], f)
if "fail=yes" in sys.argv or "--fail" in sys.argv:
    print("failing on purpose", file=sys.stderr)
    sys.exit(4)
'''


def test_split_values_respects_quotes_and_brackets():
    assert overrides.split_values("a,b") == ["a", "b"]
    assert overrides.split_values("[1,2],3") == ["[1,2]", "3"]
    assert overrides.split_values("'a,b',\"c,d\",e") == ["'a,b'", '"c,d"', "e"]
    assert overrides.split_values("{x:1,y:2}") == ["{x:1,y:2}"]
    assert overrides.split_values("") == [""]


def test_parse_command_and_combine():
    program, keys = overrides.parse_command(
        ["python", "train.py", "--verbose", "lr=1e-3,0.5", "seed=1,2,3", "+model.depth=50",
         "name=a b"])
    assert program == ["python", "train.py", "--verbose"]
    assert keys == {"lr": ["1e-3", 0.5], "seed": [1, 2, 3], "+model.depth": [50],
                    "name": ["a b"]}
    variants = overrides.combine(keys, {"opt": ["sgd", "adam"]})
    assert len(variants) == 2 * 3 * 2
    assert variants[0] == {"lr": "1e-3", "seed": 1, "+model.depth": 50, "name": "a b",
                           "opt": "sgd"}
    assert overrides.typed("01") == "01" and overrides.typed("1.50") == "1.50"
    with pytest.raises(UserError, match="swept both"):
        overrides.combine({"lr": [1]}, {"lr": [2]})
    with pytest.raises(UserError, match="given twice"):
        overrides.parse_command(["python", "t.py", "lr=1", "lr=2"])
    with pytest.raises(UserError, match="empty value"):
        overrides.parse_command(["python", "t.py", "lr=1,,2"])
    with pytest.raises(UserError, match="needs a command"):
        overrides.parse_command([])
    assert overrides.default_prefix(["python", "-m", "pkg.trainer"]) == "trainer"
    assert overrides.default_prefix(["python", "src/train.py"]) == "train"


def test_sweep_file_errors(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must map keys"):
        overrides.load_sweep_file(f)
    f.write_text("lr: []\n")
    with pytest.raises(UserError, match="empty list"):
        overrides.load_sweep_file(f)
    with pytest.raises(UserError, match="cannot read the sweep file"):
        overrides.load_sweep_file(tmp_path / "missing.yaml")


@pytest.fixture
def project(tmp_path) -> Path:
    p = tmp_path / "project"
    p.mkdir()
    (p / ".git").mkdir()
    (p / "train.py").write_text(TRAIN)
    (p / "chester.yaml").write_text(yaml.safe_dump(
        {"backends": {"local": {"type": "local", "max_parallel": 2}}}))
    return p


def _chester(project: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    proc = subprocess.run([*CHESTER, *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def _argvs(project: Path, prefix: str) -> list[list[str]]:
    folder = project / "data" / "train" / prefix
    return [json.loads((d / "argv.json").read_text()) for d in sorted(folder.iterdir())
            if (d / "argv.json").exists()]


def test_cli_launch_dry_run_then_wait(project):
    out = _chester(project, "launch", "--dry-run", "--", "python", "train.py",
                   "lr=1e-3,1e-4", "seed=1,2,3").stdout
    assert "dry run: sweep 'train', 6 runs on backend 'local'" in out
    assert "python train.py lr=1e-3 seed=1 hydra.run.dir=" in out
    assert _argvs(project, "train") == []  # nothing ran
    out = _chester(project, "launch", "--wait", "--", "python", "train.py",
                   "lr=1e-3,1e-4", "seed=1,2,3").stdout
    assert "launched sweep 'train': 6 runs" in out and "6 succeeded" in out
    got = sorted(tuple(a[:2]) for a in _argvs(project, "train"))
    assert got == sorted((f"lr={lr}", f"seed={s}") for lr in ("1e-3", "1e-4") for s in (1, 2, 3))
    # the dry run's runs were the ones submitted: no second set of folders
    assert len(list((project / "data" / "train" / "train").iterdir())) == 6
    status = _chester(project, "status", "train", "--json").stdout
    assert [r["state"] for r in json.loads(status)["runs"]] == ["succeeded"] * 6


def test_cli_launch_sweep_file_argparse_style_and_follow_hint(project):
    (project / "s.yaml").write_text(yaml.safe_dump({"opt": ["sgd", "adam"], "depth": 3}, sort_keys=False))
    out = _chester(project, "launch", "-p", "cli-argparse", "--style", "argparse",
                   "--sweep", "s.yaml", "--", "python", "train.py", "lr=0.1,0.2").stdout
    assert "launched sweep 'cli-argparse': 4 runs" in out
    assert "chester status cli-argparse" in out
    _chester(project, "monitor", "cli-argparse", "--timeout", "60")
    got = sorted(tuple(a[:6]) for a in _argvs(project, "cli-argparse"))
    assert got == sorted(("--lr", lr, "--opt", o, "--depth", "3")
                         for lr in ("0.1", "0.2") for o in ("sgd", "adam"))
    assert all(a[6] == "--log_dir" and a[8] == "--exp_name" for a in _argvs(project,
                                                                            "cli-argparse"))


def test_cli_launch_wait_exits_1_when_a_run_fails(project):
    proc = _chester(project, "launch", "--wait", "-p", "cli-fail", "--", "python", "train.py",
                    "fail=no,yes", check=1)
    assert "1 failed, 1 succeeded" in proc.stdout
    assert "exited with status 4" in proc.stdout


def test_cli_launch_bad_input_is_one_clear_line(project):
    proc = _chester(project, "launch", check=2)
    assert "needs a command after `--`" in proc.stderr
    proc = _chester(project, "launch", "--sweep", "nope.yaml", "--", "python", "t.py", check=2)
    assert "cannot read the sweep file nope.yaml" in proc.stderr
    proc = _chester(project, "launch", "-b", "nowhere", "--", "python", "t.py", check=2)
    assert "nowhere" in proc.stderr


def test_cli_launch_imports_nothing_it_does_not_need(project):
    """The launch's whole process stays small: a command payload is a plain pickle, the
    submit's retry machinery is set up only for a retry, and info lines below the CLI's
    threshold do not set up structlog."""
    code = ("import sys\n"
            "from chester.cli import main\n"
            "rc = main(['launch', '-p', 'lean', '--', 'python', 'train.py', 'lr=1,2'])\n"
            "print(sorted(m for m in ('cloudpickle', 'tenacity', 'structlog', 'rich')\n"
            "             if m in sys.modules), rc)\n")
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[] 0"
    _chester(project, "monitor", "lean", "--timeout", "60")
    assert sorted(a[0] for a in _argvs(project, "lean")) == ["lr=1", "lr=2"]
