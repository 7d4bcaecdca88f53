"""The seed's script API run as a script that exits: a loop of ``run_experiment_lite``
calls, then the end of the script. The collected calls must be submitted as the interpreter
ends, on every backend, and every run must succeed. Each script runs as its own process
against the real servers of ``testinfra`` (loopback sshd, single-node SLURM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from chester import config as chester_config

PY = sys.executable

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from chester.run_exp import VariantGenerator, run_experiment_lite

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "out.json"), "w") as f:
            json.dump({"lr": variant["lr"], "seed": variant["seed"],
                       "job": os.environ.get("SLURM_JOB_ID")}, f)

    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.01])
    vg.add("seed", [1, 2])
    for v in vg.variants():
        run_experiment_lite(stub_method_call=train, variant=v, mode=sys.argv[1],
                            exp_prefix=sys.argv[2], variations=vg.variations(),
                            wait_subprocess=False)
    # the script ends here: the runs are submitted as the interpreter exits
''')


def _project(tmp_path: Path, cfg: dict) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump(cfg))
    (project / "launch.py").write_text(SCRIPT)
    return project


def _run_script(project: Path, mode: str, prefix: str, env: dict | None = None) -> None:
    proc = subprocess.run([PY, "launch.py", mode, prefix], cwd=project, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, **(env or {}),
                               "CHESTER_CONFIG_PATH": str(project / "chester.yaml")})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "can't register atexit" not in proc.stderr, proc.stderr


def _check(project: Path, prefix: str, monkeypatch, *, slurm: bool = False) -> None:
    import chester
    from chester.types import State

    monkeypatch.setenv("CHESTER_CONFIG_PATH", str(project / "chester.yaml"))
    monkeypatch.chdir(project)
    chester_config.reload_config()
    try:
        sweep = chester.sweep(prefix)
        states = sweep.wait(timeout=120, poll_interval=0.3, progress=False, pull=True)
        assert len(states) == 4
        assert set(states.values()) == {State.SUCCEEDED}, states
        got = sorted((d["lr"], d["seed"]) for d in
                     (json.loads((r.log_dir / "out.json").read_text()) for r in sweep.runs))
        assert got == [(0.01, 1), (0.01, 2), (0.1, 1), (0.1, 2)]
        if slurm:
            assert all(json.loads((r.log_dir / "out.json").read_text())["job"]
                       for r in sweep.runs)
    finally:
        chester_config.reload_config()


def test_seed_script_exits_local(tmp_path, monkeypatch):
    project = _project(tmp_path, {"backends": {"local": {"type": "local", "max_parallel": 2}}})
    _run_script(project, "local", "seed-local")
    _check(project, "seed-local", monkeypatch)


def test_seed_script_exits_ssh(tmp_path, monkeypatch, sshd_loopback):
    h = sshd_loopback
    project = _project(tmp_path, {"backends": {"box": {
        "type": "ssh", "host": h.alias, "ssh_config": h.ssh_config, "python": PY,
        "remote_dir": f"{h.remote_dir}/{tmp_path.name}-seed"}}})
    _run_script(project, "box", "seed-ssh")
    _check(project, "seed-ssh", monkeypatch)


def test_seed_script_exits_slurm_through_login_host(tmp_path, monkeypatch, slurm_cluster,
                                                    sshd_loopback):
    h = sshd_loopback
    project = _project(tmp_path, {"backends": {"cluster": {
        "type": "slurm", "host": h.alias, "ssh_config": h.ssh_config, "python": PY,
        "poll_interval": 0.3, "scheduler_env": dict(slurm_cluster.env),
        "remote_dir": str(tmp_path / "remote")}}})
    _run_script(project, "cluster", "seed-slurm")
    _check(project, "seed-slurm", monkeypatch, slurm=True)


def test_seed_script_exits_gl_preset(tmp_path, monkeypatch, slurm_cluster, sshd_loopback):
    pytest.importorskip("chester_backend_gl")
    h = sshd_loopback
    project = _project(tmp_path, {
        "host_address": {"gl": h.alias},
        "remote_dir": {"gl": str(tmp_path / "remote")},
        "modules": {"gl": []},
        "remote_header": {"gl": "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=10\n"},
        # gl requires an account; its CPU runs ask for 16G, more than this node has
        "backends": {"gl": {"python": PY, "ssh_config": h.ssh_config, "poll_interval": 0.3,
                            "account": "lab0", "cpu_resources": {"cpus_per_task": 1},
                            "scheduler_env": dict(slurm_cluster.env)}}})
    _run_script(project, "gl", "seed-gl")
    _check(project, "seed-gl", monkeypatch, slurm=True)


def test_seed_script_exit_status_when_submit_fails(tmp_path):
    project = _project(tmp_path, {"backends": {"local": {"type": "local"}}})
    proc = subprocess.run([PY, "launch.py", "no-such-backend", "seed-bad"], cwd=project,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")})
    assert proc.returncode == 1
    assert "were not submitted" in proc.stderr and "no-such-backend" in proc.stderr
