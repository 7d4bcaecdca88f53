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

from .helpers import HYDRA_APP

CHESTER = [sys.executable, "-m", "chester.cli"]

TRAIN = '''
import json, os, sys
with open(os.path.join(os.environ["CHESTER_LOG_DIR"], "argv.json"), "w") as f:
    json.dump(sys.argv[1:], f)
if "fail=yes" in sys.argv or "--fail" in sys.argv:
    print("failing on purpose", file=sys.stderr)
    sys.exit(4)
'''


def test_default_prefix():
    assert overrides.default_prefix(["python", "-m", "pkg.trainer"]) == "trainer"
    assert overrides.default_prefix(["python", "src/train.py"]) == "train"
    assert overrides.default_prefix(["./run"]) == "run"


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
    # a dry run takes nothing: no run folder, no run in the store
    assert not (project / "data").exists()
    out = _chester(project, "launch", "--wait", "--", "python", "train.py",
                   "lr=1e-3,1e-4", "seed=1,2,3").stdout
    assert "launched sweep 'train': 6 runs" in out and "6 succeeded" in out
    got = sorted(tuple(a[:2]) for a in _argvs(project, "train"))
    assert got == sorted((f"lr={lr}", f"seed={s}") for lr in ("1e-3", "1e-4") for s in (1, 2, 3))
    # numbered as the dry run showed them: one set of folders
    assert sorted(int(d.name.split("_")[0])
                  for d in (project / "data" / "train" / "train").iterdir()) == [1, 2, 3, 4, 5, 6]
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
    submit's retry machinery is set up only for a retry, info lines below the CLI's
    threshold do not set up structlog, and values of letters, digits and commas are read
    without importing hydra-core."""
    code = ("import sys\n"
            "from chester.cli import main\n"
            "rc = main(['launch', '-p', 'lean', '--', 'python', 'train.py', 'lr=1,2',\n"
            "           'opt=adam', 'path=data/x.csv', 'eps=1e-3,-0.5'])\n"
            "print(sorted(m for m in ('cloudpickle', 'tenacity', 'structlog', 'rich', 'hydra',\n"
            "                         'omegaconf', 'antlr4') if m in sys.modules), rc)\n")
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[] 0"
    _chester(project, "monitor", "lean", "--timeout", "60")
    assert sorted(a[0] for a in _argvs(project, "lean")) == ["lr=1"] * 2 + ["lr=2"] * 2



def _got(project: Path, prefix: str) -> dict[str, dict]:
    """Each run's name → what its Hydra app received (config and argv) and its variant."""
    import pickle

    out = {}
    for d in sorted((project / "data" / "train" / prefix).iterdir()):
        with open(d / "got.pkl", "rb") as f:
            got = pickle.load(f)
        got["variant"] = json.loads((d / "variant.json").read_text())
        assert got["variant"].pop("exp_name") == d.name
        out[d.name] = got
    return out


def test_cli_launch_reads_sweeps_as_hydras_multirun_and_the_app_gets_each_element(project):
    """A real Hydra app receives, per run, exactly what Hydra's own multirun would give it:
    an escaped comma is one value, range() and choice() sweep, quotes are one value."""
    pytest.importorskip("hydra")
    (project / "app.py").write_text(HYDRA_APP)
    out = _chester(project, "launch", "--wait", "-p", "hy", "--", "python", "app.py",
                   r"+x=a\,b", "+y=range(1,3)", "+z='a,b',c d",
                   "+w=choice([1,'a b'],{k:v})", "+lr=1e-3").stdout
    assert "launched sweep 'hy': 8 runs" in out and "8 succeeded" in out
    got = _got(project, "hy")
    expected = []
    for y in (1, 2):
        for z, z_arg in (("a,b", "+z='a,b'"), ("c d", "+z=c d")):
            for w, w_arg in (([1, "a b"], "+w=[1,'a b']"), ({"k": "v"}, "+w={k:v}")):
                expected.append({"x": "a,b", "y": y, "z": z, "w": w, "lr": 0.001})
                run_args = [r"+x=a\,b", f"+y={y}", z_arg, w_arg, "+lr=1e-3"]
                assert any(g["argv"][:5] == run_args for g in got.values()), run_args
    assert sorted(map(repr, (g["cfg"] for g in got.values()))) == sorted(map(repr, expected))
    for name, g in got.items():  # the variant (and the run's name) hold the element's value
        cfg = g["cfg"]
        assert g["variant"] == {f"+{k}": v for k, v in cfg.items()}
        assert name.endswith(f"_+y_{cfg['y']}_{'a-b' if cfg['z'] == 'a,b' else 'c-d'}"), name
    status = json.loads(_chester(project, "status", "hy", "--json").stdout)
    assert sorted(r["name"] for r in status["runs"]) == sorted(got)


def test_cli_launch_argparse_style_and_sweep_file_get_hydra_values(project):
    (project / "s.yaml").write_text("seed: range(5,7)\nmsg: [\"it's\"]\n")
    out = _chester(project, "launch", "--wait", "-p", "ap", "--style", "argparse",
                   "--sweep", "s.yaml", "--", "python", "train.py", "x='a,b'", "lr=1e-3",
                   "r=range(1,3)", r"e=a\ b\,c").stdout
    assert "launched sweep 'ap': 4 runs" in out and "4 succeeded" in out
    got = sorted(tuple(a[:13]) for a in _argvs(project, "ap"))
    assert got == sorted(("--x", "a,b", "--lr", "1e-3", "--r", r, "--e", "a b,c",
                          "--seed", seed, "--msg", "it's", "--log_dir")
                         for r in ("1", "2") for seed in ("5", "6"))


def test_cli_launch_refuses_what_a_sweep_cannot_use_before_anything_runs(project):
    for token, why in (("x=glob(*)", "glob() picks options of a config group"),
                       ("x=interval(0,1)", "interval() is a continuous range"),
                       ("msg=it's", "is not a Hydra override")):
        proc = _chester(project, "launch", "-p", "bad", "--", "python", "train.py", token,
                        check=2)
        assert why in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (project / "data").exists()
