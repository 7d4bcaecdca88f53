"""``mode="gl"`` from the seed's script API, with only the seed's per-mode keys configured
(plus the Python to use and the test login host's ssh_config), through the loopback sshd."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("chester_backend_gl")


def train(variant, log_dir, exp_name):
    import os

    with open(os.path.join(log_dir, "out.json"), "w") as f:
        json.dump({"lr": variant["lr"], "partition": os.environ.get("SLURM_JOB_PARTITION")}, f)


def test_mode_gl_from_the_seed_api(tmp_path, slurm_local, login_host, monkeypatch):
    import cloudpickle
    import yaml

    from chester import config as chester_config
    from chester.run_exp import VariantGenerator, run_experiment_lite
    from chester.types import State

    cloudpickle.register_pickle_by_value(__import__(__name__))
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    remote = tmp_path / "remote"
    (project / "chester.yaml").write_text(yaml.safe_dump({
        "host_address": {"gl": login_host.alias},
        "remote_dir": {"gl": str(remote)},
        # seed keys override the preset: no module system and no spgpu partition here
        "modules": {"gl": []},
        "remote_header": {"gl": "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=10\n"},
        # no `python:`: the login host's and the nodes' python3 have no chester installed
        # gl's CPU runs ask for 16G; this node has 1 GB
        "backends": {"gl": {"ssh_config": login_host.ssh_config, "account": "lab0",
                            "cpu_resources": {"cpus_per_task": 1},
                            "poll_interval": 0.3, "scheduler_env": slurm_local.env}},
    }))
    monkeypatch.setenv("CHESTER_CONFIG_PATH", str(project / "chester.yaml"))
    monkeypatch.chdir(project)
    chester_config.reload_config()
    try:
        vg = VariantGenerator()
        vg.add("lr", [0.1, 0.01])
        sweep = None
        variants = vg.variants()
        for i, v in enumerate(variants):  # the seed's launcher loop
            if i == len(variants) - 1:
                v["chester_last_variant"] = True
            sweep = run_experiment_lite(stub_method_call=train, variant=v, mode="gl",
                                        exp_prefix="gl-seed", variations=vg.variations())
        assert sweep is not None
        states = sweep.wait(timeout=120, poll_interval=0.3, progress=False)
        assert set(states.values()) == {State.SUCCEEDED}
        got = sorted(json.loads((r.log_dir / "out.json").read_text())["lr"] for r in sweep.runs)
        assert got == [0.01, 0.1]
        assert all(json.loads((r.log_dir / "out.json").read_text())["partition"] == "debug"
                   for r in sweep.runs)
        assert all((r.log_dir / ".done").exists() for r in sweep.runs)
    finally:
        chester_config.reload_config()
        time.sleep(0)
