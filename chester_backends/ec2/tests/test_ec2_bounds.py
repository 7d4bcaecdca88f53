"""Paths that cost money or results: lifetime bounds, dead agents, runs lost with their
instances started again, refused submits, requeue from the durable record, the spot notice
reaching the run, capacity fallback, spot requests."""

from __future__ import annotations

import io
import json
import re
import time
from contextlib import redirect_stdout

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

from chester.errors import BackendError, UserError

FNS = r"""
import json
import os
import signal
import time


def fn_bounded(variant, log_dir, exp_name):
    import sys

    import chester

    attempt = os.environ.get("CHESTER_ATTEMPT")
    with open(os.path.join(log_dir, "progress.txt"), "a") as f:
        f.write("start %s\n" % attempt)
    if variant.get("lose"):  # a checkpoint every step; attempt 1 goes on until it is lost
        ck = os.path.join(log_dir, "checkpoint.json")
        if chester.attempt() == 1:
            step = 0
            while True:
                step += 1
                with open(ck + ".tmp", "w") as f:
                    json.dump({"step": step}, f)
                os.replace(ck + ".tmp", ck)
                time.sleep(0.1)
        with open(ck) as f:
            state = json.load(f)
        with open(os.path.join(log_dir, "resumed.json"), "w") as f:
            json.dump({"attempt": chester.attempt(), "resumed": os.environ.get("CHESTER_RESUMED"),
                       "from_step": state["step"]}, f)
        return
    if variant.get("preempt"):
        ck = os.path.join(log_dir, "checkpoint.json")
        if chester.attempt() == 1:
            step = 0
            while not chester.preempted():  # training steps until the notice
                step += 1
                time.sleep(0.05)
            # the notice file can be read before the agent's SIGUSR1 lands: give it a moment
            deadline = time.time() + 10
            while not sys.modules["chester.worker"]._PREEMPTED and time.time() < deadline:
                time.sleep(0.05)
            with open(ck + ".tmp", "w") as f:
                json.dump({"step": step, "signalled": sys.modules["chester.worker"]._PREEMPTED,
                           "notice": open(os.environ["CHESTER_PREEMPT_FILE"]).read()}, f)
            os.replace(ck + ".tmp", ck)
            chester.requeue()
        with open(ck) as f:
            state = json.load(f)
        with open(os.path.join(log_dir, "resumed.json"), "w") as f:
            json.dump({"attempt": chester.attempt(), "resumed": os.environ.get("CHESTER_RESUMED"),
                       "from_step": state["step"], "preempted": chester.preempted()}, f)
        return
    if variant.get("biglog"):
        with open(os.path.join(log_dir, "big.log"), "w") as f:
            f.write(("x" * 1023 + "\n") * (5 * 1024 + 512))  # 5.5 MiB
    end = time.time() + float(variant.get("seconds", 0))
    while time.time() < end:
        if variant.get("biglog"):
            for name in ("big.log", "train.log"):
                with open(os.path.join(log_dir, name), "a") as f:
                    f.write("step %f\n" % time.time())
            print("stdout step %f" % time.time(), flush=True)
        time.sleep(0.05)
"""


def _env(tmp_path, **over):
    return project_env(tmp_path, "ec2bounds", FNS, **over)


@pytest.fixture(autouse=True)
def _fns_importable(tmp_path, monkeypatch):
    yield from importable(tmp_path, monkeypatch, "ec2bounds")


def _launch(env, variants, prefix, **kw):
    return launch_fn(env, "ec2bounds", "fn_bounded", variants, prefix, **kw)


_until, _s3_keys = until, s3_keys


def _ec2():
    return boto3.client("ec2", region_name=REGION)


def _instances(state=None, sweep=None):
    """chester's instances (of one sweep: the farm is shared by the whole session)."""
    filt = {"Name": "tag:chester:sweep", "Values": [sweep]} if sweep else \
        {"Name": "tag-key", "Values": ["chester:sweep"]}
    out = []
    for r in _ec2().describe_instances(Filters=[filt])["Reservations"]:
        out += [i for i in r["Instances"] if state is None or i["State"]["Name"] in state]
    return out


def _istate(iid):
    return _ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0][
        "State"]["Name"]


def _forget(iid):
    """The instance ages out of DescribeInstances (as terminated ones do after about an hour)."""
    tags = [{"Key": k} for k in ("chester:sweep", "chester:group", "chester:attempt")]
    _ec2().delete_tags(Resources=[iid], Tags=tags)


class _Refuse:
    """AWS refusing RunInstances calls (the error comes from the API; nothing else is faked)."""

    def __init__(self, client, code, when):
        import threading

        self.client, self.code, self.when, self.calls = client, code, when, []
        self.local = threading.local()
        self.lock = threading.Lock()

    def params(self, params, **kw):  # the API arguments, seen before the request is built
        self.local.params = dict(params)

    def __call__(self, **kw):
        params = self.local.params
        with self.lock:
            self.calls.append(params.get("InstanceType"))
            n = len(self.calls)
        if self.when(n, params):
            from botocore.awsrequest import AWSResponse

            http = AWSResponse("https://ec2", 400, {}, None)
            return http, {"Error": {"Code": self.code, "Message": f"refused: {self.code}"},
                          "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    def __enter__(self):
        self.client.meta.events.register("before-parameter-build.ec2.RunInstances", self.params)
        self.client.meta.events.register("before-call.ec2.RunInstances", self)
        return self

    def __exit__(self, *exc):
        self.client.meta.events.unregister("before-parameter-build.ec2.RunInstances",
                                           self.params)
        self.client.meta.events.unregister("before-call.ec2.RunInstances", self)


# -- (1) lifetime bounds ---------------------------------------------------------------------------
def test_run_time_limit_reads_timeout_and_powers_off(tmp_path, farm):
    env = _env(tmp_path)
    sweep = _launch(env, [{"seconds": 60}], "tlimit", resources={"time_limit_s": 1.5})
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    run = sweep.runs[0]
    assert states[run.name].value == "timeout", (run.reason, run.stderr_tail)
    assert "time_limit_s=1.5" in run.reason
    assert (farm.instances[run.handle.remote_id].root / "powered-off").exists()
    assert (run.log_dir / "progress.txt").read_text() == "start 1\n"  # synced on the way


def test_max_lifetime_stops_the_runs_and_powers_off(tmp_path, farm):
    # room for a slow bootstrap on a busy machine: an instance whose agent has not started
    # its run by the end of its lifetime is gone without a word from it, and reads lost
    env = _env(tmp_path, max_lifetime_s=25)
    sweep = _launch(env, [{"seconds": 120}], "lifetime")
    states = sweep.wait(timeout=90, poll_interval=0.3, progress=False, pull=True)
    run = sweep.runs[0]
    assert states[run.name].value == "timeout", (run.reason, run.stderr_tail)
    assert "max_lifetime_s=25" in run.reason
    _until(lambda: _istate(run.handle.remote_id) == "terminated", what="terminated")
    # its own bound stopped it: never started again, whatever max_requeues (2) says
    assert sweep.status()[run.name].value == "timeout"
    assert len(_instances(sweep=run.handle.get("sweep"))) == 1


def test_killed_agent_instance_ends_at_its_lifetime_without_the_launcher(tmp_path, farm):
    """The backstop user-data scheduled: no status poll, no agent, the instance still goes."""
    env = _env(tmp_path, max_lifetime_s=20)
    sweep = _launch(env, [{"seconds": 120}], "backstop")
    run = sweep.runs[0]
    iid = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    farm.kill_agent(iid)
    time.sleep(1)
    assert _istate(iid) == "running"  # the worker and the machine go on without the agent
    _until(lambda: _istate(iid) == "terminated", timeout=30, what="terminated by the bound")
    assert "max_lifetime_s reached" in (farm.instances[iid].root /
                                         "var/log/chester-agent.log").read_text()
    assert sweep.status()[run.name].value == "lost"
    assert "never ended" in run.reason
    # its own lifetime bound ended it: not started again, whatever max_requeues (2) says
    assert sweep.status()[run.name].value == "lost"
    assert len(_instances(sweep=run.handle.get("sweep"))) == 1
    assert not _s3_keys(f"chester/sweeps/{run.handle.get('sweep')}/ctl/attempts/")


def test_killed_agent_is_terminated_on_a_stale_heartbeat(tmp_path, farm):
    # the lost reading itself: with requeues, test_a_dead_agents_run_is_requeued_...
    env = _env(tmp_path, heartbeat_timeout_s=2, max_requeues=0)
    sweep = _launch(env, [{"seconds": 120}], "stale")
    run = sweep.runs[0]
    iid = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    farm.kill_agent(iid)
    _until(lambda: sweep.status()[run.name].value == "lost", timeout=30, what="lost")
    assert "stopped its heartbeat" in run.reason
    _until(lambda: _istate(iid) == "terminated", what="terminated")
    _until(lambda: farm.instances[iid].done, what="its processes gone")
    # the verdict is durable: another launcher (a backend instance of its own) reads the same
    from chester_backend_ec2.plugin import Ec2Backend

    assert Ec2Backend().chester_status(sweep.backend, [run.handle])[run.token].state.value \
        == "lost"


def test_a_lost_runs_pull_is_tried_and_said_once(tmp_path, farm):
    """A lost run never recorded its end: waiting pulls what it synced once and says so once,
    while the other run goes on."""
    from structlog.testing import capture_logs

    env = _env(tmp_path, heartbeat_timeout_s=2, max_requeues=0)
    sweep = _launch(env, [{"seconds": 120}, {"seconds": 15, "i": 1}], "lostpull")
    lost, other = sweep.runs
    _until(lambda: all(s.value == "running" for s in sweep.status().values()), timeout=60,
           what="both running")
    _until(lambda: any(k.endswith(f"{lost.token}/progress.txt.chester-seg/0001/"
                                  f"{0:016d}") for k in _s3_keys()), what="a sync")
    farm.kill_agent(lost.handle.remote_id)
    with capture_logs() as logs:
        states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert (states[lost.name].value, states[other.name].value) == ("lost", "succeeded")
    said = [e for e in logs if e["event"] in ("pull_incomplete", "not_pulled")]
    assert [(e["event"], e["first"]) for e in said] == [("pull_incomplete", lost.name)]
    assert not lost.pulled and other.pulled
    assert (lost.log_dir / "progress.txt").read_text() == "start 1\n"  # what it synced


def test_instance_without_agent_reads_lost_after_boot_timeout(tmp_path, farm):
    farm.paused = True  # user-data never gets anywhere
    # room for the launch and a status on a busy machine; requeues left, none used: the run
    # never started, and a next instance would fail the same way
    env = _env(tmp_path, boot_timeout_s=6, max_requeues=2)
    sweep = _launch(env, [{"seconds": 0}], "noboot")
    run = sweep.runs[0]
    assert sweep.status()[run.name].value == "queued"
    _until(lambda: sweep.status()[run.name].value == "lost", timeout=30,
           what="lost once boot_timeout_s has passed")
    assert "gave no sign of its agent" in run.reason and "get-console-output" in run.reason
    assert _istate(run.handle.remote_id) in ("shutting-down", "terminated")
    _until(lambda: _istate(run.handle.remote_id) == "terminated", what="terminated")
    for _ in range(3):
        assert sweep.status()[run.name].value == "lost"
    key = run.handle.get("sweep")
    assert len(_instances(sweep=key)) == 1
    assert not _s3_keys(f"chester/sweeps/{key}/ctl/attempts/")
    assert "gave no sign of its agent" in run.reason


# -- (1b) a run lost with its instance is started again, as a preempted one --------------------
def _checkpointed(run):
    """The run's checkpoint reached S3 (a later attempt resumes from it), and so did its
    progress line: one sync sends the files one after the other, so an agent killed as soon
    as the checkpoint is up could leave ``progress.txt`` behind."""
    keys = _s3_keys()
    return any(k.endswith(f"{run.token}/checkpoint.json") for k in keys) and \
        any(f"{run.token}/progress.txt" in k for k in keys)


def _requeued_once(sweep, run, first):
    """The run succeeded as attempt 2 on one more instance of its group, from the
    checkpoint attempt 1 synced; returns the second instance."""
    key, group = run.handle.get("sweep"), run.handle.get("group")
    insts = _instances(sweep=key)
    assert len(insts) == 2, [i["InstanceId"] for i in insts]
    (second,) = [i for i in insts if i["InstanceId"] != first]
    tags = {t["Key"]: t["Value"] for t in second["Tags"]}
    assert (tags["chester:group"], tags["chester:attempt"]) == (group, "2")
    assert status_record(run)["instance"] == second["InstanceId"]
    # started once, through the exactly-once step; each attempt claimed once
    tries = _s3_keys(f"chester/sweeps/{key}/ctl/attempts/")
    assert sorted(k.split("/attempts/")[1] for k in tries) == [f"{group}/2/1.end.json",
                                                               f"{group}/2/1.json"]
    claims = _s3_keys(f"chester/sweeps/{key}/ctl/claims/{run.token}/")
    assert sorted(k.rsplit("/", 1)[1] for k in claims) == ["1", "2"]
    assert (run.log_dir / "progress.txt").read_text() == "start 1\nstart 2\n"
    resumed = json.loads((run.log_dir / "resumed.json").read_text())
    assert resumed["attempt"] == 2 and resumed["resumed"] == "1" and resumed["from_step"] > 0
    st = json.loads((run.log_dir / ".chester" / "status.json").read_text())
    assert (st["state"], st["attempt"]) == ("succeeded", 2)
    return second["InstanceId"]


def _requeued_reason(sweep, run, first):
    """Poll until the run reads requeued onto a new instance; its pending reason."""
    def seen():
        state = sweep.status()[run.name].value
        reason = sweep.store.run(run.id).pending_reason or ""
        return reason if state == "requeued" and "started again on" in reason else None

    return _until(seen, timeout=60, what="requeued onto a new instance")


@pytest.mark.parametrize("how,max_requeues", [("terminate", 1), ("crash", 1), ("terminate", 0)])
def test_an_instance_gone_under_its_run_is_requeued_once_and_resumes(tmp_path, farm, how,
                                                                     max_requeues):
    """An instance terminated under its running run by someone else than chester (a user,
    AWS: the agent's shutdown records the run stopped by a signal), or one that dies at once
    (its record still says running): the group's next instance runs attempt 2, which
    resumes from the checkpoint; with max_requeues 0 the run reads lost."""
    env = _env(tmp_path, max_requeues=max_requeues)
    sweep = _launch(env, [{"lose": True}], f"gone-{how}-{max_requeues}")
    run = sweep.runs[0]
    first = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    _until(lambda: _checkpointed(run), what="a checkpoint synced")
    if how == "crash":
        farm.crash(first)
    else:
        _ec2().terminate_instances(InstanceIds=[first])
        _until(lambda: farm.instances[first].done, what="the instance gone")
    if max_requeues == 0:
        states = sweep.wait(timeout=30, poll_interval=0.3, progress=False, pull=True)
        assert states[run.name].value == "lost", (run.reason, run.stderr_tail)
        assert f"instance {first} is terminated" in run.reason
        assert len(_instances(sweep=run.handle.get("sweep"))) == 1
        return
    reason = _requeued_reason(sweep, run, first)
    assert re.fullmatch(rf"lost with instance {first}; started again on i-\w+ \(instance 2\)",
                        reason), reason
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    second = _requeued_once(sweep, run, first)
    assert second in reason
    # the same poll that found it lost started it again: it never read lost
    hist = [s for _, s, _ in sweep.store.history(run.id)]
    assert "requeued" in hist and "lost" not in hist and hist[-1] == "succeeded", hist


def test_a_dead_agents_run_is_requeued_and_resumes_on_the_next_instance(tmp_path, farm):
    """The agent dies (its heartbeat stops) while the run goes on: a status poll terminates
    the instance and records the run lost with it, then starts the group's next instance,
    whose agent runs attempt 2 (the launcher's verdict is not an end for it)."""
    # the second instance's agent beats every 0.8 s: room for a loaded machine
    env = _env(tmp_path, heartbeat_timeout_s=4, max_requeues=1)
    sweep = _launch(env, [{"lose": True}], "deadagent")
    run = sweep.runs[0]
    first = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    _until(lambda: _checkpointed(run), what="a checkpoint synced")
    farm.kill_agent(first)
    reason = _requeued_reason(sweep, run, first)
    assert re.fullmatch(rf"lost with instance {first}; started again on i-\w+ \(instance 2\)",
                        reason), reason
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    assert _istate(first) == "terminated"
    second = _requeued_once(sweep, run, first)
    log = (farm.instances[second].root / "var/log/chester-agent.log").read_text()
    assert f"{run.token}: claimed attempt 2" in log


# -- (2) a submit refused midway -------------------------------------------------------------------
def test_refused_submit_leaves_findable_instances_and_a_resume_completes(tmp_path, farm,
                                                                          ec2_backend,
                                                                          monkeypatch):
    from chester.cli import main

    farm.paused = True
    env = _env(tmp_path)
    monkeypatch.chdir(env.project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    monkeypatch.setattr("chester.config._cached", None)  # the CLI reads this project's config
    ec2 = ec2_backend.client("ec2", env.config.backend("ec2").options)
    variants = [{"seconds": 0, "i": i} for i in range(10)]
    from chester_backend_ec2.plugin import sweep_key

    key = sweep_key(env.config.backend("ec2"), "tenth")
    with _Refuse(ec2, "InstanceLimitExceeded", lambda n, p: n >= 4):
        with pytest.raises(BackendError, match="3 of 10 instances") as ei:
            _launch(env, variants, "tenth")
    assert "chester ec2 kill" in str(ei.value)
    assert len(_instances(("pending", "running"), key)) == 3
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "ls", "--json"]) == 0
    listed = [r for r in json.loads(out.getvalue()) if r["sweep"] == key]
    assert len(listed) == 3
    # launching again starts the other seven, never a second copy of the three
    sweep = _launch(env, variants, "tenth")
    insts = _instances(("pending", "running"), key)
    assert len(insts) == 10
    assert len({t["Value"] for i in insts for t in i["Tags"] if t["Key"] == "chester:group"}) == 10
    assert {r.handle.remote_id for r in sweep.runs} == {i["InstanceId"] for i in insts}
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "kill", listed[0]["sweep"]]) == 0
    assert "terminated 10 instance(s)" in out.getvalue()
    assert not _instances(("pending", "running"), key)
    assert main(["ec2", "kill"]) == 2  # names nothing: refused


def test_ec2_kill_cancels_the_runs_it_stops(tmp_path, farm, monkeypatch):
    """Runs on the instances `chester ec2 kill` terminates read cancelled, by it (not failed,
    killed by signal 15), and no status poll starts them again."""
    from chester_backend_ec2.plugin import sweep_key

    from chester.cli import main

    env = _env(tmp_path, max_requeues=1)
    monkeypatch.chdir(env.project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    monkeypatch.setattr("chester.config._cached", None)
    sweep = _launch(env, [{"seconds": 120, "i": i} for i in range(2)], "killed")
    _until(lambda: all(s.value == "running" for s in sweep.status().values()), timeout=60,
           what="both running")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "kill", sweep_key(env.config.backend("ec2"), "killed")]) == 0
    assert "cancelled 2 unfinished run(s)" in out.getvalue()
    assert "terminated 2 instance(s)" in out.getvalue()
    _until(lambda: all(i.done for i in farm.instances.values()), what="the instances gone")
    states = sweep.wait(timeout=30, poll_interval=0.3, progress=False, pull=True)
    assert [s.value for s in states.values()] == ["cancelled", "cancelled"]
    assert all(re.fullmatch(r"cancelled by chester ec2 kill at \d\d:\d\d", r.reason)
               for r in sweep.runs), [r.reason for r in sweep.runs]
    # the agents stopped the runs as cancelled, in their own records too
    assert [status_record(r)["state"] for r in sweep.runs] == ["cancelled", "cancelled"]
    assert len(farm.instances) == 2


# -- (3) persistent spot requests -----------------------------------------------------------------
def _spot_request(group):
    tags = [{"Key": "chester:group", "Value": group}, {"Key": "chester:sweep", "Value": "x"}]
    res = _ec2().request_spot_instances(
        InstanceCount=1, Type="persistent", LaunchSpecification={
            "ImageId": "ami-0123456789abcdef0", "InstanceType": "t3.micro"},
        TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": tags}])
    return res["SpotInstanceRequests"][0]["SpotInstanceRequestId"]


def _open_requests():
    return [r["SpotInstanceRequestId"] for r in _ec2().describe_spot_instance_requests(
        Filters=[{"Name": "state", "Values": ["open", "active"]}])["SpotInstanceRequests"]]


def test_persistent_spot_request_is_cancelled_once_its_runs_end(tmp_path, farm):
    env = _env(tmp_path, interruption_behavior="stop")
    sweep = _launch(env, [{"seconds": 1}], "persist")
    run = sweep.runs[0]
    # AWS makes the request RunInstances asked for; it carries the instance's tags
    args = json.loads(sweep.prepared.scripts["run_instances"])
    kinds = [t["ResourceType"] for t in args["TagSpecifications"]]
    assert "spot-instances-request" in kinds
    rid = _spot_request(run.handle.get("group"))
    assert rid in _open_requests()
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=False)
    assert states[run.name].value == "succeeded"
    assert rid not in _open_requests()


def test_cancel_cancels_the_spot_request_before_terminating(tmp_path, farm):
    env = _env(tmp_path, interruption_behavior="hibernate", cancel_grace_s=5)
    sweep = _launch(env, [{"seconds": 120}], "persist-cancel")
    run = sweep.runs[0]
    rid = _spot_request(run.handle.get("group"))
    other = _spot_request("chester-someone-else")
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    sweep.cancel()
    assert rid not in _open_requests() and other in _open_requests()


# -- (4) requeue from the durable record ------------------------------------------------------------
def _preempt(farm, sweep, run, iid):
    farm.interrupt(iid)

    def told() -> bool:
        # the notice while the run goes on; a run that checkpoints and requeues at once may
        # end between two status reads, and then reads preempted (its instance still up), or
        # already requeued when a slow poll comes after the requeue was recorded
        state = sweep.status()[run.name].value
        return state in ("preempted", "requeued") or "interruption notice" in (
            sweep.store.run(run.id).pending_reason or "")

    _until(told, what="the notice")
    _ec2().terminate_instances(InstanceIds=[iid])
    _until(lambda: farm.instances[iid].done, what="instance gone")


def test_spot_notice_reaches_the_run_which_is_requeued_once_after_its_instance_aged_out(
        tmp_path, farm):
    # syncs are a minute apart: what the run writes on the notice goes up within seconds
    env = _env(tmp_path, max_requeues=1, sync_interval_s=60)
    sweep = _launch(env, [{"preempt": True}], "notice")
    run = sweep.runs[0]
    first = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    farm.interrupt(first)
    # the worker got SIGUSR1 (chester.preempted()), the run checkpointed and called
    # chester.requeue(); its checkpoint and the marker reached S3
    # (one sync walks the run folder before its .chester/: wait for both, not one then the other)
    def synced(*names):
        keys = _s3_keys()
        return all(any(k.endswith(f"{run.token}/{n}") for k in keys) for n in names)

    _until(lambda: synced("checkpoint.json", ".chester/preempt"), timeout=15,
           what="the checkpoint and the marker synced")
    _until(lambda: farm.instances[first].done, what="the instance powered off")
    _ec2().terminate_instances(InstanceIds=[first])
    _forget(first)
    assert sweep.status()[run.name].value == "requeued"
    assert sweep.status()[run.name].value in ("requeued", "queued", "running")
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    assert len(farm.instances) == 2
    ck = json.loads((run.log_dir / "checkpoint.json").read_text())
    assert json.loads(ck["notice"])["action"] == "terminate"
    assert ck["signalled"] is True and ck["step"] > 0
    resumed = json.loads((run.log_dir / "resumed.json").read_text())
    assert resumed == {"attempt": 2, "resumed": "1", "from_step": ck["step"],
                       "preempted": False}
    assert (run.log_dir / "progress.txt").read_text() == "start 1\nstart 2\n"
    st = json.loads((run.log_dir / ".chester" / "status.json").read_text())
    assert st["attempt"] == 2 and st["state"] == "succeeded"
    assert (run.log_dir / ".chester" / "preempt").exists()  # the first attempt's marker


def test_the_notice_check_never_waits_behind_an_upload(tmp_path, aws, monkeypatch):
    """The agent's watch step (its own thread) while a sync holds the upload lock: the run
    is told and its record says ``preempted`` at once; the folder goes up after."""
    import threading

    from ec2farm import FakeImds, agent_in_process  # type: ignore[import-not-found]

    imds = FakeImds("i-0123456789abcdef0")
    s3 = boto3.client("s3", region_name=REGION)
    spec = {"sweep_prefix": "chester/sweeps/slow/", "group": "g1",
            "runs": [{"token": "tok1", "remote_dir": "/runs/tok1"}]}
    try:
        agent = agent_in_process(tmp_path, monkeypatch, imds, spec)
        assert agent.instance_id == "i-0123456789abcdef0"
        assert agent.claim(agent.runs[0])  # the run is this instance's
        imds.action = json.dumps({"action": "terminate", "time": "2026-01-01T00:00:00Z"})
        done = threading.Event()
        with agent.lock:  # a sync is uploading a large file
            threading.Thread(target=lambda: (agent.check_spot(), done.set()),
                             daemon=True).start()
            assert done.wait(5), "the notice check waited for the upload"
            rec = json.loads(s3.get_object(Bucket="chester-test", Key=(
                "chester/sweeps/slow/ctl/status/tok1.json"))["Body"].read())
            assert rec["preempted"] is True and rec["instance"] == agent.instance_id
            marker = tmp_path / "runs/tok1/.chester/preempt"
            assert json.loads(marker.read_text())["action"] == "terminate"
            assert agent.sync_now and agent.wake.is_set()  # the main loop syncs next
    finally:
        imds.close()


def test_max_requeues_one_never_starts_a_third_instance(tmp_path, farm):
    env = _env(tmp_path, max_requeues=1)
    sweep = _launch(env, [{"seconds": 120}], "third")
    run = sweep.runs[0]
    first = run.handle.remote_id
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    _preempt(farm, sweep, run, first)
    assert sweep.status()[run.name].value == "requeued"
    second = _until(lambda: next((i for i in farm.instances if i != first), None),
                    what="the second instance")
    _forget(first)  # only the second one is listed now
    _until(lambda: sweep.status()[run.name].value == "running", what="running again")
    _preempt(farm, sweep, run, second)
    for _ in range(3):
        assert sweep.status()[run.name].value == "preempted"
    assert len(farm.instances) == 2 and len(_instances()) == 1


def test_a_refused_requeue_is_the_runs_pending_reason_not_a_failed_status(tmp_path, farm,
                                                                          ec2_backend):
    env = _env(tmp_path, max_requeues=1)
    sweep = _launch(env, [{"seconds": 8}], "quota")  # still running when the notice comes
    run = sweep.runs[0]
    _until(lambda: sweep.status()[run.name].value == "running", what="running")
    ec2 = ec2_backend.client("ec2", env.config.backend("ec2").options)
    with _Refuse(ec2, "VcpuLimitExceeded", lambda n, p: True) as refuse:
        _preempt(farm, sweep, run, run.handle.remote_id)
        assert sweep.status()[run.name].value == "requeued"
        assert refuse.calls
        assert "VcpuLimitExceeded" in sweep.store.run(run.id).pending_reason
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=False)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    assert len(farm.instances) == 2


def test_growing_logs_have_only_their_new_bytes_uploaded_small_or_big(tmp_path, farm,
                                                                      ec2_backend):
    from chester.types import PullPatterns

    env = _env(tmp_path, sync_interval_s=0.3)
    sweep = _launch(env, [{"seconds": 5, "biglog": True}], "biglog")
    run = sweep.runs[0]
    # a pull while the run goes on, and one after: the second brings only the new segments
    _until(lambda: sum(".chester-seg/" in k and "/big.log" in k for k in _s3_keys()) >= 3,
           what="three segments of big.log")
    first = ec2_backend.chester_pull(sweep.backend, [run.handle], run.log_dir, PullPatterns())
    had = (run.log_dir / "big.log").stat().st_size
    assert first[0].bytes >= had > 5 * 1024 * 1024
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=False)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    second = ec2_backend.chester_pull(sweep.backend, [run.handle], run.log_dir,
                                      PullPatterns())
    assert second[0].bytes < 1024 * 1024  # not the 5.5 MiB again
    root = farm.instances[run.handle.remote_id].root
    on_instance = root / run.handle.remote_dir.lstrip("/")
    log = (root / "var/log/chester-agent.log").read_text()
    prefix = f"chester/sweeps/{run.handle.get('sweep')}/runs/{run.token}/"
    s3 = boto3.client("s3", region_name=REGION)
    for name in ("train.log", "big.log", "stdout.log"):
        text = (run.log_dir / name).read_text()
        assert text == (on_instance / name).read_text()  # the pieces add up to the file
        assert text.count("step ") >= 20
        # what the agent sent of it: ranges that follow on, adding up to the file's size
        sent = [tuple(map(int, line.split("sent bytes ")[1].split()[0].split("-")))
                for line in log.splitlines() if line.endswith(f"of {name} (generation 1)")]
        assert len(sent) >= 5, sent
        assert sent[0][0] == 0 and all(a[1] == b[0] for a, b in zip(sent[:-1], sent[1:], strict=True))
        assert sent[-1][1] == len(text.encode())
        # S3 holds one object per sync, no byte twice (a sync that found the file empty sent
        # an empty segment at 0, which the first bytes of the file then replaced)
        objs = [o for o in s3.list_objects_v2(Bucket="chester-test", Prefix=prefix + name)[
            "Contents"]]
        assert len(objs) == len(sent) - sum(1 for a, b in sent[:1] if a == b == 0)
        assert sum(o["Size"] for o in objs) == len(text.encode())
    assert (run.log_dir / "big.log").stat().st_size > 5 * 1024 * 1024
    # chester logs joins the segments too
    out = io.StringIO()
    ec2_backend.chester_logs(sweep.backend, run.handle, False, "stdout", out)
    assert out.getvalue() == (run.log_dir / "stdout.log").read_text()


def test_capacity_errors_fall_back_over_types_subnets_and_on_demand(tmp_path, ec2_backend):
    plugin = ec2_backend

    subnets = [s["SubnetId"] for s in _ec2().describe_subnets()["Subnets"]][:2]
    # one RunInstances per placement (the EC2 Fleet path: test_ec2_fleet.py)
    env = _env(tmp_path, instance_types=["t3.small"], subnet_ids=subnets,
               on_demand_fallback=True, launch_api="run_instances")
    backend = env.config.backend("ec2")
    ec2 = plugin.client("ec2", backend.options)
    codes = {"t3.micro": "InsufficientInstanceCapacity", "t3.small": "SpotMaxPriceTooLow"}

    def no_spot(n, p):
        return "InstanceMarketOptions" in p and (
            p["InstanceType"] == "t3.micro" or p["InstanceType"] == "t3.small" and
            p.get("SubnetId") == subnets[0])

    with _Refuse(ec2, "SpotMaxPriceTooLow", no_spot) as refuse:
        inst = plugin.launch_instance(backend, ec2, "s", "chester-g1", "#!/bin/bash\n")
    assert inst["InstanceType"] == "t3.small" and inst["SubnetId"] == subnets[1]
    assert refuse.calls == ["t3.micro", "t3.micro", "t3.small", "t3.small"]
    # no spot anywhere: on-demand
    with _Refuse(ec2, "MaxSpotInstanceCountExceeded", lambda n, p: "InstanceMarketOptions" in p):
        inst = plugin.launch_instance(backend, ec2, "s", "chester-g2", "#!/bin/bash\n")
    assert inst["InstanceType"] == "t3.micro" and "InstanceLifecycle" not in inst
    # without the fallback the error names every placement tried
    env = _env(tmp_path, instance_types=["t3.small"], launch_api="run_instances")
    backend = env.config.backend("ec2")
    with _Refuse(ec2, codes["t3.small"], lambda n, p: True):
        with pytest.raises(BackendError, match="no capacity .*t3.micro spot.*t3.small spot"):
            plugin.launch_instance(backend, ec2, "s", "chester-g3", "#!/bin/bash\n")
    assert not [i for i in _instances() if _tagof(i) == "chester-g3"]


def _tagof(inst):
    return next((t["Value"] for t in inst.get("Tags", ()) if t["Key"] == "chester:group"), None)


# -- (7) security ---------------------------------------------------------------------------------
def test_secret_in_prepare_commands_is_refused(tmp_path, aws):
    env = _env(tmp_path)
    with open(env.project / "chester.yaml", "a") as f:
        f.write("prepare_commands: ['export AWS_SECRET_ACCESS_KEY=abc123']\n")
    from chester.config import load_config

    env.config = load_config(env.project / "chester.yaml")
    with pytest.raises(UserError, match="prepare_commands.*AWS secret"):
        _launch(env, [{"seconds": 0}], "secret")
    assert not _instances()
    assert not _s3_keys("chester/sweeps/")


def test_missing_instance_profile_is_found_before_any_launch(tmp_path, farm):
    farm.paused = True
    env = _env(tmp_path, iam_instance_profile="chester-runs")
    with pytest.raises(UserError, match="iam_instance_profile 'chester-runs' does not exist"):
        _launch(env, [{"seconds": 0}], "noprofile")
    assert not _instances()
    boto3.client("iam", region_name=REGION).create_instance_profile(
        InstanceProfileName="chester-runs")
    sweep = _launch(env, [{"seconds": 0}], "noprofile")
    assert len(_instances()) == 1 and sweep.runs[0].handle.remote_id


def test_packed_gpus_are_checked_against_the_instance_type(tmp_path, farm):
    farm.paused = True
    env = _env(tmp_path, runs_per_instance=2, instance_type="g5.xlarge")
    with pytest.raises(UserError, match="g5.xlarge has 1 GPU.*needs 2"):
        _launch(env, [{"seconds": 0}, {"seconds": 0}], "gpus")
    assert not _instances()
    env = _env(tmp_path, runs_per_instance=2, gpus_per_run=2, instance_type="g5.12xlarge")
    sweep = _launch(env, [{"seconds": 0}, {"seconds": 0}], "gpus4")
    assert len(_instances()) == 1 and len(sweep.runs) == 2


def test_ec2_ls_shows_the_spot_price_where_known(tmp_path, farm, monkeypatch):
    from chester.cli import main

    farm.paused = True
    env = _env(tmp_path)
    monkeypatch.chdir(env.project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    monkeypatch.setattr("chester.config._cached", None)  # the CLI reads this project's config
    from chester_backend_ec2.plugin import sweep_key

    _launch(env, [{"seconds": 0}], "price")
    key = sweep_key(env.config.backend("ec2"), "price")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "ls", "--json"]) == 0
    (row,) = [r for r in json.loads(out.getvalue()) if r["sweep"] == key]
    assert row["market"] == "spot" and row["type"] == "t3.micro"
    hist = _ec2().describe_spot_price_history(InstanceTypes=["t3.micro"], MaxResults=1)
    if hist["SpotPriceHistory"]:  # the endpoint publishes prices: ls shows one
        assert isinstance(row["usd_per_hour"], float)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "ls"]) == 0
    assert "Cost/h" in out.getvalue() and row["instance"] in out.getvalue()


# -- packed instances: a freed GPU takes the next run ---------------------------------------------
def test_a_freed_gpu_takes_the_next_run_exactly_once_within_the_gpu_count(tmp_path, farm):
    farm.paused = True  # instances boot only when the test says
    env = _env(tmp_path, runs_per_instance=2, gpus_per_run=2, instance_type="g5.12xlarge",
               max_requeues=0)
    sweep = _launch(env, [{"seconds": 0.5}, {"seconds": 25}, {"seconds": 1}, {"seconds": 1},
                          {"seconds": 0.5}], "steal")
    runs = sweep.runs
    assert len({r.handle.remote_id for r in runs}) == 3  # [0, 1], [2, 3], [4]
    first = runs[0].handle.remote_id
    farm.boot(first)  # the other two are slow to come up
    prefix = f"chester/sweeps/{runs[0].handle.get('sweep')}/ctl/"
    # while run 1 goes on, the slot run 0 freed takes runs 2, 3 and 4, one after another
    _until(lambda: status_record(runs[4]).get("state") == "succeeded", timeout=60,
           what="run 4 done")
    assert all(status_record(r).get("instance") == first for r in runs)
    assert status_record(runs[1]).get("state") == "running"
    farm.paused = False  # the others boot, find their runs taken and power off
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert all(states[r.name].value == "succeeded" for r in runs), states
    others = {r.handle.remote_id for r in runs} - {first}
    _until(lambda: all(i in farm.instances and farm.instances[i].done for i in others),
           what="the idle instances powered off")
    for iid in others:
        log = (farm.instances[iid].root / "var/log/chester-agent.log").read_text()
        assert " started " not in log and "no unclaimed run left" in log
    # exactly once: one claim per run, each run started once
    claims = _s3_keys(prefix + "claims/")
    assert sorted(k.split("/")[-2] for k in claims) == sorted(r.token for r in runs)
    assert all(k.endswith("/1") for k in claims)
    for r in runs:
        assert (r.log_dir / "progress.txt").read_text() == "start 1\n"
    # never more runs at once than slots, never two on the same GPUs
    recs = [status_record(r) for r in runs]
    for rec in recs:  # what ran at the moment each run started
        t = rec["started_at"]
        overlapping = [o for o in recs if o["started_at"] <= t < o["ended_at"]]
        assert len(overlapping) <= 2
        devices = [o["cuda_visible_devices"] for o in overlapping]
        assert len(set(devices)) == len(devices) and set(devices) <= {"0,1", "2,3"}
    assert sum(1 for rec in recs if rec["started_at"] < recs[1]["ended_at"]) == 5


def test_a_resumed_launch_starts_no_instance_for_runs_a_freed_slot_took(tmp_path, farm,
                                                                        ec2_backend):
    from chester_backend_ec2.plugin import sweep_key

    env = _env(tmp_path, runs_per_instance=2, gpus_per_run=2, instance_type="g5.12xlarge",
               max_requeues=0)
    variants = [{"seconds": 0.5, "i": i} for i in range(4)]
    key = sweep_key(env.config.backend("ec2"), "resume")
    ec2 = ec2_backend.client("ec2", env.config.backend("ec2").options)
    with _Refuse(ec2, "InstanceLimitExceeded", lambda n, p: n >= 2):
        with pytest.raises(BackendError, match="1 of 2 instances"):
            _launch(env, variants, "resume")
    # the one instance started runs its two runs, then takes the other two
    prefix = f"chester/sweeps/{key}/ctl/claims/"
    _until(lambda: len(_s3_keys(prefix)) == 4, timeout=60, what="all four runs claimed")
    sweep = _launch(env, variants, "resume")
    assert len(_instances(sweep=key)) == 1  # nothing left for a second instance
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert all(states[r.name].value == "succeeded" for r in sweep.runs), states
    assert len({r.handle.remote_id for r in sweep.runs}) == 1
    for r in sweep.runs:
        assert (r.log_dir / "progress.txt").read_text() == "start 1\n"


def test_a_run_a_freed_slot_took_is_requeued_with_the_instance_that_took_it(tmp_path, farm):
    farm.paused = True
    env = _env(tmp_path, runs_per_instance=2, gpus_per_run=2, instance_type="g5.12xlarge",
               max_requeues=1, sync_interval_s=60)
    sweep = _launch(env, [{"seconds": 0.5}, {"preempt": True, "i": 1},
                          {"preempt": True, "i": 2}, {"seconds": 0.5}], "stolenrq")
    r0, r1, r2, r3 = sweep.runs
    first = r0.handle.remote_id
    farm.boot(first)
    prefix = f"chester/sweeps/{r0.handle.get('sweep')}/ctl/"
    _until(lambda: status_record(r2).get("state") == "running", timeout=60, what="run 2 taken")
    assert status_record(r2)["instance"] == first and status_record(r1)["state"] == "running"
    farm.paused = False  # the second instance comes up: run 3 is left for it
    _until(lambda: status_record(r3).get("state") == "succeeded", timeout=60, what="run 3 done")
    assert status_record(r3)["instance"] == r3.handle.remote_id != first
    farm.interrupt(first)  # both runs on the first instance checkpoint and requeue
    _until(lambda: farm.instances[first].done, what="the first instance powered off")
    states = sweep.wait(timeout=90, poll_interval=0.3, progress=False, pull=True)
    assert all(states[r.name].value == "succeeded" for r in sweep.runs), states
    assert len(farm.instances) == 3  # the two, and one requeued instance for the first's runs
    third = next(i for i in farm.instances if i not in (first, r3.handle.remote_id))
    for r in (r1, r2):
        assert (r.log_dir / "progress.txt").read_text() == "start 1\nstart 2\n"
        assert json.loads((r.log_dir / "resumed.json").read_text())["attempt"] == 2
        assert status_record(r)["instance"] == third
    claims = sorted(k[len(prefix) + len("claims/"):] for k in _s3_keys(prefix + "claims/"))
    assert claims == sorted([f"{r0.token}/1", f"{r1.token}/1", f"{r1.token}/2",
                             f"{r2.token}/1", f"{r2.token}/2", f"{r3.token}/1"])
