"""The EC2 agent and plugin read runs by the one rule (chester.target.states): on the farm, a
worker that dies after its disk said it was full, and a success record without ``.done``;
through the plugin's pure reader, the ends the old reader did not know (``oom``, a success
the agent saw without ``.done``)."""

from __future__ import annotations

import pytest
from ec2farm import (  # type: ignore[import-not-found]
    importable,
    launch_fn,
    project_env,
    status_record,
)

FNS = r"""
def fn_full_then_killed(variant, log_dir, exp_name):
    # what a run on a full disk does: its write fails, and it dies before its worker can
    # record an end (SIGKILL here: the farm's disk cannot be filled for real)
    import os
    import signal
    import sys

    print("OSError: [Errno 28] No space left on device: '%s/ckpt.pt'" % log_dir,
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def fn_no_done(variant, log_dir, exp_name):
    # the worker's .done cannot be made: a link into a folder that is not there
    import os

    os.symlink("/nonexistent/chester-test/done", os.path.join(log_dir, ".done"))
"""


@pytest.fixture(autouse=True)
def _fns_importable(tmp_path, monkeypatch):
    yield from importable(tmp_path, monkeypatch, "ec2states")


def test_the_rule_reads_the_farms_runs(tmp_path, farm):
    env = project_env(tmp_path, "ec2states", FNS, max_requeues=0)
    full = launch_fn(env, "ec2states", "fn_full_then_killed", [{"i": 0}], "full")
    nodone = launch_fn(env, "ec2states", "fn_no_done", [{"i": 0}], "nodone")
    a = full.wait(timeout=90, poll_interval=0.3, progress=False)
    b = nodone.wait(timeout=90, poll_interval=0.3, progress=False)
    run = full.runs[0]
    # the agent's verdict on a worker gone without an end: the disk, not "killed by a signal"
    assert a[run.name].value == "failed", (run.reason, run.stderr_tail)
    assert run.reason.startswith("no space left on the file system of "), run.reason
    assert "No space left on device" in run.reason
    assert status_record(run)["state"] == "failed"
    run = nodone.runs[0]
    assert b[run.name].value == "failed", (run.reason, run.stderr_tail)
    # the worker says so itself (it writes .done before its success record)
    assert run.reason.startswith("the run returned, but its .done could not be written"), \
        run.reason
    assert status_record(run)["done"] is False


@pytest.mark.parametrize("istate,rec,cancel,expected,reason", [
    # an end the old reader did not know: the worker's "oom"
    ("terminated", {"state": "oom", "ended_at": 2.0, "reason": "out of memory: x"}, False,
     "oom", "out of memory: x"),
    # a success the agent saw without .done
    ("terminated", {"state": "succeeded", "ended_at": 2.0, "done": False}, False, "failed",
     "the worker recorded success but .done is missing"),
    # a cancel does not turn an end that names its own cause into cancelled
    ("terminated", {"state": "timeout", "ended_at": 2.0, "reason": "time limit"}, True,
     "timeout", "time limit"),
    ("terminated", {"state": "failed", "ended_at": 2.0, "reason": "ValueError"}, True,
     "cancelled", "cancelled"),
    # an agent of an earlier chester did not say whether .done was there: its success stands
    ("terminated", {"state": "succeeded", "ended_at": 2.0}, False, "succeeded", None),
])
def test_the_plugin_reads_an_end_by_the_rule(istate, rec, cancel, expected, reason):
    from chester_backend_ec2.plugin import to_status

    from chester.types import RunHandle

    h = RunHandle(run_id=1, token="t", backend="ec2", local_dir="/x", remote_dir="/y",
                  remote_id="i-1")
    got = to_status(h, {"InstanceId": "i-1", "State": {"Name": istate}}, rec, cancel)
    assert (got.state.value, got.reason) == (expected, reason)
