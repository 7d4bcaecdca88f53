"""What the scheduler does to runs, on a real SLURM: chunking by MaxArraySize, failures, the
time limit, a cancelled array, ``scontrol requeue``, dependent chains, serial steps, and status
without accounting. Kept lean: small arrays and short sleeps; the slow cases share one wait."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from chester_backend_slurm.plugin import SlurmBackend
from chester_testinfra import wait_until

from chester.launcher import launch
from chester.plugin.testing import dispatcher_with
from chester.testing import ConformanceEnv, fn_raise, fn_sleep_with_child, fn_write_result
from chester.types import State

WAIT = 150


def _shims(tmp_path: Path, log: Path) -> Path:
    """sbatch/sacct/squeue/scontrol/scancel wrappers that log each call, then run the real
    one."""
    d = tmp_path / "shims"
    d.mkdir()
    for exe in ("sbatch", "sacct", "squeue", "scontrol", "scancel"):
        real = subprocess.run(["bash", "-c", f"command -v {exe}"], capture_output=True,
                              text=True).stdout.strip()
        p = d / exe
        p.write_text(f'#!/bin/bash\necho "{exe} $*" >> {log}\nexec {real} "$@"\n')
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return d


def _calls(log: Path, exe: str) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split(" ", 1)[0] == exe)


def _row(sweep, run):
    return sweep.store.run(run.id)


def _wait_state(sweep, run, states, timeout=WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = sweep.status()[run.name]
        if st in states:
            return st
        time.sleep(0.3)
    raise AssertionError(f"{run.name} never reached {states}: {sweep.status()}")


def test_sweep_larger_than_max_array_size(tmp_path, slurm_local, make_config, monkeypatch):
    """ceil(N / MaxArraySize) sbatch calls; one scheduler query per status poll."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{_shims(tmp_path, log)}:{os.environ['PATH']}")
    size = slurm_local.max_array_size
    extra = {}
    if size > 50:  # a cluster with the default MaxArraySize: chunk by the option instead
        size, extra = 5, {"max_array_size": 5}
    n = size + 2
    # nothing known of the cluster yet (a new backend instance): arrays are cut for SLURM's
    # default MaxArraySize, the submit script finds the cluster's own, and the sweep is cut
    # again before any sbatch
    env = ConformanceEnv.create(tmp_path, backend="slurm",
                                config=make_config(poll_interval=0.0, **extra))
    sweep = launch(fn_write_result, [{"i": i} for i in range(n)], backend="slurm",
                   exp_prefix="chunks", config=env.config,
                   dispatcher=dispatcher_with(SlurmBackend()))
    # one sbatch per chunk, and the supervisor's (supervise: auto), sent first and withdrawn
    # at the end of the submit since nothing was held back: it never ran
    assert _calls(log, "sbatch") == math.ceil(n / size) + 1
    assert _calls(log, "scancel") == 1
    assert _calls(log, "scontrol") == 1  # MaxArraySize, read once (by the submit script)
    ids = [_row(sweep, r).remote_id for r in sweep.runs]
    assert len(set(i.split("_")[0] for i in ids)) == math.ceil(n / size)
    assert all("_" in i for i in ids)
    before = (_calls(log, "sacct"), _calls(log, "squeue"))
    sweep.status()
    assert (_calls(log, "sacct"), _calls(log, "squeue")) == (before[0] + 1, before[1])
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}
    for r in sweep.runs:
        assert json.loads((r.log_dir / "result.json").read_text())["exp_name"] == r.name


@pytest.mark.slow  # a one-minute time limit runs out
def test_what_the_scheduler_does(tmp_path, slurm_local, login_host, make_config):
    """Through the login host: time limit, failure, cancelled array, requeue, dependent
    chains (one that fails), serial steps in one allocation, pending reasons."""
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        host=login_host, remote_dir=str(tmp_path / "remote")))
    cfg = env.config
    timed = launch(fn_sleep_with_child, [{"seconds": 600}], backend="slurm",
                   exp_prefix="timeout", config=cfg, resources={"time": 1})
    failing = launch(fn_raise, [{"tag": "boom-7"}], backend="slurm", exp_prefix="fail",
                     config=cfg)
    chain = launch(fn_write_result, [{"step": i} for i in range(3)], backend="slurm",
                   exp_prefix="chain", config=cfg, order="dependent")
    broken = launch(fn_raise, [{"tag": "first"}, {"tag": "second"}], backend="slurm",
                    exp_prefix="broken-chain", config=cfg, order="dependent")
    serial = launch(fn_write_result, [{"step": i} for i in range(3)], backend="slurm",
                    exp_prefix="serial", config=cfg, resources={"serial_group": "g"})
    requeued = launch(fn_sleep_with_child, [{"seconds": 20}], backend="slurm",
                      exp_prefix="requeue", config=cfg)
    cancelled = launch(fn_sleep_with_child, [{"seconds": 600}] * 3, backend="slurm",
                       exp_prefix="cancel", config=cfg)

    # a dependent run waits for its predecessor and says why
    later = _row(chain, chain.runs[2])
    chain.status()
    later = _row(chain, chain.runs[2])
    assert later.state in (State.QUEUED, State.SUCCEEDED), later
    if later.state == State.QUEUED:
        assert later.pending_reason in ("Dependency", "submitted", "None", None), later

    # requeue a running task: same run, same id, attempt 2
    run = requeued.runs[0]
    _wait_state(requeued, run, {State.RUNNING})
    # the worker has started and recorded attempt 1 (in the run folder on the cluster)
    wait_until(lambda: any(json.loads(p.read_text()).get("attempt") == 1
                           for p in (tmp_path / "remote").rglob(
                               f"{run.name}/.chester/status.json")), 30,
               "the worker to record attempt 1")
    rid = _row(requeued, run).remote_id
    subprocess.run(["scontrol", "requeue", rid], check=True, env=slurm_local.environ())
    requeued_at = time.monotonic()
    # SLURM holds a requeued job for ~2 minutes (BeginTime); chester must say "requeued"
    st = _wait_state(requeued, run, {State.REQUEUED}, timeout=30)
    assert st == State.REQUEUED and _row(requeued, run).attempt == 2
    # SLURM holds a requeued job back (BeginTime) for a reason: slurmd refuses a job whose
    # credential is not newer, to the second, than the requeue's revocation ("Killing
    # non-startable batch job: Job credential revoked", and the job ends FAILED). Start it
    # again early, but only once it is PENDING and a few seconds have passed.
    end = time.monotonic() + 30
    while subprocess.run(["sacct", "-X", "-n", "-P", "-j", rid, "-o", "State"],
                         capture_output=True, text=True,
                         env=slurm_local.environ()).stdout.strip() != "PENDING" \
            and time.monotonic() < end:
        time.sleep(0.2)
    time.sleep(max(0.0, requeued_at + 3.0 - time.monotonic()))
    subprocess.run(["scontrol", "update", f"JobId={rid}", "StartTime=now"], check=True,
                   env=slurm_local.environ())

    # cancel a whole array once its tasks run
    for r in cancelled.runs:
        _wait_state(cancelled, r, {State.RUNNING})
    assert cancelled.cancel() == {r.name: True for r in cancelled.runs}

    done = {name: s.wait(timeout=WAIT, poll_interval=0.5, progress=False)
            for name, s in (("failing", failing), ("chain", chain), ("broken", broken),
                            ("serial", serial), ("requeued", requeued),
                            ("cancelled", cancelled), ("timed", timed))}

    f = failing.runs[0]
    assert done["failing"][f.name] == State.FAILED
    assert "ValueError" in f.reason and "boom-7" in f.reason
    assert "deliberate failure boom-7" in (f.stderr_tail or "")

    assert set(done["chain"].values()) == {State.SUCCEEDED}
    starts = [json.loads((r.log_dir / "result.json").read_text()) and
              json.loads((r.log_dir / ".chester" / "status.json").read_text())["started_at"]
              for r in chain.runs]
    assert starts == sorted(starts)

    b1, b2 = broken.runs
    assert done["broken"][b1.name] == State.FAILED
    assert done["broken"][b2.name] == State.CANCELLED
    assert "did not succeed" in (b2.reason or ""), b2.reason

    assert set(done["serial"].values()) == {State.SUCCEEDED}
    jobs = {_row(serial, r).remote_id for r in serial.runs}
    assert len(jobs) == 1, jobs  # one allocation
    ends = [json.loads((r.log_dir / ".chester" / "status.json").read_text()) for r in serial.runs]
    assert all(a["ended_at"] <= b["started_at"] for a, b in zip(ends, ends[1:], strict=False))

    rq = _row(requeued, run)
    assert done["requeued"][run.name] == State.SUCCEEDED, (rq, run.stderr_tail)
    assert rq.remote_id == rid and rq.token == run.token
    assert rq.attempt == 2, rq
    assert json.loads((run.log_dir / ".chester" / "status.json").read_text())["attempt"] == 2

    assert set(done["cancelled"].values()) == {State.CANCELLED}
    t = timed.runs[0]
    assert done["timed"][t.name] == State.TIMEOUT, (t.reason, t.stderr_tail)
    assert "time limit" in (t.reason or "")
    assert not (t.log_dir / ".done").exists()


def test_status_without_accounting(tmp_path, slurm_local, make_config, monkeypatch):
    """With accounting off, squeue (one call per poll) gives the same answers."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{_shims(tmp_path, log)}:{os.environ['PATH']}")
    cluster = slurm_local.without_accounting()
    try:
        env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
            poll_interval=0.0, scheduler_env=cluster.env))
        ok = launch(fn_write_result, [{"i": i} for i in range(2)], backend="slurm",
                    exp_prefix="noacct", config=env.config)
        bad = launch(fn_raise, [{"tag": "na"}], backend="slurm", exp_prefix="noacct-fail",
                     config=env.config)
        q0 = _calls(log, "squeue")
        ok.status()
        assert _calls(log, "squeue") == q0 + 1
        assert set(ok.wait(timeout=WAIT, poll_interval=0.3, progress=False).values()) == \
            {State.SUCCEEDED}
        assert bad.wait(timeout=WAIT, poll_interval=0.3,
                        progress=False)[bad.runs[0].name] == State.FAILED
        assert "ValueError" in bad.runs[0].reason
    finally:
        slurm_local.restore()


def fn_chatty(variant, log_dir, exp_name):
    import sys as _sys

    for i in range(3):
        print(f"line {i}", flush=True)
        time.sleep(1)
    print("to stderr", file=_sys.stderr, flush=True)


def test_logs_follow_until_the_run_ends(tmp_path, slurm_local, login_host, make_config):
    import io

    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__))
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        host=login_host, remote_dir=str(tmp_path / "remote")))
    sweep = launch(fn_chatty, [{}], backend="slurm", exp_prefix="logs", config=env.config)
    run = sweep.runs[0]
    out = io.StringIO()
    sweep.logs(run.name, follow=True, out=out)
    assert out.getvalue().splitlines() == ["line 0", "line 1", "line 2"]
    err = io.StringIO()
    sweep.logs(run.name, stream="stderr", out=err)
    assert "to stderr" in err.getvalue()
    assert sweep.status()[run.name] == State.SUCCEEDED


def test_singularity_wraps_only_the_python_command(tmp_path, slurm_local, make_config):
    """Apptainer/Singularity cannot be installed here: a stand-in with the same command line
    (``chester.testing.container_stand_in``) records its call and runs CMD on the host. The
    seed's keys map onto the remote layer's container; the login-host check before the
    first sbatch runs the Python through it with the jobs' binds; the worker runs from
    chester's runtime, its records land in the (bound) run folder and the run succeeds."""
    from chester.remote import runtime
    from chester.testing import container_calls, container_stand_in

    shim, calls = container_stand_in(tmp_path / "bin", "singularity")
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        use_singularity=True, simg_path="/images/train.sif", singularity_command=str(shim),
        remote_mount_option=["/usr/share/glvnd"]))
    sweep = launch(fn_write_result, [{"i": 1}, {"i": 2}], backend="slurm",
                   exp_prefix="ctr", config=env.config)
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}
    every = container_calls(calls)
    # the login-host check ran first, through the container as the jobs do (twice when the
    # runtime was sent between: the check found it missing, then found it)
    probes = [a for a in every if "-c" in a]
    got = [a for a in every if "worker" in a]
    assert len(got) == 2 and every[:len(probes)] == probes and 1 <= len(probes) <= 2
    rt = runtime.build().name
    for probe in probes:
        i = probe.index("/images/train.sif")
        assert probe[i + 1:i + 3] == ["python3", "-c"]
        assert probe[:i] == got[0][:got[0].index("/images/train.sif")]  # same binds
    for argv in got:
        i = argv.index("/images/train.sif")
        assert argv[0] == "exec" and "--nv" not in argv
        assert argv[argv.index("-B") + 1] == "/usr/share/glvnd"
        assert argv[i + 2].endswith(rt) and argv[i + 3] == "worker"
    for r in sweep.runs:
        assert json.loads((r.log_dir / ".chester" / "status.json").read_text())["state"] == \
            "succeeded"


def fn_hog_memory(variant, log_dir, exp_name):
    import time as _time

    block = bytearray(variant["mb"] * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just mapped
    _time.sleep(variant["hold"])
    with open(os.path.join(log_dir, "result.json"), "w") as f:
        json.dump({"mb": variant["mb"]}, f)


def test_over_its_memory_reads_oom(tmp_path, slurm_local, make_config):
    """A run over its ``mem`` is killed by SLURM and reads ``oom``; one under it succeeds."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__))  # fn_hog_memory goes by value
    if slurm_local.factory is None:
        pytest.skip("needs chester_testinfra's SlurmFactory for a memory-enforcing cluster")
    c = slurm_local.factory.get(max_array_size=slurm_local.max_array_size, accounting=True,
                                enforce_memory=True)
    env = ConformanceEnv.create(tmp_path, backend="slurm",
                                config=make_config(scheduler_env=c.env))
    s = launch(fn_hog_memory, [{"mb": 600, "hold": 20}, {"mb": 1, "hold": 0}],
               backend="slurm", exp_prefix="oom", config=env.config, resources={"mem": "200M"})
    done = s.wait(timeout=WAIT, poll_interval=0.5, progress=False)
    hog, small = s.runs
    assert done[hog.name] == State.OOM, (hog.reason, hog.stderr_tail)
    assert "memory" in (hog.reason or "")
    assert not (hog.log_dir / ".done").exists()
    assert done[small.name] == State.SUCCEEDED, (small.reason, small.stderr_tail)
