"""``hydra/launcher=chester`` with a real Hydra app (hydra-core from PyPI): every job of a
multirun is a chester run, in Hydra's own output folder, and its result goes back to Hydra.
On this machine and on the test SLURM through its login host (testinfra)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hydra")
pytest.importorskip("hydra_plugins.chester_launcher")

PY = sys.executable

APP = textwrap.dedent('''
    import json, os, sys
    import hydra
    from hydra.core.hydra_config import HydraConfig

    def task(cfg):
        out = HydraConfig.get().runtime.output_dir
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"lr": cfg.lr, "msg": cfg.msg, "host_job": os.environ.get("SLURM_JOB_ID"),
                       "chester_run": os.environ.get("CHESTER_PROJECT_DIR") is not None}, f)
        if cfg.lr < 0:
            raise ValueError(f"lr must be positive, got {cfg.lr}")
        return {"score": cfg.lr * 10, "msg": cfg.msg}

    main = hydra.main(version_base=None, config_path="configs", config_name="config")(task)

    if __name__ == "__main__":
        main()
''')

# Hydra's own multirun API, as Hydra's launcher tests call it: prints what each job returned
RETURNS = textwrap.dedent('''
    import json, os, sys
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from app import task

    with initialize_config_dir(config_dir=os.path.abspath("configs"), version_base=None):
        batches = GlobalHydra.instance().hydra.multirun(
            config_name="config", task_function=task, overrides=sys.argv[1:])
    print(json.dumps([[{"status": r.status.name, "value": r.return_value,
                        "overrides": r.overrides, "dir": r.hydra_cfg.hydra.runtime.output_dir}
                       for r in batch] for batch in batches]))
''')


def _project(tmp_path: Path, backends: dict) -> Path:
    p = tmp_path / "project"
    p.mkdir()
    (p / ".git").mkdir()
    (p / "app.py").write_text(APP)
    (p / "returns.py").write_text(RETURNS)
    (p / "configs").mkdir()
    (p / "configs" / "config.yaml").write_text("lr: 0.1\nmsg: hello\n")
    (p / "chester.yaml").write_text(yaml.safe_dump({"backends": backends}))
    return p


def _run(project: Path, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    return subprocess.run([PY, *argv], cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _check_returns(project: Path, backend: str, *, slurm: bool = False) -> None:
    proc = _run(project, "returns.py", "hydra/launcher=chester",
                f"hydra.launcher.backend={backend}", "hydra.launcher.poll_interval=0.3",
                "lr=0.5,0.25", "msg='a b','$(id)'")
    assert proc.returncode == 0, proc.stderr
    (batch,) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(batch) == 4
    assert all(r["status"] == "COMPLETED" for r in batch)
    got = sorted((r["value"]["score"], r["value"]["msg"]) for r in batch)
    assert got == [(2.5, "$(id)"), (2.5, "a b"), (5.0, "$(id)"), (5.0, "a b")]
    for r in batch:  # each job ran in Hydra's own output folder, which came home
        d = Path(r["dir"])
        res = json.loads((d / "result.json").read_text())
        assert res["chester_run"] is True
        assert bool(res["host_job"]) is slurm
        assert (d / ".hydra" / "overrides.yaml").exists()
        assert (d / ".done").exists()
    assert all(Path(r["dir"]).parent == Path(batch[0]["dir"]).parent for r in batch)
    assert str(project / "multirun") in batch[0]["dir"]


def test_multirun_on_local_returns_every_job_result(tmp_path):
    project = _project(tmp_path, {"local": {"type": "local", "max_parallel": 2}})
    _check_returns(project, "local")
    # the runs are chester runs: the store knows them
    proc = subprocess.run([PY, "-m", "chester.cli", "status", "--json"],
                          cwd=project, capture_output=True, text=True, timeout=60,
                          env={**os.environ,
                               "CHESTER_CONFIG_PATH": str(project / "chester.yaml")})
    assert proc.returncode == 0, proc.stderr
    assert [r["state"] for r in json.loads(proc.stdout)["runs"]] == ["succeeded"] * 4


def test_app_command_line_and_a_failing_job(tmp_path):
    project = _project(tmp_path, {"local": {"type": "local", "max_parallel": 2}})
    ok = _run(project, "app.py", "-m", "hydra/launcher=chester",
              "hydra.launcher.backend=local", "hydra.launcher.exp_prefix=cli", "lr=1e-3,1e-4")
    assert ok.returncode == 0, ok.stderr
    assert "Launching 2 jobs as chester runs on backend 'local' (sweep 'cli')" in ok.stdout
    results = sorted(json.loads(p.read_text())["lr"]
                     for p in (project / "multirun").glob("*/*/*/result.json"))
    assert results == [1e-4, 1e-3]
    bad = _run(project, "app.py", "-m", "hydra/launcher=chester",
               "hydra.launcher.backend=local", "lr=0.5,-1")
    assert bad.returncode != 0
    assert "lr must be positive, got -1" in bad.stderr


def test_multirun_on_slurm_returns_every_job_result(tmp_path, slurm_cluster, sshd_loopback):
    h = sshd_loopback
    project = _project(tmp_path, {"cluster": {
        "type": "slurm", "host": h.alias, "ssh_config": h.ssh_config, "python": PY,
        "poll_interval": 0.3, "scheduler_env": dict(slurm_cluster.env),
        "remote_dir": str(tmp_path / "remote")}})
    _check_returns(project, "cluster", slurm=True)
    ok = _run(project, "app.py", "-m", "hydra/launcher=chester",
              "hydra.launcher.backend=cluster", "hydra.launcher.poll_interval=0.3",
              "hydra.sweep.dir=multirun/from-the-app", "lr=1e-3,1e-4")
    assert ok.returncode == 0, ok.stderr
    results = sorted(json.loads(p.read_text())["lr"]
                     for p in (project / "multirun" / "from-the-app").glob("*/result.json"))
    assert results == [1e-4, 1e-3]


SLOW_APP = textwrap.dedent('''
    import os, time
    import hydra
    from chester import store

    if os.environ.get("CRASH_AFTER_SUBMIT"):  # the multirun dies between submit and record
        def crash(self, handles):
            os._exit(9)
        store.Store.record_submitted = crash

    @hydra.main(version_base=None, config_path="configs", config_name="config")
    def main(cfg):
        time.sleep(float(os.environ.get("JOB_SLEEP", "0")))
        with open("ran.txt", "a") as f:  # the job's output folder (hydra.job.chdir)
            f.write(f"{cfg.lr}\\n")
        return cfg.lr

    if __name__ == "__main__":
        main()
''')

FIXED = ["-m", "hydra/launcher=chester", "hydra.launcher.backend=local",
         "hydra.launcher.poll_interval=0.2", "hydra.job.chdir=True", "hydra.sweep.dir=fixed",
         "hydra.sweep.subdir=job_${hydra.job.num}", "lr=0.1,0.2"]


def test_a_multirun_into_a_fixed_folder_runs_again_and_an_active_one_is_one_line(tmp_path):
    project = _project(tmp_path, {"local": {"type": "local", "max_parallel": 2}})
    (project / "slow.py").write_text(SLOW_APP)
    for _ in range(2):  # Hydra's rule: each multirun launches, into the same folders
        ok = _run(project, "slow.py", *FIXED)
        assert ok.returncode == 0, ok.stderr
    assert (project / "fixed" / "job_0" / "ran.txt").read_text() == "0.1\n0.1\n"
    assert "taking over 2 run folders of" in ok.stderr
    # a job still running in the folder: the next multirun is refused in one line
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml"),
           "JOB_SLEEP": "60"}
    first = subprocess.Popen([PY, "slow.py", *FIXED], cwd=project, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "running" not in _states(project):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        busy = _run(project, "slow.py", *FIXED)
        assert busy.returncode == 1
        # one line (then Hydra's own hint about HYDRA_FULL_ERROR), never a traceback
        said = [line for line in busy.stderr.splitlines() if line.strip()]
        assert said[0].startswith("chester: the run folder ") and "which is still" in said[0]
        assert said[1:] == ["Set the environment variable HYDRA_FULL_ERROR=1 for a complete "
                            "stack trace."], busy.stderr
    finally:
        subprocess.run([PY, "-m", "chester.cli", "cancel", "slow"], cwd=project, env=env,
                       capture_output=True, timeout=60)
        first.wait(timeout=60)


def _states(project: Path) -> list[str]:
    proc = subprocess.run([PY, "-m", "chester.cli", "status", "--json", "slow"], cwd=project,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")})
    return [r["state"] for r in json.loads(proc.stdout)["runs"]] if proc.returncode == 0 else []


def test_a_multirun_killed_while_submitting_is_completed_never_duplicated(tmp_path):
    project = _project(tmp_path, {"local": {"type": "local", "max_parallel": 2}})
    (project / "slow.py").write_text(SLOW_APP)
    crashed = subprocess.run([PY, "slow.py", *FIXED], cwd=project, capture_output=True,
                             text=True, timeout=120,
                             env={**os.environ, "CRASH_AFTER_SUBMIT": "1",
                                  "CHESTER_CONFIG_PATH": str(project / "chester.yaml")})
    assert crashed.returncode == 9, crashed.stderr
    again = _run(project, "slow.py", *FIXED)
    assert again.returncode == 0, again.stderr
    assert "stopped while submitting: completing it" in again.stderr
    for job in ("job_0", "job_1"):  # each job ran once
        assert len((project / "fixed" / job / "ran.txt").read_text().split()) == 1


def test_multirun_on_a_pool_returns_every_job_result_and_records_members(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = _project(tmp_path, {"one": {"type": "local", "max_parallel": 1},
                                  "anywhere": {"type": "pool", "members": ["one", "local"]}})
    _check_returns(project, "anywhere")
    st = _run(project, "-m", "chester.cli", "status", "--json")
    assert st.returncode == 0, st.stderr
    members = {r["member"] for r in json.loads(st.stdout)["runs"]}
    assert members == {"one", "local"}, members
