"""The supervisor's decisions without a scheduler: which ends are retried, when it gives up,
and how the laptop reads its journal back into the runs' statuses."""

from __future__ import annotations

import json

import pytest
from chester_backend_slurm import supervisor
from chester_backend_slurm.plugin import reconcile, supervision_line

from chester.types import RunHandle, RunStatus, State


def _record(run_dir, **rec):
    (run_dir / ".chester").mkdir(parents=True, exist_ok=True)
    (run_dir / ".chester" / "status.json").write_text(json.dumps(rec))


@pytest.mark.parametrize(("state", "record", "retry_failed", "why"), [
    ("NODE_FAIL", None, False, "node_fail"),
    ("PREEMPTED", {"started_at": 1}, False, "preempted"),
    ("BOOT_FAIL", None, False, "node_fail"),
    ("FAILED", {"started_at": 1}, False, "lost"),  # the worker died before its end record
    ("FAILED", {"started_at": 1, "ended_at": 2, "state": "failed"}, False, None),
    ("FAILED", {"started_at": 1, "ended_at": 2, "state": "failed"}, True, "failed"),
    ("TIMEOUT", {"started_at": 1}, True, None),
    ("OUT_OF_MEMORY", {"started_at": 1}, True, None),
    ("CANCELLED", {"started_at": 1}, True, None),
    ("COMPLETED", {"started_at": 1, "ended_at": 2, "state": "succeeded"}, True, None),
])
def test_which_ends_are_retried(tmp_path, state, record, retry_failed, why):
    run = tmp_path / "run"
    run.mkdir()
    if record is not None:
        _record(run, **record)
    assert supervisor._retry_reason(state, str(run), retry_failed) == why


def test_a_cancelled_run_is_never_retried(tmp_path):
    run = tmp_path / "run"
    _record(run, started_at=1)
    (run / ".chester" / "cancel").write_text("{}")
    assert supervisor._retry_reason("NODE_FAIL", str(run), True) is None


def test_a_supervisor_that_fails_every_cycle_gives_up(tmp_path):
    (tmp_path / supervisor.CONFIG).write_text('{"jobs": [{"index": "not a number"}]}')
    rcs = [supervisor.main(["supervise.py", str(tmp_path)])
           for _ in range(supervisor.MAX_FAILED_CYCLES)]
    assert rcs == [supervisor.AGAIN] * (supervisor.MAX_FAILED_CYCLES - 1) + [0]
    events = supervisor.read_journal(str(tmp_path))
    assert events[-1]["event"] == "done" and "in a row failed" in events[-1]["why"]


def test_a_supervisor_whose_submits_keep_failing_gives_up(tmp_path):
    """submit-rest.sh failing cycle after cycle (the stage damaged) ends the chain too."""
    (tmp_path / supervisor.CONFIG).write_text(json.dumps(
        {"jobs": [{"index": 0, "kind": "array", "run_dirs": [str(tmp_path / "r")]}]}))
    (tmp_path / supervisor.REST).write_text("echo broken >&2; exit 1\n")
    rcs = [supervisor.main(["supervise.py", str(tmp_path)])
           for _ in range(supervisor.MAX_FAILED_CYCLES)]
    assert rcs == [supervisor.AGAIN] * (supervisor.MAX_FAILED_CYCLES - 1) + [0]
    events = supervisor.read_journal(str(tmp_path))
    assert events[-1]["event"] == "done" and "in a row failed" in events[-1]["why"]
    assert any(e.get("stderr") == "broken" for e in events)


def test_the_stop_marker_ends_the_chain(tmp_path):
    (tmp_path / supervisor.STOP).touch()
    assert supervisor.main(["supervise.py", str(tmp_path)]) == 0
    assert supervisor.read_journal(str(tmp_path))[-1]["event"] == "stopped"


def test_the_laptop_reads_the_journal_into_the_statuses():
    stage = "/p/.chester/slurm/s1"
    common = {"backend": "slurm", "local_dir": "/l", "host": "h"}
    sent = RunHandle(run_id=1, token="a", remote_dir="/r/a", remote_id="7_0",
                     extra=(("job", "7"), ("stage", stage), ("supervisor", "3")), **common)
    retried = RunHandle(run_id=2, token="b", remote_dir="/r/b", remote_id="5_1",
                        extra=(("job", "5"), ("stage", stage), ("supervisor", "3")), **common)
    waiting = RunHandle(run_id=3, token="c", remote_dir="/r/c", remote_id=None,
                        extra=(("stage", stage), ("supervisor", "3"), ("deferred", "4")),
                        **common)
    journal = [{"t": 100.0, "event": "submitted", "job": 2, "id": "7"},
               {"t": 101.0, "event": "requeued", "run": "/r/b", "id": "5_1", "why": "lost",
                "attempt": 2},
               {"t": 102.0, "event": "cycle", "next": 162.0}]
    out = reconcile([sent, retried, waiting], {
        "a": RunStatus(state=State.SUCCEEDED),
        "b": RunStatus(state=State.RUNNING, attempt=2),
        "c": RunStatus(state=State.QUEUED, pending_reason="waiting to submit: QOSX")},
        {stage: journal})
    assert out["a"].history == ((100.0, "queued", "submitted by the supervisor as job 7"),)
    assert out["a"].pending_reason is None  # finished: nothing to say about the supervisor
    assert out["b"].history == ((101.0, "requeued",
                                 "requeued by the supervisor after lost (attempt 2)"),)
    assert out["c"].pending_reason.startswith("waiting to submit: QOSX; supervisor alive, "
                                              "last cycle ")
    assert supervision_line(journal + [{"t": 200.0, "event": "done"}]).startswith(
        "supervisor done at ")
    assert supervision_line([]) == "supervisor not started yet"
    # a run of a launch without a supervisor is left as it was
    plain = RunHandle(run_id=4, token="d", remote_dir="/r/d", remote_id="9",
                      extra=(("stage", "/other"),), **common)
    st = RunStatus(state=State.QUEUED, pending_reason="Priority")
    assert reconcile([plain], {"d": st}, {stage: journal})["d"] == st
