"""The seed's script example, run as a script with ``mode`` set to an ssh backend (a real
sshd from tests/infra): one sweep of its four runs under its prefix."""

from __future__ import annotations

import sys

import yaml

from tests.helpers import run_seed_example, stop_monitor


def test_the_seed_example_on_an_ssh_host(tmp_path, sshd_hosts):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    h = sshd_hosts[0]
    (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"myserver": {
        "type": "ssh", "host": h.alias, "remote_dir": f"/remote/{tmp_path.name}",
        "ssh_config": sshd_hosts.ssh_config, "python": sys.executable,
        "connect_timeout": 3}}}))
    try:
        st = run_seed_example(project, "myserver")
        # collected and submitted together when the script ended: one launch
        assert len(st["sweep_ids"]) == 1
        # auto_pull=True started one monitor for the prefix
        assert (project / ".chester" / "monitor" / "my_experiment.pid").exists()
    finally:
        stop_monitor(project)
