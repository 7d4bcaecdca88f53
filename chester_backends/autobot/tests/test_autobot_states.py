"""The autobot scheduler reads runs by the one rule (chester.target.states), which it imports
from chester's runtime beside it: on the test lab, a worker that dies after its disk said it
was full, and a success record without ``.done``; a record of an earlier attempt through the
scheduler's own reader; and the scheduler run with a Python that has no chester."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cloudpickle
from chester_backend_autobot import scheduler as S
from chester_testinfra.gpulab import make_project

from chester.dispatch import Dispatcher
from chester.launcher import launch

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fast() -> Dispatcher:
    return Dispatcher(sleep=lambda s: time.sleep(min(s, 0.5)))


def fn_full_then_killed(variant, log_dir, exp_name):
    """What a run on a full disk does: its write fails, and it dies before its worker can
    record an end (SIGKILL here: the disk of the lab's nodes cannot be filled for real)."""
    import os as _o
    import signal as _sig
    import sys as _sys

    print(f"OSError: [Errno 28] No space left on device: '{log_dir}/ckpt.pt'", file=_sys.stderr,
          flush=True)
    _o.kill(_o.getpid(), _sig.SIGKILL)


def fn_no_done(variant, log_dir, exp_name):
    """The worker's ``.done`` cannot be made: a link into a folder that is not there."""
    import os as _o

    _o.symlink("/nonexistent/chester-test/done", _o.path.join(log_dir, ".done"))


def test_the_rule_reads_the_labs_runs(tmp_path, gpu_lab):
    lab = gpu_lab
    project, cfg, remote = make_project(tmp_path, lab)
    full = launch(fn_full_then_killed, [{"i": 0}], backend="lab", exp_prefix="full",
                  config=cfg, dispatcher=fast())
    nodone = launch(fn_no_done, [{"i": 0}], backend="lab", exp_prefix="nodone", config=cfg,
                    dispatcher=fast())
    a = full.wait(timeout=90, poll_interval=0.3, progress=False)
    b = nodone.wait(timeout=90, poll_interval=0.3, progress=False)
    run = full.runs[0]
    # the loop's verdict on a worker gone without an end: the disk, not "killed?"
    assert a[run.name].value == "failed", (run.reason, run.stderr_tail)
    assert run.reason.startswith("no space left on the file system of "), run.reason
    assert "No space left on device" in run.reason
    run = nodone.runs[0]
    assert b[run.name].value == "failed", (run.reason, run.stderr_tail)
    # the worker says so itself (it writes .done before its success record)
    assert run.reason.startswith("the run returned, but its .done could not be written"), \
        run.reason


def test_a_record_of_an_earlier_attempt_or_done_alone_is_no_success(tmp_path):
    """The scheduler's reader over a run folder: ``.done`` beside a record that has not
    ended is no end (the run keeps its GPUs), and a success record of attempt 1 is not
    attempt 2's."""
    d = tmp_path / "run"
    (d / ".chester").mkdir(parents=True)
    (d / ".chester" / "run.json").write_text(json.dumps({"token": "t", "attempt": 1}))
    (d / ".chester" / "status.json").write_text(json.dumps(
        {"token": "t", "attempt": 1, "state": "running", "ended_at": None, "pid": 1}))
    (d / ".done").touch()
    cfg = dict(S.DEFAULTS)
    got = S.probe(str(d), {}, [], {}, cfg, time.time())
    assert got["state"] == "running", got
    assert not S.run_finished(str(d), "t")
    (d / ".chester" / "status.json").write_text(json.dumps(
        {"token": "t", "attempt": 1, "state": "succeeded", "ended_at": 2.0, "exit_code": 0}))
    assert S.probe(str(d), {}, [], {}, cfg, time.time())["state"] == "succeeded"
    (d / ".chester" / "run.json").write_text(json.dumps({"token": "t", "attempt": 2}))
    got = S.probe(str(d), {}, [], {}, cfg, time.time())
    assert got["state"] == "lost" and "never started" in got["reason"], got


def test_the_scheduler_imports_the_rule_from_the_runtime(tmp_path):
    """On the login host the scheduler imports chester from the runtime zip it is given,
    with a Python that has no chester (``-S``: no site-packages)."""
    from chester.remote import runtime

    rt = runtime.build()
    d = tmp_path / "run"
    (d / ".chester").mkdir(parents=True)
    (d / ".chester" / "run.json").write_text(json.dumps({"token": "t", "attempt": 1}))
    (d / ".chester" / "status.json").write_text(json.dumps(
        {"token": "t", "attempt": 1, "state": "succeeded", "ended_at": 2.0, "exit_code": 0}))
    probe = ("import sys, runpy; sys.argv = sys.argv[1:]; "
             "runpy.run_path(sys.argv[0], run_name='__main__')")
    code = ("import atexit, sys; atexit.register(lambda: print('from', "
            "sys.modules['chester.target.states'].__file__, file=sys.stderr)); " + probe)
    r = subprocess.run([sys.executable, "-S", "-c", code, S.__file__, "--runtime", str(rt.path),
                        "status", str(tmp_path / "root")], input=f"{d}\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)[str(d)]
    assert got["state"] == "failed" and ".done is missing" in got["reason"], got
    assert f"from {rt.path}{'/'}chester/target/states.py" in r.stderr, r.stderr
    bare = subprocess.run([sys.executable, "-S", S.__file__, "status", str(tmp_path / "root")],
                          input=f"{d}\n", capture_output=True, text=True, timeout=60)
    assert bare.returncode != 0 and "chester" in bare.stderr  # no runtime, no chester
