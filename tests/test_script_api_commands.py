"""The seed's script API for scripts and Hydra apps: ``script=``, ``python_command=``,
``hydra_enabled=``, ``hydra_flags=``, extra keyword arguments and
``launch_with_subprocess=False``, run for real (a real Hydra app from hydra-core) on the local
backend, and a seed-style launcher script of ``script=`` calls that exits, on SLURM."""

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
from chester import run_exp

PY = sys.executable

ARGPARSE_SCRIPT = textwrap.dedent('''
    import argparse, json, os, sys
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float)
    p.add_argument("--msg")
    p.add_argument("--epochs", type=int)
    p.add_argument("--log_dir")
    p.add_argument("--exp_name")
    a = p.parse_args()
    with open(os.path.join(a.log_dir, "args.json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "lr": a.lr, "msg": a.msg, "epochs": a.epochs,
                   "exp_name": a.exp_name, "python": sys.executable}, f)
''')

HYDRA_APP = textwrap.dedent('''
    import json, os
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    @hydra.main(version_base=None, config_path="configs", config_name="config")
    def main(cfg):
        out = HydraConfig.get().runtime.output_dir
        with open(os.path.join(out, "cfg.json"), "w") as f:
            json.dump(OmegaConf.to_container(cfg), f)
        return cfg.lr * 2

    if __name__ == "__main__":
        main()
''')

CONFIG = "lr: 0.1\nmsg: hello\nmodel:\n  name: mlp\n  depth: 2\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    pytest.importorskip("hydra")
    p = tmp_path / "project"
    p.mkdir()
    (p / ".git").mkdir()
    (p / "train.py").write_text(ARGPARSE_SCRIPT)
    (p / "app.py").write_text(HYDRA_APP)
    (p / "configs").mkdir()
    (p / "configs" / "config.yaml").write_text(CONFIG)
    (p / "chester.yaml").write_text(yaml.safe_dump(
        {"backends": {"local": {"type": "local", "max_parallel": 2}}}))
    monkeypatch.setenv("CHESTER_CONFIG_PATH", str(p / "chester.yaml"))
    monkeypatch.chdir(p)
    chester_config.reload_config()
    yield p
    chester_config.reload_config()


def test_script_argparse_with_extra_kwargs(project):
    from chester.types import State

    msgs = ["$(touch /tmp/chester-pwned-seed) 'q'", "two\nlines ☃"]
    sweeps = []
    for i, msg in enumerate(msgs):
        sweeps.append(run_exp.run_experiment_lite(
            script="train.py", python_command="python", variant={"lr": 0.1 * (i + 1),
                                                                  "msg": msg},
            exp_prefix="seed-script", epochs=7, mode="local"))  # blocking, as in the seed
    for sweep, msg in zip(sweeps, msgs, strict=True):
        (run,) = sweep.runs
        assert run.state == State.SUCCEEDED
        got = json.loads((run.log_dir / "args.json").read_text())
        assert got["msg"] == msg and got["epochs"] == 7 and got["exp_name"] == run.name
        assert got["argv"][:6] == ["--lr", got["argv"][1], "--msg", msg, "--epochs", "7"]
    assert not Path("/tmp/chester-pwned-seed").exists()


def test_hydra_enabled_runs_the_app_with_overrides_in_the_run_folder(project):
    from chester.types import State

    vg = run_exp.VariantGenerator()
    vg.add("lr", [0.5, 0.25])
    vg.add("model", [{"name": "cnn", "depth": 4}])
    for v in vg.variants():
        sweep = run_exp.run_experiment_lite(script="app.py", hydra_enabled=True,
                                            hydra_flags={"multirun": False}, variant=v,
                                            variations=vg.variations(), exp_prefix="seed-hydra",
                                            mode="local", wait_subprocess=False)
    # the last variant carries chester_last_variant: that call submitted the collected runs
    assert sweep is not None and run_exp.flush() is None
    states = sweep.wait(timeout=120, poll_interval=0.2, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}
    got = sorted(json.loads((r.log_dir / "cfg.json").read_text())["lr"] for r in sweep.runs)
    assert got == [0.25, 0.5]
    cfg = json.loads((sweep.runs[0].log_dir / "cfg.json").read_text())
    assert cfg["model"] == {"name": "cnn", "depth": 4} and cfg["msg"] == "hello"
    assert all((r.log_dir / ".hydra" / "overrides.yaml").exists() for r in sweep.runs)


def test_launch_with_subprocess_false_composes_in_process(project):
    seen = []

    def task(cfg):
        from hydra.core.hydra_config import HydraConfig

        seen.append((cfg.lr, cfg.model.name, HydraConfig.get().runtime.output_dir))
        return "ok"

    from hydra import version
    from hydra.core.hydra_config import HydraConfig

    base, hydra_cfg = version.getbase(), HydraConfig.instance().cfg
    out = run_exp.run_experiment_lite(stub_method_call=task, script="app.py",
                                      hydra_enabled=True, launch_with_subprocess=False,
                                      variant={"lr": 0.3, "model": {"name": "rnn"}},
                                      exp_prefix="seed-inproc", exp_name="dbg", mode="local")
    assert out == "ok"
    assert seen == [(0.3, "rnn", str(project / "data" / "train" / "seed-inproc" / "dbg"))]
    assert (project / "data" / "train" / "seed-inproc" / "dbg").is_dir()
    # Hydra's process-wide state is as it was (a Hydra app run later in this process
    # keeps its own version base and config)
    def kind(b):  # a Version, or Hydra's "unspecified" marker (an object())
        return str(b) if b is None or type(b) is not object else "unspecified"

    assert kind(version.getbase()) == kind(base) and HydraConfig.instance().cfg == hydra_cfg


def test_seed_api_bad_combinations_are_refused(project):
    with pytest.raises(TypeError, match="hydra_flags= needs hydra_enabled"):
        run_exp.run_experiment_lite(script="app.py", hydra_flags={"x": 1}, variant={})
    with pytest.raises(TypeError, match="give its file as script="):
        run_exp.run_experiment_lite(stub_method_call=print, hydra_enabled=True, variant={})
    with pytest.raises(TypeError, match="needs hydra_enabled=True"):
        run_exp.run_experiment_lite(stub_method_call=print, launch_with_subprocess=False,
                                    variant={})


SEED_SCRIPT_RUNS = textwrap.dedent('''
    import sys
    from chester.run_exp import VariantGenerator, run_experiment_lite

    vg = VariantGenerator()
    vg.add("lr", [0.5, 0.25, 0.125])
    for v in vg.variants():
        run_experiment_lite(script="app.py", hydra_enabled=True, variant=v, mode=sys.argv[1],
                            exp_prefix="seed-hydra-exit", variations=vg.variations(),
                            wait_subprocess=False)
''')


def test_seed_script_of_hydra_runs_exits_on_slurm(tmp_path, monkeypatch, slurm_cluster,
                                                  sshd_loopback):
    pytest.importorskip("hydra")
    import chester
    from chester.types import State

    h = sshd_loopback
    p = tmp_path / "project"
    p.mkdir()
    (p / ".git").mkdir()
    (p / "app.py").write_text(HYDRA_APP)
    (p / "configs").mkdir()
    (p / "configs" / "config.yaml").write_text(CONFIG)
    (p / "launch.py").write_text(SEED_SCRIPT_RUNS)
    (p / "chester.yaml").write_text(yaml.safe_dump({"backends": {"cluster": {
        "type": "slurm", "host": h.alias, "ssh_config": h.ssh_config, "python": PY,
        "poll_interval": 0.3, "scheduler_env": dict(slurm_cluster.env),
        "remote_dir": str(tmp_path / "remote")}}}))
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(p / "chester.yaml")}
    proc = subprocess.run([PY, "launch.py", "cluster"], cwd=p, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    monkeypatch.setenv("CHESTER_CONFIG_PATH", str(p / "chester.yaml"))
    monkeypatch.chdir(p)
    chester_config.reload_config()
    try:
        sweep = chester.sweep("seed-hydra-exit")
        states = sweep.wait(timeout=120, poll_interval=0.3, progress=False, pull=True)
        assert set(states.values()) == {State.SUCCEEDED}, states
        got = sorted(json.loads((r.log_dir / "cfg.json").read_text())["lr"]
                     for r in sweep.runs)
        assert got == [0.125, 0.25, 0.5]
    finally:
        chester_config.reload_config()
