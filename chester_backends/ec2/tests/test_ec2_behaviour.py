"""Spot interruption, lost instances, retried submits, packing, cancel on a shared instance."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import boto3
import pytest
from ec2farm import (  # type: ignore[import-not-found]
    REGION,
    importable,
    launch_fn,
    project_env,
    s3_keys,
    status_record,
    until,
)

FNS = r"""
import json


def fn_progress(variant, log_dir, exp_name):
    # progress every 0.1 s
    import os
    import time

    end = time.time() + float(variant.get("seconds", 0))
    with open(os.path.join(log_dir, "progress.txt"), "a") as f:
        f.write("start\n")
        f.flush()
        while time.time() < end:
            f.write("tick\n")
            f.flush()
            time.sleep(0.1)
    with open(os.path.join(log_dir, "env.json"), "w") as f:
        json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)


"""


def _env(tmp_path, **over):
    return project_env(tmp_path, "ec2fns", FNS, **over)


@pytest.fixture(autouse=True)
def _fns_importable(tmp_path, monkeypatch):
    yield from importable(tmp_path, monkeypatch, "ec2fns")


def _launch(env, variants, prefix, **kw):
    return launch_fn(env, "ec2fns", "fn_progress", variants, prefix, **kw)


_until, _s3_keys = until, s3_keys


def _notice(sweep, run) -> bool:
    """The sweep has seen the spot interruption notice for the run."""
    sweep.status()
    return "interruption notice" in (sweep.store.run(run.id).pending_reason or "")


def test_spot_interruption_reads_preempted(tmp_path, farm):
    env = _env(tmp_path, max_requeues=0)
    sweep = _launch(env, [{"seconds": 60}], "spot")
    run = sweep.runs[0]
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    _until(lambda: any("/progress.txt.chester-seg/" in k for k in _s3_keys()), what="a sync")
    iid = run.handle.remote_id
    farm.interrupt(iid)  # the two-minute notice on IMDS
    _until(lambda: _notice(sweep, run), what="the notice")
    assert sweep.status()[run.name].value == "running"  # not over until the instance goes
    # AWS reclaims the instance: the agent stops the run and syncs on the way down
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[iid])
    _until(lambda: farm.instances[iid].done, what="instance gone")
    assert sweep.status()[run.name].value == "preempted"
    assert "spot interruption" in (run.reason or "")
    s3 = boto3.client("s3", region_name=REGION)
    from chester_backend_ec2 import segments

    key = next(k for k in _s3_keys() if f"{run.token}/progress.txt" in k).split(segments.SEG)[0]
    body = segments.read(s3, "chester-test", segments.list_file(s3, "chester-test", key)[
        "parts"]).decode()
    assert body.startswith("start\n") and body.count("tick") >= 1
    assert status_record(run)["preempted"] is True


def test_instance_gone_without_record_reads_lost(tmp_path, farm):
    farm.paused = True  # the instance never boots
    env = _env(tmp_path)
    sweep = _launch(env, [{"seconds": 0}], "lost")
    run = sweep.runs[0]
    assert sweep.status()[run.name].value == "queued"
    boto3.client("ec2", region_name=REGION).terminate_instances(
        InstanceIds=[run.handle.remote_id])
    assert sweep.status()[run.name].value == "lost"
    assert "no status record" in run.reason


def test_retried_submit_after_connection_error_starts_one_instance(tmp_path, farm,
                                                                   ec2_backend):
    """The response of run_instances is lost: the dispatcher retries, one instance exists."""
    from botocore.exceptions import ConnectionClosedError

    env = _env(tmp_path)
    bcfg = env.config.backend("ec2")
    ec2 = ec2_backend.client("ec2", bcfg.options)
    calls = []

    def lose_response(**kw):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionClosedError(endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    ec2.meta.events.register("after-call.ec2.RunInstances", lose_response)
    try:
        sweep = _launch(env, [{"seconds": 0}, {"seconds": 0}], "retry")
    finally:
        ec2.meta.events.unregister("after-call.ec2.RunInstances", lose_response)
    assert len(calls) == 2  # the first call's instance exists; only the other one is new
    insts = boto3.client("ec2", region_name=REGION).describe_instances(
        Filters=[{"Name": "tag-key", "Values": ["chester:group"]}])["Reservations"]
    assert sum(len(r["Instances"]) for r in insts) == 2
    groups = [h.get("group") for h in (r.handle for r in sweep.runs)]
    assert len(set(groups)) == 2
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert [s.value for s in states.values()] == ["succeeded", "succeeded"]


def test_packed_instance_one_gpu_each_and_cancel_one_run(tmp_path, farm):
    env = _env(tmp_path, runs_per_instance=2, instance_type="g5.12xlarge")
    sweep = _launch(env, [{"seconds": 2}, {"seconds": 600}], "packed")
    a, b = sweep.runs
    assert a.handle.remote_id == b.handle.remote_id
    _until(lambda: sweep.status()[b.name].value == "running", what="running")
    assert sweep.cancel([b.name]) == {b.name: True}
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[a.name].value == "succeeded" and states[b.name].value == "cancelled"
    assert b.reason.startswith("cancelled by chester cancel at "), b.reason
    assert json.loads((a.log_dir / "env.json").read_text()) == {"cuda": "0"}
    assert not (b.log_dir / "env.json").exists()
    assert (b.log_dir / "progress.txt").exists()
    assert len(farm.instances) == 1


def test_hostile_python_path_and_exp_prefix(tmp_path, farm):
    odd = tmp_path / "we'ird $(touch pwned) `x` dir;&&"
    odd.mkdir()
    (odd / "py thon").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (odd / "py thon").chmod(0o755)
    env = _env(tmp_path, python=str(odd / "py thon"), prefix="team a/it's")
    sweep = _launch(env, [{"seconds": 0}], "pre'fix $(x)")
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    run = sweep.runs[0]
    assert [s.value for s in states.values()] == ["succeeded"], (run.reason, run.stderr_tail)
    assert (run.log_dir / "progress.txt").read_text() == "start\n"
    assert not list(Path(tmp_path).rglob("pwned")) and not Path("pwned").exists()


def test_logs_from_s3(tmp_path, farm, ec2_backend):
    import io

    env = _env(tmp_path)
    sweep = _launch(env, [{"seconds": 0}], "logs")
    sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=False)
    out = io.StringIO()
    ec2_backend.chester_logs(sweep.backend, sweep.runs[0].handle, False, "stdout", out)
    assert out.getvalue() == ""  # fn_progress prints nothing
    out = io.StringIO()
    assert ec2_backend.chester_logs(sweep.backend, sweep.runs[0].handle, True, "stderr", out)


def test_failed_bootstrap_powers_off_and_reads_lost(tmp_path, farm):
    # requeues left, none used: the run never started, and a next instance would fail the
    # same way (and cost money)
    env = _env(tmp_path, python="/nonexistent/python3", max_requeues=2)
    sweep = _launch(env, [{"seconds": 0}], "badboot")
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=False)
    run = sweep.runs[0]
    assert states[run.name].value == "lost"
    assert "get-console-output" in run.reason
    inst = farm.instances[run.handle.remote_id]
    assert (inst.root / "powered-off").exists()
    assert "bootstrap failed" in (inst.root / "var/log/chester-agent.log").read_text()
    _until(lambda: inst.done, what="the instance gone")
    for _ in range(3):
        assert sweep.status()[run.name].value == "lost"
    assert len(farm.instances) == 1
    assert not _s3_keys(f"chester/sweeps/{run.handle.get('sweep')}/ctl/attempts/")


def test_agent_failure_is_recorded_and_powers_off(tmp_path, farm):
    farm.paused = True
    env = _env(tmp_path)
    sweep = _launch(env, [{"seconds": 0}], "badagent")
    s3 = boto3.client("s3", region_name=REGION)
    for k in _s3_keys("chester/code/manifests/"):
        s3.delete_object(Bucket="chester-test", Key=k)
    farm.paused = False
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    run = sweep.runs[0]
    assert states[run.name].value == "failed"
    assert "chester agent failed" in run.reason and "NoSuchKey" in run.stderr_tail
    assert (farm.instances[run.handle.remote_id].root / "powered-off").exists()


def test_stopped_spot_instance_resumes_the_run(tmp_path, farm):
    """interruption_behavior=stop: preempted while stopped, then run again when it resumes."""
    env = _env(tmp_path, interruption_behavior="stop")
    sweep = _launch(env, [{"seconds": 3}], "stop")
    run = sweep.runs[0]
    iid = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    farm.interrupt(iid)
    _until(lambda: _notice(sweep, run), what="the notice")
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.stop_instances(InstanceIds=[iid])
    _until(lambda: farm.instances[iid].done, what="instance stopped")
    assert sweep.status()[run.name].value == "requeued"
    ec2.start_instances(InstanceIds=[iid])
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    assert farm.instances[iid].boots == 2
    assert (run.log_dir / "progress.txt").read_text().count("start") == 2
    st = json.loads((run.log_dir / ".chester" / "status.json").read_text())
    assert st["attempt"] == 2 and st["state"] == "succeeded"


def test_preempted_run_is_requeued_on_a_new_instance(tmp_path, farm):
    env = _env(tmp_path, max_requeues=1)
    sweep = _launch(env, [{"seconds": 4}], "requeue")
    run = sweep.runs[0]
    first = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    _until(lambda: any("/progress.txt.chester-seg/" in k for k in _s3_keys()), what="a sync")
    farm.interrupt(first)
    _until(lambda: _notice(sweep, run), what="the notice")
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.terminate_instances(InstanceIds=[first])
    _until(lambda: farm.instances[first].done, what="instance gone")
    # requeued by this poll or an earlier one (the notice's polls may have seen the instance
    # gone); on a loaded machine instance 2 may already have resumed and finished the run
    going = ("requeued", "queued", "running", "succeeded")
    assert sweep.status()[run.name].value in going
    assert sweep.status()[run.name].value in going  # polled again: no 3rd instance (below)
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    assert len(farm.instances) == 2
    second = next(i for i in farm.instances if i != first)
    tags = {t["Key"]: t["Value"] for t in ec2.describe_instances(InstanceIds=[second])[
        "Reservations"][0]["Instances"][0]["Tags"]}
    assert tags["chester:attempt"] == "2" and tags["chester:group"] == run.handle.get("group")
    # the second instance started from what the first one had synced
    assert (run.log_dir / "progress.txt").read_text().count("start") == 2
    st = json.loads((run.log_dir / ".chester" / "status.json").read_text())
    assert st["attempt"] == 2


def test_failed_setup_fails_every_run_with_the_log(tmp_path, farm):
    env = _env(tmp_path)
    with open(env.project / "chester.yaml", "a") as f:
        f.write("prepare_commands: ['echo setting up', 'echo broken-dependency >&2; exit 7']\n")
    from chester.config import load_config

    env.config = load_config(env.project / "chester.yaml")
    sweep = _launch(env, [{"seconds": 0}, {"seconds": 0}], "badsetup")
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    for run in sweep.runs:
        assert states[run.name].value == "failed"
        assert "instance setup failed (exit 7)" in run.reason
        assert "broken-dependency" in run.reason
        assert "instance setup failed" in (run.log_dir / "stderr.log").read_text()


def test_instance_dying_mid_run_reads_lost(tmp_path, farm):
    # the lost reading itself; with requeues left the run starts again (test_ec2_bounds.py)
    env = _env(tmp_path, max_requeues=0)
    sweep = _launch(env, [{"seconds": 60}], "crash")
    run = sweep.runs[0]
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    farm.crash(run.handle.remote_id)
    states = sweep.wait(timeout=30, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "lost"
    assert "never ended" in run.reason
    assert len(farm.instances) == 1  # max_requeues 0: not started again


@pytest.mark.parametrize("istate,rec,cancel,expected", [
    ("pending", None, False, "queued"),
    ("running", {"state": "running"}, False, "running"),
    ("running", {"state": "succeeded"}, False, "succeeded"),
    ("terminated", {"state": "succeeded"}, False, "succeeded"),
    ("terminated", {"state": "failed", "reason": "ValueError: x"}, False, "failed"),
    ("running", {"state": "running", "preempted": True}, False, "running"),
    ("terminated", {"state": "terminated", "preempted": True}, False, "preempted"),
    ("terminated", {"state": "running"}, False, "lost"),
    # stopped by the instance's shutdown: lost with it if it is gone, failed if it is not
    ("terminated", {"state": "terminated", "ended_at": 2.0}, False, "lost"),
    ("running", {"state": "terminated", "ended_at": 2.0}, False, "failed"),
    # an earlier instance's record (launch 1) while the group's instance 2 is up
    ("running2", {"state": "running", "launch": 1}, False, "requeued"),
    ("running2", {"state": "lost", "ended_at": 2.0, "launch": 1, "by": "launcher",
                  "instance_lost": True}, False, "requeued"),
    ("running2", {"state": "lost", "ended_at": 2.0, "launch": 1, "by": "launcher"}, False,
     "lost"),
    ("running2", {"state": "running", "launch": 2}, False, "running"),
    ("terminated", None, False, "lost"),
    (None, None, False, "lost"),
    ("terminated", None, True, "cancelled"),
    ("running", {"state": "running"}, True, "running"),
    ("terminated", {"state": "running"}, True, "cancelled"),
    ("running", {"state": "cancelled"}, True, "cancelled"),
    ("stopped", {"state": "terminated", "preempted": True}, False, "preempted"),
])
def test_status_table(istate, rec, cancel, expected):
    from chester_backend_ec2.plugin import to_status

    from chester.types import RunHandle

    h = RunHandle(run_id=1, token="t", backend="ec2", local_dir="/x", remote_dir="/y",
                  remote_id="i-1")
    inst = None if istate is None else {"InstanceId": "i-1", "State": {"Name": istate}}
    if istate == "running2":  # the group's second instance
        inst = {"InstanceId": "i-2", "State": {"Name": "running"},
                "Tags": [{"Key": "chester:attempt", "Value": "2"}]}
    assert to_status(h, inst, rec, cancel).state.value == expected


def test_withdrawn_notice_clears_preempted(tmp_path, farm):
    """A hibernated instance that resumes: the notice goes away and the run reads running."""
    env = _env(tmp_path, max_requeues=0)
    sweep = _launch(env, [{"seconds": 4}], "hib")
    run = sweep.runs[0]
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    farm.interrupt(run.handle.remote_id)
    _until(lambda: _notice(sweep, run), what="the notice")
    farm.instances[run.handle.remote_id].imds.action = None
    _until(lambda: sweep.status()[run.name].value in ("running", "succeeded"), what="running")
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded"


@pytest.mark.parametrize("istate,age,rec,cancel,expected", [
    # started and gone with its instance: the next instance runs its next attempt
    ("terminated", 60, {"state": "running", "started_at": 1.0}, False, True),
    ("shutting-down", 60, {"state": "terminated", "started_at": 1.0, "ended_at": 2.0}, False,
     True),
    (None, 60, {"state": "running", "started_at": 1.0}, False, True),  # aged out
    # a stopped heartbeat: the launcher's verdict says whether the run had started
    ("terminated", 60, {"state": "lost", "ended_at": 2.0, "by": "launcher",
                        "instance_lost": True}, False, True),
    ("terminated", 60, {"state": "lost", "ended_at": 2.0, "by": "launcher"}, False, False),
    # never started: no record, or the agent's record before the worker's start
    ("terminated", 60, None, False, False),
    ("terminated", 60, {"state": "queued"}, False, False),
    # the record is of an earlier instance of the group: this one never started the run
    ("terminated", 60, {"state": "running", "started_at": 1.0, "launch": 2}, False, False),
    # cancelled; past its lifetime (its own bound ended it)
    ("terminated", 60, {"state": "running", "started_at": 1.0}, True, False),
    ("terminated", 60, {"state": "lost", "ended_at": 2.0, "by": "launcher",
                        "instance_lost": True}, True, False),
    ("terminated", 4000, {"state": "running", "started_at": 1.0}, False, False),
])
def test_which_lost_runs_went_with_their_instance(istate, age, rec, cancel, expected):
    import time

    from chester_backend_ec2.options import Ec2Options
    from chester_backend_ec2.plugin import lost_with_instance, to_status

    from chester.types import RunHandle

    o = Ec2Options(bucket="chester-test", max_lifetime_s=3600)
    h = RunHandle(run_id=1, token="t", backend="ec2", local_dir="/x", remote_dir="/y",
                  remote_id="i-1")
    now = time.time()
    inst = None if istate is None else {"InstanceId": "i-1", "State": {"Name": istate},
                                        "LaunchTime": now - age}
    st = to_status(h, inst, rec, cancel)
    assert st.state.value == ("cancelled" if cancel and rec.get("by") != "launcher" else "lost")
    assert lost_with_instance(o, inst, rec, st, now, cancel) is expected
