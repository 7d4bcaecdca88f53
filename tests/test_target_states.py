"""The target tool (local and ssh backends) reads runs by the one rule
(chester.target.states) where it read them its own way before: a success record without
``.done``, a worker whose process ended before it recorded its start, and a record of an
earlier attempt. Real runs through the local backend where the case can be made for real;
the tool's own reader over a run folder otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from chester.target import rundir as rd
from chester.target import tool

from .helpers import make_project, run_chester

NO_DONE = textwrap.dedent("""
    import os, chester

    def train(variant, log_dir, exp_name):
        # the worker's .done cannot be made: a link into a folder that is not there
        os.symlink("/nonexistent/chester-test/done", os.path.join(log_dir, ".done"))

    chester.launch(train, [{"i": 0}], exp_prefix="nodone")
""")


def _status(project, prefix):
    r = run_chester(["monitor", prefix, "--interval", "0.2", "--timeout", "60"], cwd=project,
                    timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return json.loads(run_chester(["status", "--json", prefix], cwd=project).stdout)["runs"]


def test_a_success_record_without_done_is_a_failure(tmp_path, monkeypatch):
    """The worker writes ``.done`` before its success record, so no reader ever sees a
    success without it; where ``.done`` cannot be written the worker records a failure
    saying so, and a success record whose ``.done`` went away reads as failed (the tool
    read it as succeeded before; SLURM's reader did not)."""
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = make_project(tmp_path / "proj", "backends:\n  local:\n    type: local\n")
    (project / "nodone.py").write_text(NO_DONE)
    subprocess.run([sys.executable, "nodone.py"], cwd=project, check=True, timeout=60,
                   capture_output=True)
    run = _status(project, "nodone")[0]
    folder = next((project / "data" / "train" / "nodone").iterdir())
    assert rd.read_json(folder / rd.STATUS)["state"] == "failed"  # the worker's word
    assert run["state"] == "failed", run
    assert run["reason"].startswith("the run returned, but its .done could not be written"), run

    (project / "ok.py").write_text("import chester\n\n\ndef train(variant, log_dir, exp_name):\n"
                                   "    pass\n\n\n"
                                   "chester.launch(train, [{'i': 0}], exp_prefix='ok')\n")
    subprocess.run([sys.executable, "ok.py"], cwd=project, check=True, timeout=60,
                   capture_output=True)
    assert _status(project, "ok")[0]["state"] == "succeeded"
    folder = next((project / "data" / "train" / "ok").iterdir())
    (folder / rd.DONE).unlink()
    # the target tool (what a status call on the target runs) reads the folder again
    got = subprocess.run([sys.executable, "-m", "chester.target", "status", str(folder)],
                         capture_output=True, text=True, timeout=60, check=True)
    run = json.loads(got.stdout)[str(folder)]
    assert rd.read_json(folder / rd.STATUS)["state"] == "succeeded"  # the worker's word
    assert run["state"] == "failed", run
    assert run["reason"] == "the worker recorded success but .done is missing", run


SETUP_FAILS = textwrap.dedent("""
    import chester

    def train(variant, log_dir, exp_name):
        raise AssertionError("never runs")

    chester.launch(train, [{"i": 0}, {"i": 1}], exp_prefix="nopy")
""")


def test_a_worker_that_never_started_says_why(tmp_path, monkeypatch):
    """The Python the runs are started with stops before chester's worker starts, saying
    why on a ``chester:`` line: each run fails with that line (it read queued while the
    queue runner lived, then lost, before; SLURM's reader read such lines)."""
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    py = tmp_path / "site-python"
    py.write_text("#!/bin/sh\necho \"chester: the lab's Python is not mounted on $(hostname)\""
                  " >&2\nexit 4\n")
    py.chmod(0o755)
    project = make_project(tmp_path / "proj", "backends:\n  local:\n    type: local\n"
                           f"    python: {py}\n")
    (project / "nopy.py").write_text(SETUP_FAILS)
    subprocess.run([sys.executable, "nopy.py"], cwd=project, check=True, timeout=60,
                   capture_output=True)
    runs = _status(project, "nopy")
    for run in runs:
        assert run["state"] == "failed", run
        assert run["reason"].startswith("the lab's Python is not mounted on "), run
        assert run["exit_code"] == 4, run


def test_a_record_of_an_earlier_attempt_is_not_this_attempts(tmp_path):
    """A run folder holds the worker's record and ``.done`` of attempt 1 while its run
    record says attempt 2 (the same token): attempt 2 has not started (the tool read the old
    record as this attempt's success before; the autobot scheduler did not)."""
    d = tmp_path / "run"
    rd.write_json_atomic(d / rd.RUN_JSON, {"token": "tok", "attempt": 2})
    rd.write_json_atomic(d / rd.STATUS, {"token": "tok", "attempt": 1, "state": "succeeded",
                                         "ended_at": 1.0, "exit_code": 0, "pid": 1})
    (d / rd.DONE).touch()
    got = tool.probe(d)
    assert got["state"] == "queued" and got["pending_reason"] == "not yet picked up", got
    rd.write_json_atomic(d / rd.STATUS, {"token": "tok", "attempt": 2, "state": "succeeded",
                                         "ended_at": 2.0, "exit_code": 0, "pid": 1})
    assert tool.probe(d)["state"] == "succeeded"
