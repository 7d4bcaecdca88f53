"""The seed's script example, run as a script with ``mode`` set to the test SLURM (through
its login host): one sweep of its four runs under its prefix."""

from __future__ import annotations

import yaml
from chester_testinfra.helpers import run_seed_example, stop_monitor


def test_the_seed_example_on_slurm(tmp_path, slurm_local, login_host, make_config):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump(make_config(
        host=login_host, remote_dir=str(tmp_path / "remote"))))
    try:
        st = run_seed_example(project, "slurm")
        # collected and submitted together when the script ended: one launch, one array
        assert len(st["sweep_ids"]) == 1
        assert len({run["remote_id"].split("_")[0] for run in st["runs"]}) == 1
        assert (project / ".chester" / "monitor" / "my_experiment.pid").exists()
    finally:
        stop_monitor(project)
