"""The seed's script example, run as a script with ``mode`` set to an ssh backend (a real
sshd from testinfra): one sweep of its four runs under its prefix."""

from __future__ import annotations

import sys
import time

import yaml
from chester_testinfra.helpers import run_seed_example, stop_monitor


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


def test_one_prefix_on_two_backends_is_one_sweep(tmp_path, sshd_hosts, monkeypatch):
    """Launches of one prefix on this machine and on an ssh host: one sweep, numbered on
    from launch to launch; each backend is asked about, pulls and cancels its own runs."""
    import json

    from chester_testinfra.helpers import run_chester

    import chester
    from chester.config import load_config
    from chester.launcher import launch
    from chester.testing import fn_sleep_with_child, fn_write_result

    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    h = sshd_hosts[0]
    (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {
        "local": {"type": "local", "max_parallel": 2},
        "box": {"type": "ssh", "host": h.alias, "remote_dir": f"/remote/{tmp_path.name}",
                "ssh_config": sshd_hosts.ssh_config, "python": sys.executable,
                "connect_timeout": 3}}}))
    cfg = load_config(project / "chester.yaml")
    launch(fn_write_result, [{"i": 0}, {"i": 1}], backend="local", exp_prefix="mixed",
           config=cfg)
    launch(fn_write_result, [{"i": 2}, {"i": 3}], backend="box", exp_prefix="mixed", config=cfg)
    sweep = chester.sweep("mixed", config=cfg)
    states = sweep.wait(timeout=120, poll_interval=0.3, progress=False)
    assert len(states) == 4 and {s.value for s in states.values()} == {"succeeded"}
    rows = sweep.rows()
    assert [r.number for r in rows] == [1, 2, 3, 4]
    assert [r.backend for r in rows] == ["local", "local", "box", "box"]
    for run, i in zip(sweep.runs, range(4), strict=True):  # the ssh runs came home
        assert json.loads((run.log_dir / "result.json").read_text())["variant"]["i"] == i

    st = json.loads(run_chester(["status", "mixed", "--json"], cwd=project).stdout)
    assert st["backends"] == ["box", "local"] and st["backend"] is None
    assert [r["backend"] for r in st["runs"]] == ["local", "local", "box", "box"]
    table = run_chester(["status", "mixed"], cwd=project).stdout
    cells = [line.split("\t") for line in table.splitlines()]
    assert [(c[4], c[6]) for c in cells[1:]] == [("local", "succeeded")] * 2 + \
        [("box", "succeeded")] * 2
    assert cells[0][4] == "backend"
    p = run_chester(["pull", "mixed"], cwd=project)
    assert p.stdout.startswith("mixed: pulled 4 runs"), (p.stdout, p.stderr)
    logs = run_chester(["logs", rows[3].name], cwd=project)
    assert f"hello from {rows[3].name}" in logs.stdout, logs.stderr
    assert "nothing to monitor" in run_chester(["monitor", "mixed"], cwd=project).stdout

    # cancel: each backend stops its own
    launch(fn_sleep_with_child, [{"seconds": 300}], backend="local", exp_prefix="stop",
           config=cfg)
    launch(fn_sleep_with_child, [{"seconds": 300}], backend="box", exp_prefix="stop",
           config=cfg)
    stop = chester.sweep("stop", config=cfg)
    deadline = time.monotonic() + 60
    while any(r.state.value != "running" for r in stop.refresh()):
        assert time.monotonic() < deadline, stop.rows()
        time.sleep(0.3)
    c = run_chester(["cancel", "stop"], cwd=project)
    assert c.stdout.strip() == "stop: cancelled 2 runs (stop:1, stop:2)", (c.stdout, c.stderr)
    states = stop.wait(timeout=60, poll_interval=0.3, progress=False)
    assert {s.value for s in states.values()} == {"cancelled"}
