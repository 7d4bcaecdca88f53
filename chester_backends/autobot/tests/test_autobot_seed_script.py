"""The seed's script example with ``mode='autobot'`` and the seed's keys (``host_address``,
``remote_dir`` and ``autobot_nodelist`` per mode), on the test lab."""

from __future__ import annotations

import json

import yaml
from chester_testinfra.gpulab import lab_backend
from chester_testinfra.helpers import run_seed_example, stop_monitor


def test_run_experiment_lite_with_mode_autobot(tmp_path, gpu_lab):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    remote = tmp_path / "shared" / "proj"
    opts = lab_backend(gpu_lab, remote)
    seed = {"host_address": {"autobot": opts.pop("host")},
            "remote_dir": {"autobot": opts.pop("remote_dir")},
            "autobot_nodelist": opts.pop("nodes"),
            # what the seed had no key for: how this machine and the login host reach things
            "backends": {"autobot": opts}}
    (project / "chester.yaml").write_text(yaml.safe_dump(seed))
    try:
        st = run_seed_example(project, "autobot")
        assert len(st["sweep_ids"]) == 1
    finally:
        stop_monitor(project)
    hosts = [json.loads(p.read_text())["host"] for p in remote.rglob(".chester/status.json")]
    assert len(hosts) == 4 and set(hosts) <= {"chost1", "chost2"}
