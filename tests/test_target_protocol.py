"""The run folder's records as the target tool reads them: a cancel says who and when and
leaves no traceback of chester's; a worker that never started ends at its exit record,
and `tail -f` ends with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from chester.launcher import write_run_folder
from chester.target import rundir as rd
from chester.target import tool


def cleanup_then_wait(variant, log_dir, exp_name):
    try:
        print("training", flush=True)
        open(os.path.join(log_dir, "started"), "w").close()
        time.sleep(120)
    finally:
        print("saved a last checkpoint", file=sys.stderr, flush=True)


def _run_folder(d: Path, fn=cleanup_then_wait) -> Path:
    write_run_folder(SimpleNamespace(id=1, name="1_c", token="tok", local_dir=str(d)), fn=fn,
                     variant={}, project_dir=str(d.parent), env={})
    return d


def _start_worker(d: Path) -> subprocess.Popen:
    out = open(d / rd.STDOUT, "ab")
    err = open(d / rd.STDERR, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "chester.target.worker", str(d)],
                                stdout=out, stderr=err, start_new_session=True)
    finally:
        out.close()
        err.close()


def _poll(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_cancelled_run_ends_without_chesters_traceback_and_says_who_and_when(tmp_path):
    d = _run_folder(tmp_path / "1_c")
    proc = _start_worker(d)
    try:
        _poll(lambda: (d / "started").exists())
        assert tool.cancel(d, grace_s=30) is True
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (d / rd.STDERR).read_text()
    assert "Traceback" not in err and "Terminated" not in err, err
    assert "saved a last checkpoint" in err  # the run's own cleanup output stays
    last = err.strip().splitlines()[-1]
    assert last.startswith("chester: cancelled by chester cancel at ") and "SIGTERM" in last
    marker = json.loads((d / rd.CANCEL).read_text())
    assert marker["by"] == "chester cancel" and abs(marker["at"] - time.time()) < 60
    record = json.loads((d / rd.STATUS).read_text())
    assert record["state"] == "cancelled" and record["cancelled_by"] == "chester cancel"
    state = tool.probe(d)
    clock = time.strftime("%H:%M", time.localtime(marker["at"]))
    assert state["state"] == "cancelled"
    assert state["reason"] == f"cancelled by chester cancel at {clock}", state
    assert state["cancelled_at"] == marker["at"]


def test_a_run_cancelled_before_it_started_says_so(tmp_path):
    d = _run_folder(tmp_path / "1_c")
    subprocess.run([sys.executable, "-m", "chester.target", "cancel", "--by", "the night "
                    "shift", str(d)], check=True, capture_output=True, timeout=60)
    state = tool.probe(d)
    assert state["state"] == "cancelled"
    assert state["reason"].startswith("cancelled by the night shift at ")
    assert state["reason"].endswith(" before it started")
    # the worker, started later, does not run it and records the same words
    assert subprocess.run([sys.executable, "-m", "chester.target.worker", str(d)],
                          timeout=60).returncode == 0
    assert json.loads((d / rd.STATUS).read_text())["reason"] == state["reason"]


def test_an_empty_cancel_marker_of_an_older_version_still_reads_cancelled(tmp_path):
    d = _run_folder(tmp_path / "1_c")
    (d / rd.CANCEL).touch()
    assert tool.probe(d)["reason"] == "cancelled before it started"


def test_a_worker_that_never_started_ends_at_its_exit_record(tmp_path):
    """Whoever started the worker recorded its exit (a missing Python, a failing
    environment file): the run reads failed with that code, never queued."""
    d = _run_folder(tmp_path / "1_c")
    (d / rd.STDERR).write_text("sh: 1: /opt/py/bin/python: not found\n")
    rd.write_json_atomic(d / rd.QUEUED, {"runner_pid": os.getpid(),
                                         "runner_ticks": rd.proc_start_time(os.getpid()),
                                         "token": "tok"})  # its runner lives on
    assert tool.probe(d)["state"] == "queued"
    rd.write_json_atomic(d / rd.EXIT, {"token": "tok", "attempt": 1, "returncode": 127})
    state = tool.probe(d)
    assert state["state"] == "failed" and state["exit_code"] == 127
    assert "before it recorded a start" in state["reason"]
    assert "not found" in state["stderr_tail"]
    os.unlink(d / rd.QUEUED)  # no queue runner at all (a plugin's own way of starting)
    assert tool.probe(d)["state"] == "failed"
    rd.write_json_atomic(d / rd.EXIT, {"token": "tok", "returncode": -9})
    state = tool.probe(d)
    assert state["signal"] == 9 and "SIGKILL" in state["reason"]
    # an exit record of an earlier attempt (another token) is not this run's end
    rd.write_json_atomic(d / rd.EXIT, {"token": "old", "returncode": 1})
    assert tool.probe(d)["state"] == "queued"


def test_tail_f_ends_when_a_worker_that_never_started_has_ended(tmp_path):
    d = _run_folder(tmp_path / "1_c")
    (d / rd.STDOUT).write_text("")
    follower = subprocess.Popen([sys.executable, "-m", "chester.target", "tail", "-f", str(d),
                                 "stderr"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # it follows a queued run (nothing says it ended yet)
        assert follower.poll() is None
        (d / rd.STDERR).write_text("sh: 1: /opt/py/bin/python: not found\n")
        rd.write_json_atomic(d / rd.EXIT, {"token": "tok", "returncode": 127})
        out, _ = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGKILL)
    assert follower.returncode == 0 and "not found" in out
