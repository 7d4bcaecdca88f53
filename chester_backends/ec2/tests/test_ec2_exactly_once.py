"""Exactly one instance runs each attempt of a run, whoever requeues and whatever EC2 does
with ClientToken (moto, like a launcher whose retried call reached AWS twice, starts a second
instance for a repeated token).

Two real pollers (``chester status`` in two processes) requeue the same preempted (or lost)
runs at the same moment; a twin instance is started by hand with the arguments chester used. AWS being
slow to answer RunInstances is played by a botocore ``before-call`` handler in the pollers
that holds the call until the other poller has polled once more (or is launching itself), so
the other one always polls while a launch is in flight; everything else is moto and the farm.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time

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
import os
import time


def fn_once(variant, log_dir, exp_name):
    import chester

    with open(os.path.join(log_dir, "progress.txt"), "a") as f:
        f.write("start %s\n" % chester.attempt())
    end = time.time() + 120
    while time.time() < end:
        if variant.get("preempt") and chester.attempt() == 1 and chester.preempted():
            chester.requeue()  # this attempt ends; the next instance runs attempt 2
        if os.path.exists(os.path.join(log_dir, "release")):
            return
        time.sleep(0.05)
    raise SystemExit("never released")
"""

#: A poller: ``chester status PREFIX --json`` again and again until ``stop`` exists. Its
#: RunInstances calls wait until the other poller has polled once more (or is launching).
POLLER = r"""
import os
import sys
import time

from chester.cli import main

name, other, sync, prefix = sys.argv[1:5]


def count(who):
    try:
        with open(os.path.join(sync, "polls-" + who)) as f:
            return int(f.read() or 0)
    except OSError:
        return 0


def slow_launch(**kw):
    # AWS answers late: the other poller polls at least once while this launch is in flight
    flag = os.path.join(sync, "launching-" + name)
    open(flag, "w").close()
    seen = count(other)
    end = time.time() + 30
    while time.time() < end and count(other) == seen and \
            not os.path.exists(os.path.join(sync, "launching-" + other)):
        time.sleep(0.02)
    os.unlink(flag)
    with open(os.path.join(sync, "launches-" + name), "a") as f:
        f.write(kw["params"]["body"].get("ClientToken", "?") + "\n")
    return None


from chester_backend_ec2.plugin import Ec2Backend

from chester.plugin.manager import build_plugin_manager, set_plugin_manager


class SlowEc2(Ec2Backend):
    # the ec2 backend, its RunInstances answered late

    def client(self, kind, options):
        c = super().client(kind, options)
        if kind == "ec2" and not getattr(c, "_slow", False):
            c.meta.events.register("before-call.ec2.RunInstances", slow_launch)
            c._slow = True
        return c


# the `chester` command below runs with this backend instance
manager = build_plugin_manager()
manager.unregister("ec2")
manager.register(SlowEc2(), name="ec2")
set_plugin_manager(manager)
n = 0
with open(os.devnull, "w") as devnull:
    while not os.path.exists(os.path.join(sync, "stop")):
        out, sys.stdout = sys.stdout, devnull
        try:
            rc = main(["status", prefix, "--json"])
        finally:
            sys.stdout = out
        assert rc == 0, rc
        n += 1
        with open(os.path.join(sync, "polls-" + name + ".tmp"), "w") as f:
            f.write(str(n))
        os.replace(os.path.join(sync, "polls-" + name + ".tmp"),
                   os.path.join(sync, "polls-" + name))
        time.sleep(0.1)
"""


def _env(tmp_path, **over):
    return project_env(tmp_path, "ec2once", FNS, **over)


@pytest.fixture(autouse=True)
def _fns_importable(tmp_path, monkeypatch):
    yield from importable(tmp_path, monkeypatch, "ec2once")


def _launch(env, variants, prefix, **kw):
    return launch_fn(env, "ec2once", "fn_once", variants, prefix, **kw)


def _ec2():
    return boto3.client("ec2", region_name=REGION)


def _describe(iid):
    return _ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def _tags(inst):
    return {t["Key"]: t["Value"] for t in inst.get("Tags", ())}


def _sweep_instances(key):
    out = []
    for r in _ec2().describe_instances(Filters=[{"Name": "tag:chester:sweep",
                                                 "Values": [key]}])["Reservations"]:
        out += r["Instances"]
    return out


def _twin(iid):
    """Start a second instance with the arguments chester started ``iid`` with: the same
    user-data, tags and ClientToken (moto starts it; AWS would have answered with iid)."""
    inst = _describe(iid)
    ud = _ec2().describe_instance_attribute(InstanceId=iid, Attribute="userData")
    res = _ec2().run_instances(
        ImageId=inst["ImageId"], InstanceType=inst["InstanceType"], MinCount=1, MaxCount=1,
        UserData=base64.b64decode(ud["UserData"]["Value"]).decode(),
        ClientToken=inst.get("ClientToken") or "", InstanceInitiatedShutdownBehavior="terminate",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": k, "Value": v} for k, v in _tags(inst).items()]}])
    return res["Instances"][0]["InstanceId"]


def _release(farm, iid, run):
    """Let the run on instance ``iid`` end (it waits for this file in its folder)."""
    d = farm.instances[iid].root / run.handle.remote_dir.lstrip("/")
    (d / "release").write_text("")


def _claims(run):
    prefix = f"chester/sweeps/{run.handle.get('sweep')}/ctl/claims/{run.token}/"
    return sorted(k[len(prefix):] for k in s3_keys(prefix))


def _agent_log(farm, iid):
    return (farm.instances[iid].root / "var/log/chester-agent.log").read_text()


def test_a_twin_instance_started_by_hand_leaves_the_run_to_the_first(tmp_path, farm):
    env = _env(tmp_path, max_requeues=1)
    sweep = _launch(env, [{"preempt": True}], "twin")
    run = sweep.runs[0]
    first = run.handle.remote_id
    until(lambda: sweep.status()[run.name].value == "running", what="running")
    # a twin of the first instance: it finds attempt 1 claimed and leaves the run alone
    twin = _twin(first)
    until(lambda: twin in farm.instances and farm.instances[twin].done, timeout=60,
          what="the twin powered off")
    log = _agent_log(farm, twin)
    assert f"claimed by instance {first} of this group" in log and " started " not in log
    assert _claims(run) == ["1"]
    rec = status_record(run)
    assert (rec["state"], rec["attempt"], rec["instance"]) == ("running", 1, first)
    # preempted: the run checkpoints and requeues; a status poll starts instance 2
    farm.interrupt(first)
    until(lambda: farm.instances[first].done, what="the first instance powered off")

    def second_instance():
        # each poll may requeue (the preemption record can land after the power-off is seen);
        # polling again never starts a second attempt 2
        sweep.status()
        return next((i["InstanceId"] for i in _sweep_instances(run.handle.get("sweep"))
                     if _tags(i).get("chester:attempt") == "2"), None)

    second = until(second_instance, what="the second instance")
    until(lambda: status_record(run).get("attempt") == 2 and
          status_record(run).get("state") == "running", timeout=60, what="attempt 2 running")
    # a twin of the second instance (chester's ClientToken <group>-a2): it leaves attempt 2
    twin2 = _twin(second)
    until(lambda: twin2 in farm.instances and farm.instances[twin2].done, timeout=60,
          what="the second twin powered off")
    assert f"claimed by instance {second} of this group" in _agent_log(farm, twin2)
    _release(farm, second, run)
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    # one attempt each, and the run's own record says so
    assert (run.log_dir / "progress.txt").read_text() == "start 1\nstart 2\n"
    assert _claims(run) == ["1", "2"]
    rec = status_record(run)
    assert (rec["state"], rec["attempt"], rec["instance"]) == ("succeeded", 2, second)
    st = json.loads((run.log_dir / ".chester" / "status.json").read_text())
    assert (st["state"], st["attempt"]) == ("succeeded", 2)
    assert len(_sweep_instances(run.handle.get("sweep"))) == 4  # two launched, two twins


@pytest.mark.parametrize("how", ["preempted", "lost"])
def test_two_pollers_in_two_processes_requeue_each_run_once(tmp_path, farm, how):
    """Runs preempted (they checkpoint and requeue on the notice), or lost with their
    instances (terminated under them, as a user or AWS would): each gets one attempt 2."""
    env = _env(tmp_path, max_requeues=1)
    prefix = f"twopollers{how}"
    sweep = _launch(env, [{"preempt": how == "preempted", "i": i} for i in range(3)], prefix)
    runs = sweep.runs
    key = runs[0].handle.get("sweep")
    firsts = [r.handle.remote_id for r in runs]
    assert len(set(firsts)) == 3
    until(lambda: all(s.value == "running" for s in sweep.status().values()), timeout=60,
          what="every run running")
    if how == "preempted":  # every run checkpoints and requeues; the instances power off
        for iid in firsts:
            farm.interrupt(iid)
    else:
        _ec2().terminate_instances(InstanceIds=firsts)
    until(lambda: all(farm.instances[i].done for i in firsts), what="the instances gone")
    sync = tmp_path / "pollers"
    sync.mkdir()
    script = tmp_path / "poller.py"
    script.write_text(textwrap.dedent(POLLER))
    procs = [subprocess.Popen([sys.executable, str(script), me, other, str(sync), prefix],
                              cwd=env.project, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / f"poller-{me}.err", "w"),
                              env={**os.environ, "CHESTER_CONFIG_PATH":
                                   str(env.project / "chester.yaml")})
             for me, other in (("a", "b"), ("b", "a"))]
    try:
        def second(r):
            rec = status_record(r)
            return rec.get("attempt") == 2 and rec.get("state") == "running"

        until(lambda: all(second(r) for r in runs), timeout=90, what="attempt 2 running")

        def polls(who):
            p = sync / f"polls-{who}"
            return int(p.read_text()) if p.exists() else 0

        # both pollers go on polling a while after the requeue: nothing more starts
        seen = {w: polls(w) for w in "ab"}
        until(lambda: all(polls(w) >= seen[w] + 3 for w in "ab"), what="more polls")
    finally:
        (sync / "stop").write_text("")
        for p in procs:
            p.wait(60)
    for me, p in zip("ab", procs, strict=True):
        assert p.returncode == 0, (tmp_path / f"poller-{me}.err").read_text()
    launches = [line for me in "ab" if (sync / f"launches-{me}").exists()
                for line in (sync / f"launches-{me}").read_text().splitlines()]
    # one launch per group, whichever poller made it
    assert sorted(launches) == sorted(f"{r.handle.get('group')}-a2" for r in runs)
    insts = _sweep_instances(key)
    assert len(insts) == 6
    for r in runs:
        group = [i for i in insts if _tags(i)["chester:group"] == r.handle.get("group")]
        assert sorted(_tags(i).get("chester:attempt", "1") for i in group) == ["1", "2"]
        (new,) = [i["InstanceId"] for i in group if _tags(i).get("chester:attempt") == "2"]
        assert status_record(r)["instance"] == new
        _release(farm, new, r)
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert {s.value for s in states.values()} == {"succeeded"}, \
        [(r.reason, r.stderr_tail) for r in runs]
    for r in runs:
        assert (r.log_dir / "progress.txt").read_text() == "start 1\nstart 2\n"
        assert _claims(r) == ["1", "2"]
        st = json.loads((r.log_dir / ".chester" / "status.json").read_text())
        assert (st["state"], st["attempt"]) == ("succeeded", 2)
    # the instance number was taken once per group, by one try
    tries = s3_keys(f"chester/sweeps/{key}/ctl/attempts/")
    assert sorted(k.split("/attempts/")[1] for k in tries) == sorted(
        f"{r.handle.get('group')}/2/1{end}.json" for r in runs for end in ("", ".end"))


def test_next_instance_is_taken_once_and_a_dead_try_is_taken_over(tmp_path, aws):
    """The reusable step itself, without a farm: two callers at once start one instance; a
    refused launch is tried again by the next call; a try whose process died is taken over
    after STALE_TRY_S, unless its instance is listed."""
    from concurrent.futures import ThreadPoolExecutor

    from chester_backend_ec2 import requeue
    from chester_backend_ec2.plugin import Ec2Backend
    from test_ec2_bounds import _Refuse  # type: ignore[import-not-found]

    env = _env(tmp_path, max_requeues=4)
    backend = env.config.backend("ec2")
    o = backend.options
    plugin = Ec2Backend()
    s3, ec2 = plugin.client("s3", o), plugin.client("ec2", o)
    group = "chester-" + "0" * 40
    base = requeue.prefix(o, "sw", group)
    started = []

    def counting(*a, **kw):  # the real launch (moto), counted
        inst = plugin.launch_instance(*a, **kw)
        started.append(kw["attempt"])
        return inst

    def run(*listed, now=None):
        return requeue.next_instance(backend, s3, ec2, "sw", group, list(listed), now=now,
                                     launch=counting)

    def inst(iid, n, state):
        tags = [{"Key": "chester:group", "Value": group}]
        if n > 1:
            tags.append({"Key": "chester:attempt", "Value": str(n)})
        return {"InstanceId": iid, "State": {"Name": state}, "Tags": tags}

    def outcome(n, k):
        key = f"{base}{n}/{k}.end.json"
        return json.loads(s3.get_object(Bucket=o.bucket, Key=key)["Body"].read())

    # two callers at the same moment, both seeing instance 1 gone: one launch
    first = inst("i-1", 1, "terminated")
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: run(first), range(2)))
    assert sorted(x.kind for x in outs) == ["started", "starting"] and started == [2]
    (second,) = [x.instance for x in outs if x.kind == "started"]
    assert outcome(2, 1)["instance"] == second
    # instance 2 up, or started a moment ago and not listed yet: nothing to do
    assert run(first, inst(second, 2, "running")).kind == "up"
    assert (run(first).kind, run(first).instance) == ("up", second)
    # instance 2 gone: a refused launch of instance 3 is the outcome, the next call tries again
    gone = [first, inst(second, 2, "terminated")]
    with _Refuse(ec2, "VcpuLimitExceeded", lambda n, p: True):
        res = run(*gone)
    assert (res.kind, res.attempt) == ("failed", 3) and "VcpuLimitExceeded" in res.error
    assert "VcpuLimitExceeded" in outcome(3, 1)["error"]
    res = run(*gone)
    assert (res.kind, res.attempt) == ("started", 3) and started == [2, 3]
    assert outcome(3, 2)["instance"] == res.instance
    gone.append(inst(res.instance, 3, "terminated"))
    # a try whose process died after its launch (no outcome): the instance is listed, recorded
    s3.put_object(Bucket=o.bucket, Key=f"{base}4/1.json", Body=b"{}")
    assert run(*gone).kind == "starting"
    assert (run(*gone, inst("i-4", 4, "running")).kind, outcome(4, 1)["instance"]) == \
        ("up", "i-4")
    gone.append(inst("i-4", 4, "terminated"))
    # a try whose process died before its launch: left alone while fresh, then taken over
    s3.put_object(Bucket=o.bucket, Key=f"{base}5/1.json", Body=b"{}")
    assert run(*gone).kind == "starting"
    res = run(*gone, now=time.time() + requeue.STALE_TRY_S + 1)
    assert (res.kind, res.attempt) == ("started", 5) and started == [2, 3, 5]
    # max_requeues: 4 is five instances at most
    assert run(*gone, inst(res.instance, 5, "terminated")).kind == "used_up"
    assert started == [2, 3, 5]


# -- a verdict or a last record written over a record that changed since it was read -------------
@pytest.mark.parametrize("case", ["replaced", "appeared", "unchanged", "none"])
def test_a_verdict_is_written_only_over_the_record_its_poll_read(tmp_path, aws, case):
    """A poll reads the records, finds the instance's agent dead and writes its ``lost``
    verdict; in between, another poll requeued the run and the next instance's agent wrote
    its attempt 2 (over attempt 1's record, ``replaced``, or where there was none yet,
    ``appeared``): that record stays, and the poll keeps what it read. With no write in
    between the verdict is written (``unchanged``, ``none``)."""
    from chester_backend_ec2.plugin import Ec2Backend, sweep_prefix

    from chester.plugin.records import RunHandle

    env = _env(tmp_path, heartbeat_timeout_s=1)
    backend = env.config.backend("ec2")
    o = backend.options
    plugin = Ec2Backend()
    s3, ec2 = plugin.client("s3", o), plugin.client("ec2", o)
    sweep, group, tok = "sw", "chester-" + "1" * 40, "t" * 16
    iid = ec2.run_instances(ImageId=o.image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                {"Key": "chester:sweep", "Value": sweep},
                                {"Key": "chester:group", "Value": group}]}],
                            )["Instances"][0]["InstanceId"]
    ctl_prefix = f"{sweep_prefix(o, sweep)}ctl/"
    key = f"{ctl_prefix}status/{tok}.json"

    def put(rec):
        s3.put_object(Bucket=o.bucket, Key=key, Body=json.dumps(rec, sort_keys=True).encode())

    def stored():
        return json.loads(s3.get_object(Bucket=o.bucket, Key=key)["Body"].read())

    first = {"token": tok, "state": "running", "attempt": 1, "started_at": time.time(),
             "group": group, "instance": iid, "launch": 1}
    if case in ("replaced", "unchanged"):
        put(first)
    s3.put_object(Bucket=o.bucket, Key=f"{ctl_prefix}heartbeat/{group}.json", Body=b"{}")
    time.sleep(1.5)  # the agent's heartbeat is now older than heartbeat_timeout_s
    handle = RunHandle(run_id=0, token=tok, backend="ec2", local_dir=str(tmp_path / "l"),
                       remote_dir="/runs/t", remote_id=iid,
                       extra=(("sweep", sweep), ("group", group)))
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    by_group = {group: inst}
    ctl = plugin.read_ctl(s3, o, sweep)
    read = ctl.records.get(tok)
    next_attempt = {"token": tok, "state": "running", "attempt": 2, "started_at": time.time(),
                    "group": group, "instance": "i-0next", "launch": 2}
    if case in ("replaced", "appeared"):
        put(next_attempt)  # after this poll's read, before its write
    plugin._reap(backend, ec2, s3, sweep, [handle], by_group, ctl)

    # the dead agent's instance goes whatever its records say
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0][
        "State"]["Name"]
    assert state in ("shutting-down", "terminated")
    if case in ("replaced", "appeared"):
        assert stored() == next_attempt
        assert ctl.records.get(tok) == read  # this poll's reading: no verdict written
        return
    verdict = stored()
    assert (verdict["state"], verdict["by"], verdict["instance"]) == ("lost", "launcher", iid)
    assert "stopped its heartbeat" in verdict["reason"]
    # went with its instance while it ran (requeued), or never started (no record)
    assert verdict.get("instance_lost") is (True if case == "unchanged" else None)
    assert ctl.records[tok] == verdict


@pytest.mark.parametrize("case", ["verdict", "next_attempt", "unchanged", "none"])
def test_the_agents_last_record_is_written_only_over_the_one_it_read(tmp_path, aws,
                                                                     monkeypatch, case):
    """While its instance goes down the agent reads the run's record, finds it its own, and
    writes its last one; in between, a status poll wrote its ``lost`` verdict over it
    (``verdict``), or the next instance's agent wrote attempt 2 where there was no record
    (``next_attempt``): that record stays, and the agent leaves the run alone. With no write
    in between the agent's record is written (``unchanged``, ``none``)."""
    from ec2farm import FakeImds, agent_in_process  # type: ignore[import-not-found]

    iid = "i-0123456789abcdef0"
    imds = FakeImds(iid)
    s3 = boto3.client("s3", region_name=REGION)
    spec = {"sweep_prefix": "chester/sweeps/last/", "group": "g1",
            "runs": [{"token": "tok1", "remote_dir": "/runs/tok1"}]}
    key = "chester/sweeps/last/ctl/status/tok1.json"

    def put(rec):
        s3.put_object(Bucket="chester-test", Key=key, Body=json.dumps(rec).encode())

    try:
        agent = agent_in_process(tmp_path, monkeypatch, imds, spec)
        run = agent.runs[0]
        assert agent.claim(run)
        if case in ("verdict", "unchanged"):
            put({"token": "tok1", "state": "running", "attempt": 1, "group": "g1",
                 "instance": iid, "launch": 1, "started_at": time.time()})
        newer = {"verdict": {"token": "tok1", "state": "lost", "by": "launcher",
                             "instance_lost": True, "attempt": 1, "group": "g1",
                             "instance": iid, "launch": 1, "ended_at": time.time(),
                             "reason": "the agent stopped its heartbeat"},
                 "next_attempt": {"token": "tok1", "state": "running", "attempt": 2,
                                  "group": "g1", "instance": "i-0next", "launch": 2,
                                  "started_at": time.time()}}.get(case)
        reads = []

        def note_key(params, context, **kw):
            context["status_read"] = params.get("Key") == key

        def after_get(context, **kw):  # S3 answered the agent's GET of the record: then
            if context.get("status_read"):  # (once) the other writer's record lands
                reads.append(1)
                if newer is not None and len(reads) == 1:
                    put(newer)

        events = agent.store.s3.meta.events
        events.register("before-parameter-build.s3.GetObject", note_key)
        events.register("after-call.s3.GetObject", after_get)
        agent.stop.set()  # the instance goes down
        agent.publish(run, force=True)
        got = json.loads(s3.get_object(Bucket="chester-test", Key=key)["Body"].read())
        if newer is not None:
            assert got == newer and run.frozen
            assert len(reads) == 2  # read again after S3 refused, then left alone
        else:
            assert got == json.loads(run.last_record) == run.record()
            assert got["instance"] == iid and not run.frozen and len(reads) == 1
    finally:
        imds.close()
