"""Secrets on the real test SLURM through the login host: the jobs get them in their
environment (sbatch's export), and no file of them stays on the cluster or lands in the
project, after a submit that worked and after one that failed before any ``sbatch``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from chester.errors import BackendError
from chester.launcher import launch
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 150
FILE_SECRET = "k-very-secret"
ENV_SECRET = "t-$(id) 'x' \"y\" \u00e9"


def fn_env(variant, log_dir, exp_name):
    import json as _json
    import os as _os

    with open(_os.path.join(log_dir, "env.json"), "w") as f:
        _json.dump({k: _os.environ.get(k) for k in ("API_KEY", "CHESTER_TEST_TOKEN")}, f)


def _leaked(root: Path, allowed: tuple[str, ...] = ()) -> list[str]:
    """Files under ``root`` holding a secret value, but those the runs wrote (and
    ``allowed``)."""
    needles = (FILE_SECRET.encode(), ENV_SECRET.encode())
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                  and p.name not in ("env.json", *allowed)
                  and any(n in p.read_bytes() for n in needles))


def test_secrets_reach_the_jobs_and_no_file_of_them_stays(tmp_path, slurm_local, login_host,
                                                          make_config, monkeypatch):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setenv("CHESTER_TEST_TOKEN", ENV_SECRET)
    remote = tmp_path / "remote"
    opts = {"host": login_host, "remote_dir": str(remote),
            "secrets": ["secrets.env", "CHESTER_TEST_TOKEN"]}
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(**opts))
    project = env.config.project_path
    (project / "secrets.env").write_text(f"API_KEY={FILE_SECRET}\n")
    sweep = launch(fn_env, [{"i": i} for i in range(3)], backend="slurm", exp_prefix="sec",
                   config=env.config)
    # every job is in: the stage keeps its scripts but no file of secrets
    stages = list(remote.rglob("submit-rest.sh"))
    assert stages and not any((s.parent / "secrets.sh").exists() for s in stages)
    assert _leaked(remote) == []
    assert _leaked(project, allowed=("secrets.env",)) == []
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False, pull=True)
    assert set(states.values()) == {State.SUCCEEDED}, states
    for r in sweep.runs:
        got = json.loads((r.log_dir / "env.json").read_text())
        assert got == {"API_KEY": FILE_SECRET, "CHESTER_TEST_TOKEN": ENV_SECRET}
    assert _leaked(remote) == []
    assert _leaked(project, allowed=("secrets.env",)) == []

    # a submit that fails before any sbatch (the jobs' Python is missing): nothing is left
    env2 = ConformanceEnv.create(tmp_path / "b", backend="slurm", config=make_config(
        **opts, python="/nonexistent/bin/python3"))
    (env2.config.project_path / "secrets.env").write_text(f"API_KEY={FILE_SECRET}\n")
    with pytest.raises(BackendError) as ei:
        launch(fn_env, [{"i": 9}], backend="slurm", exp_prefix="sec2", config=env2.config)
    assert "/nonexistent/bin/python3" in str(ei.value)
    assert _leaked(remote) == []
    assert _leaked(env2.config.project_path, allowed=("secrets.env",)) == []


def test_an_export_that_keeps_the_environment_from_the_jobs_is_refused(tmp_path, make_config,
                                                                      monkeypatch):
    monkeypatch.setenv("CHESTER_TEST_TOKEN", ENV_SECRET)
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        remote_dir=str(tmp_path / "remote"), secrets=["CHESTER_TEST_TOKEN"],
        sbatch=["--export=NONE"]))
    with pytest.raises(Exception) as ei:
        launch(fn_env, [{"i": 1}], backend="slurm", exp_prefix="exp", config=env.config,
               dry_run=True)
    assert "--export=NONE" in str(ei.value) and "secrets" in str(ei.value)
