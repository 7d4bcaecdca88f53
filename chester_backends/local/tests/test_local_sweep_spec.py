"""The local backend writes one sweep spec per launch: a run's folder is written when the
queue reaches it, so nothing per run is written before the queue starts; a run the queue
has not reached reads queued, cancelled once cancelled, and lost once its runner is gone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import chester
from chester.config import load_config
from chester.target import rundir as rd


def gated(variant, log_dir, exp_name):
    """Wait until the gate file exists (the first run holds the one slot)."""
    import os
    import time

    while not os.path.exists(variant["gate"]):
        time.sleep(0.02)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    (root / "chester.yaml").write_text(
        "backends:\n  local:\n    type: local\n    max_parallel: 1\n")
    return load_config(root / "chester.yaml")


def _until(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_run_folder_is_written_when_the_queue_reaches_it(cfg, tmp_path):
    gate = tmp_path / "gate"
    sweep = chester.launch(gated, [{"gate": str(gate), "i": i} for i in range(3)],
                           exp_prefix="spec", config=cfg)
    rows = sweep.rows()
    first, later = Path(rows[0].local_dir), [Path(r.local_dir) for r in rows[1:]]
    _until(lambda: (first / rd.STATUS).exists())
    # the first run holds the one slot: the last has no folder, and reads queued
    assert not later[1].exists()
    assert sweep.status()[rows[2].name] == chester.State.QUEUED
    assert sweep.store.runs(sweep.id)[2].pending_reason == "waiting for a free slot"
    # the one file the launch wrote for its runs
    queues = cfg.project_path / ".chester" / "queues"
    assert len(list(queues.glob("*.spec"))) == 1
    gate.touch()
    assert set(sweep.wait(timeout=60, pull=False).values()) == {chester.State.SUCCEEDED}
    for d in (first, *later):  # each written from the spec, as the launcher would have
        assert (d / rd.PAYLOAD).stat().st_mode & 0o777 == 0o600
        assert '"i": ' in (d / rd.VARIANT_JSON).read_text()
        assert (d / ".done").exists()


def test_a_run_cancelled_before_the_queue_reaches_it_never_starts(cfg, tmp_path):
    gate = tmp_path / "gate"
    sweep = chester.launch(gated, [{"gate": str(gate), "i": i} for i in range(3)],
                           exp_prefix="cancel", config=cfg)
    rows = sweep.rows()
    _until(lambda: (Path(rows[0].local_dir) / rd.STATUS).exists())
    assert not Path(rows[2].local_dir).exists()
    assert sweep.cancel([rows[2].name]) == {rows[2].name: True}
    assert sweep.status()[rows[2].name] == chester.State.CANCELLED
    gate.touch()
    states = sweep.wait(timeout=60, pull=False)
    assert [states[r.name] for r in rows] == [chester.State.SUCCEEDED, chester.State.SUCCEEDED,
                                              chester.State.CANCELLED]
    status = rd.read_json(Path(rows[2].local_dir) / rd.STATUS)
    assert status["state"] == "cancelled" and "started_at" not in status


def test_runs_the_queue_never_reached_are_lost_when_its_runner_dies(cfg, tmp_path):
    gate = tmp_path / "gate"
    sweep = chester.launch(gated, [{"gate": str(gate), "i": i} for i in range(3)],
                           exp_prefix="lost", config=cfg)
    rows = sweep.rows()
    _until(lambda: (Path(rows[0].local_dir) / rd.STATUS).exists())
    record = next((cfg.project_path / ".chester" / "queues").glob("*.runner.json"))
    runner = rd.read_json(record)["runner_pid"]
    os.kill(runner, signal.SIGKILL)
    _until(lambda: not rd.pid_alive(runner))
    sweep.status()
    st = {r.name: r for r in sweep.runs}
    assert st[rows[2].name].state == chester.State.LOST
    assert "runner" in (st[rows[2].name].reason or "")
    gate.touch()  # the first run's worker lives on in its own session and ends
    _until(lambda: sweep.status()[rows[0].name] == chester.State.SUCCEEDED)


def talk(variant, log_dir, exp_name):
    import os
    import time

    while not os.path.exists(variant["gate"]):
        time.sleep(0.02)
    for i in range(3):
        print("tick", i, flush=True)


def test_logs_follow_waits_for_a_run_the_queue_has_not_reached(cfg, tmp_path):
    import subprocess
    import sys

    gate = tmp_path / "gate"
    sweep = chester.launch(talk, [{"gate": str(gate), "i": i} for i in range(3)],
                           exp_prefix="follow", config=cfg)
    rows = sweep.rows()
    _until(lambda: (Path(rows[0].local_dir) / rd.STATUS).exists())
    assert not Path(rows[2].local_dir).exists()  # (the second is next: written)
    follower = subprocess.Popen([sys.executable, "-m", "chester.cli", "logs", "-f", rows[2].name],
                                cwd=cfg.project_path, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the follower has looked at the run (queued, no folder) and waits
        assert follower.poll() is None
        gate.touch()
        out, _ = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert [line for line in out.splitlines() if line.startswith("tick")] == \
        ["tick 0", "tick 1", "tick 2"]
