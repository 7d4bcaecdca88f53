"""The sweep's supervisor instance: the sweep goes on after the launching process is
SIGKILLed right after its launch, with no chester process on the laptop until it is over.

The farm plays the supervisor instance too (its user-data runs ``python -m
chester_backend_ec2.supervisor`` as a local process: an instance, not the laptop). The boto3
calls the supervisor makes are recorded by a ``sitecustomize`` on the instances'
``PYTHONPATH`` that wraps botocore's API call in that process only, and checked against the
IAM policy in docs/backends/ec2.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
from ec2farm import (  # type: ignore[import-not-found]
    REGION,
    importable,
    launch_fn,
    project_env,
    s3_keys,
    until,
)

FNS = r"""
import os
import time


def fn_sup(variant, log_dir, exp_name):
    import chester

    with open(os.path.join(log_dir, "progress.txt"), "a") as f:
        f.write("start %s\n" % chester.attempt())
    end = time.time() + 120
    while time.time() < end:
        if variant.get("preempt") and chester.attempt() == 1 and chester.preempted():
            chester.requeue()  # this attempt ends; the next instance runs attempt 2
        if chester.attempt() > 1 or os.path.exists(variant["gate"]):
            return
        time.sleep(0.05)
    raise SystemExit("never released")
"""

#: The launching process: launch, say so, then wait to be killed.
LAUNCHER = r"""
import sys
import time

import chester

import ec2sup

sweep = chester.launch(ec2sup.fn_sup, __import__("json").loads(sys.argv[1]), backend="ec2",
                       exp_prefix="supervised")
print("launched", flush=True)
time.sleep(600)
"""

#: Records the API calls of the supervisor's process (only there), one "service:Op" a line.
RECORDER = r"""
import os
import sys

if "chester_backend_ec2.supervisor" in getattr(sys, "orig_argv", ()):
    import botocore.client

    _orig = botocore.client.BaseClient._make_api_call

    def _recorded(self, operation_name, api_params):
        with open(os.environ["CHESTER_TEST_CALLS"], "a") as f:
            f.write("%s:%s\n" % (self.meta.service_model.service_name, operation_name))
        return _orig(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = _recorded
"""

#: boto3 operations whose IAM action has another name
S3_ACTIONS = {"ListObjectsV2": "ListBucket", "HeadObject": "GetObject"}


def _env(tmp_path, **over):
    return project_env(tmp_path, "ec2sup", FNS, **over)


@pytest.fixture(autouse=True)
def _fns_importable(tmp_path, monkeypatch):
    yield from importable(tmp_path, monkeypatch, "ec2sup")


def _policy() -> dict:
    doc = (Path(__file__).parents[3] / "docs/backends/ec2.md").read_text()
    m = re.search(r"### Policy for the supervisor's role.*?```json\n(.*?)```", doc, re.S)
    assert m, "docs/backends/ec2.md lost the supervisor's policy"
    return json.loads(m.group(1))


def _allowed(policy: dict) -> set[str]:
    out: set[str] = set()
    for st in policy["Statement"]:
        act = st["Action"]
        out |= {act} if isinstance(act, str) else set(act)
    return out


def _profile(name: str, policy: dict) -> None:
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))
    iam.put_role_policy(RoleName=name, PolicyName="supervise",
                        PolicyDocument=json.dumps(policy))
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)


def _instances(sweep: str) -> list[dict]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return [i for r in ec2.describe_instances(Filters=[{"Name": "tag:chester:sweep",
                                                        "Values": [sweep]}])["Reservations"]
            for i in r["Instances"]]


def _tags(inst):
    return {t["Key"]: t["Value"] for t in inst.get("Tags", ())}


def _record(s3, sweep, token) -> dict:
    try:
        body = s3.get_object(Bucket="chester-test",
                             Key=f"chester/sweeps/{sweep}/ctl/status/{token}.json")["Body"]
    except s3.exceptions.NoSuchKey:
        return {}
    return json.loads(body.read())


def _children(farm, before: frozenset[int] = frozenset()) -> list[int]:
    """Processes whose parent is this test process, but for the farm's instances and those
    in ``before`` (servers this pytest worker started for other tests): the "laptop"'s own
    children."""
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                stat = open(f"/proc/{e}/stat", "rb").read()
            except OSError:
                continue
            f = stat[stat.rfind(b")") + 2:].split()
            if int(f[1]) == os.getpid() and f[0] not in (b"Z", b"X") and int(e) not in before:
                out.append(int(e))
    if out:  # an instance the farm was booting meanwhile is listed a moment after its start
        time.sleep(1.0)
    instances = {i.proc.pid for i in list(farm.instances.values())}
    return [p for p in out if p not in instances and os.path.exists(f"/proc/{p}")]


def _launch_and_kill(tmp_path, env, variants, site=None) -> tuple[str, str, dict]:
    """Launch ``variants`` from a process of its own, SIGKILLed as soon as it says it
    launched; returns the sweep's key, its supervisor's instance and the supervisor's spec."""
    (env.project / "launcher.py").write_text(textwrap.dedent(LAUNCHER))
    path = f"{env.project}:{site}" if site else str(env.project)
    launcher = subprocess.Popen(
        [sys.executable, "launcher.py", json.dumps(variants)], cwd=env.project,
        stdout=subprocess.PIPE, stderr=open(tmp_path / "launcher.err", "w"), text=True,
        env={**os.environ, "CHESTER_CONFIG_PATH": str(env.project / "chester.yaml"),
             "PYTHONPATH": path})
    assert launcher.stdout is not None
    assert launcher.stdout.readline() == "launched\n", (tmp_path / "launcher.err").read_text()
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(10)
    err = (tmp_path / "launcher.err").read_text()
    m = re.search(r"ec2: sweep (\S+):.*supervisor (i-\w+) \(on-demand t3\.nano, "
                  r"\$0\.0052/h\)", err)
    assert m, err
    sweep, sup = m.groups()
    s3 = boto3.client("s3", region_name=REGION)
    spec = json.loads(s3.get_object(Bucket="chester-test",
                                    Key=f"chester/sweeps/{sweep}/supervisor/spec.json")[
        "Body"].read())
    return sweep, sup, spec


def _cli_rows(env, monkeypatch, capsys, *args) -> dict | list:
    """``chester status ARGS --json`` run on the laptop, in the test's project."""
    from chester.cli import main

    monkeypatch.chdir(env.project)
    monkeypatch.setenv("CHESTER_CONFIG_PATH", str(env.project / "chester.yaml"))
    monkeypatch.setattr("chester.config._cached", None)  # the CLI reads this project's config
    capsys.readouterr()
    assert main(["status", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_supervised_sweep_requeues_and_ends_with_the_launcher_killed(
        tmp_path, farm, monkeypatch, capsys):
    """10 runs, spot notices on 3 instances, the launching process SIGKILLed right after its
    launch and no chester process on the laptop: the supervisor instance requeues the 3 (as
    attempt 2, each started once), the 10 succeed, the supervisor terminates itself, nothing
    is left running; then `chester status` brings the store up to date from its journal."""
    policy = _policy()
    _profile("chester-supervisor", policy)
    calls = tmp_path / "calls.txt"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORDER)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("CHESTER_TEST_CALLS", str(calls))
    env = _env(tmp_path, max_requeues=1, supervise=True, supervise_interval_s=0.5,
               supervisor_instance_profile="chester-supervisor")
    gate = tmp_path / "gate"
    servers = frozenset(_children(farm))  # the session's servers, started before this test
    variants = [{"i": i, "preempt": i < 3, "gate": str(gate)} for i in range(10)]
    sweep, sup, spec = _launch_and_kill(tmp_path, env, variants, site)
    assert _children(farm, servers) == []  # no chester process on the laptop from here on
    s3 = boto3.client("s3", region_name=REGION)
    tokens = [h["token"] for h in spec["handles"]]
    assert len(tokens) == 10
    until(lambda: all(_record(s3, sweep, t).get("state") == "running" for t in tokens),
          timeout=90, what="every run running")
    firsts = {t: _record(s3, sweep, t)["instance"] for t in tokens}
    by_index = {}
    for h in spec["handles"]:
        var = json.loads(Path(h["local_dir"], "variant.json").read_text())
        by_index[var["i"]] = h["token"]
    preempted = [by_index[i] for i in range(3)]
    for t in preempted:
        farm.interrupt(firsts[t])
    until(lambda: all(_record(s3, sweep, t).get("attempt") == 2 for t in preempted),
          timeout=90, what="the 3 preempted runs on attempt 2")
    gate.write_text("")  # the other 7 end
    until(lambda: all(_record(s3, sweep, t).get("state") == "succeeded" for t in tokens),
          timeout=90, what="every run succeeded")
    until(lambda: all(i["State"]["Name"] == "terminated" for i in _instances(sweep)),
          timeout=60, what="every instance, the supervisor's too, terminated")
    until(lambda: all(i.done and i.proc.poll() is not None for i in farm.instances.values()),
          timeout=30, what="every instance's processes gone")
    insts = _instances(sweep)
    (sup_inst,) = [i for i in insts if _tags(i).get("chester:role") == "supervisor"]
    assert sup_inst["InstanceId"] == sup and sup_inst["InstanceType"] == "t3.nano"
    assert "InstanceLifecycle" not in sup_inst  # on-demand
    assert sorted(_tags(i).get("chester:attempt", "1") for i in insts
                  if "chester:group" in _tags(i)) == ["1"] * 10 + ["2"] * 3
    # the supervisor started each attempt 2, once, through the exactly-once step
    tries = s3_keys(f"chester/sweeps/{sweep}/ctl/attempts/")
    assert sorted(k.rsplit("/", 2)[1] + "/" + k.rsplit("/", 1)[1] for k in tries) == \
        ["2/1.end.json"] * 3 + ["2/1.json"] * 3
    journal = [json.loads(line) for line in s3.get_object(
        Bucket="chester-test", Key=f"chester/sweeps/{sweep}/supervisor/journal.jsonl")[
        "Body"].read().decode().splitlines()]
    assert journal[0]["event"] == "started" and journal[-1]["event"] == "done"
    requeued = {e["token"]: e for e in journal if e["event"] == "requeued"}
    assert sorted(requeued) == sorted(preempted)
    assert {e["attempt"] for e in requeued.values()} == {2}
    # every API action the supervisor called is in the documented policy (and its ACTIONS)
    from chester_backend_ec2 import supervisor

    called = {f"{svc}:{S3_ACTIONS.get(op, op) if svc == 's3' else op}"
              for svc, op in (line.split(":") for line in calls.read_text().split())}
    assert {"ec2:DescribeInstances", "ec2:RunInstances", "s3:PutObject"} <= called
    if "ec2:RunInstances" in called:
        called |= {"ec2:CreateTags", "iam:PassRole"}  # tags and a profile at launch
    assert called <= _allowed(policy), called - _allowed(policy)
    assert _allowed(policy) == set(supervisor.ACTIONS)
    # the laptop comes back: chester status reads the journal into the store
    rows = _cli_rows(env, monkeypatch, capsys, "supervised")
    rows = rows.get("runs", rows) if isinstance(rows, dict) else rows
    assert sorted(r["state"] for r in rows) == ["succeeded"] * 10
    assert sorted(r["attempt"] or 1 for r in rows) == [1] * 7 + [2] * 3
    # each requeue is in the run's history at the time the supervisor made it
    for r in rows:
        if r["attempt"] == 2:
            hist = _cli_rows(env, monkeypatch, capsys, r["ref"])["history"]
            ev = requeued[next(t for t in preempted if _record(s3, sweep, t)["instance"] ==
                               r["remote_id"])]
            assert {"at": ev["at"], "state": "requeued", "reason": "preempted; the supervisor "
                    f"started instance 2 ({ev['instance']})"} in hist, hist
    assert _children(farm, servers) == []


def test_a_supervisor_profile_missing_an_action_is_refused_at_submit(tmp_path, farm):
    """The submit checks the supervisor's instance profile against every action it calls."""
    from chester.plugin.errors import UserError

    policy = _policy()
    for st in policy["Statement"]:
        if st["Sid"] == "StopOnlySweepInstances":
            st["Action"] = ["ec2:CancelSpotInstanceRequests"]
    _profile("too-narrow", policy)
    env = _env(tmp_path, supervise=True, supervisor_instance_profile="too-narrow")
    with pytest.raises(UserError, match=r"'too-narrow' does not allow ec2:TerminateInstances"):
        launch_fn(env, "ec2sup", "fn_sup", [{"gate": str(tmp_path / "gate")}], "narrow")


def test_status_shows_the_supervisor_and_cancel_stops_it(tmp_path, farm):
    """While runs go on, each says how the supervisor is (alive, last and next cycle); a
    cancel of every run of the sweep stops it, and its instance terminates."""
    env = _env(tmp_path, supervise=True, supervise_interval_s=0.5, cancel_grace_s=5)
    sweep = launch_fn(env, "ec2sup", "fn_sup", [{"i": i, "gate": str(tmp_path / "gate")}
                                                for i in range(2)], "cancelled")
    key = sweep.runs[0].handle.get("sweep")
    (sup,) = [i for i in _instances(key) if _tags(i).get("chester:role") == "supervisor"]

    def alive():
        rows = sweep.refresh()
        return all(r.state.value == "running" and
                   re.search(r"supervisor alive, last cycle \S+, next \S+", r.pending_reason or "")
                   for r in rows)

    until(alive, timeout=90, what="both runs running, the supervisor alive")
    sweep.cancel()
    until(lambda: all(i["State"]["Name"] == "terminated" for i in _instances(key)),
          timeout=60, what="every instance, the supervisor's too, terminated")
    s3 = boto3.client("s3", region_name=REGION)
    journal = s3.get_object(Bucket="chester-test",
                            Key=f"chester/sweeps/{key}/supervisor/journal.jsonl")["Body"].read()
    assert json.loads(journal.splitlines()[-1])["event"] == "stopped"
    assert sup["InstanceId"] in {i["InstanceId"] for i in _instances(key)}
    assert {s.value for s in sweep.status().values()} == {"cancelled"}


def test_the_supervisor_requeues_a_run_whose_instance_was_terminated_under_it(
        tmp_path, farm, monkeypatch, capsys):
    """The launching process SIGKILLed right after its launch, no chester process on the
    laptop: an instance is terminated under its running run (as a user or AWS would); the
    supervisor starts the group's next instance once, the run succeeds as attempt 2, the
    others as attempt 1, and nothing is left running; `chester status` then shows the
    requeue in the run's history."""
    env = _env(tmp_path, max_requeues=1, supervise=True, supervise_interval_s=0.5)
    gate = tmp_path / "gate"
    servers = frozenset(_children(farm))
    variants = [{"i": i, "gate": str(gate)} for i in range(3)]
    sweep, sup, spec = _launch_and_kill(tmp_path, env, variants)
    assert _children(farm, servers) == []
    s3 = boto3.client("s3", region_name=REGION)
    tokens = [h["token"] for h in spec["handles"]]
    until(lambda: all(_record(s3, sweep, t).get("state") == "running" for t in tokens),
          timeout=90, what="every run running")
    lost = tokens[0]
    first = _record(s3, sweep, lost)["instance"]
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[first])
    # fn_sup returns at once on attempt 2: the others still wait for the gate
    until(lambda: _record(s3, sweep, lost).get("attempt") == 2 and
          _record(s3, sweep, lost).get("state") == "succeeded", timeout=90,
          what="the lost run done as attempt 2")
    assert [_record(s3, sweep, t).get("state") for t in tokens[1:]] == ["running"] * 2
    second = _record(s3, sweep, lost)["instance"]
    gate.write_text("")
    until(lambda: all(_record(s3, sweep, t).get("state") == "succeeded" for t in tokens),
          timeout=90, what="every run succeeded")
    until(lambda: all(i["State"]["Name"] == "terminated" for i in _instances(sweep)),
          timeout=60, what="every instance, the supervisor's too, terminated")
    until(lambda: all(i.done and i.proc.poll() is not None for i in farm.instances.values()),
          timeout=30, what="every instance's processes gone")
    insts = _instances(sweep)
    assert sorted(_tags(i).get("chester:attempt", "1") for i in insts
                  if "chester:group" in _tags(i)) == ["1", "1", "1", "2"]
    assert [_record(s3, sweep, t)["attempt"] for t in tokens] == [2, 1, 1]
    tries = s3_keys(f"chester/sweeps/{sweep}/ctl/attempts/")
    assert sorted(k.rsplit("/", 2)[1] + "/" + k.rsplit("/", 1)[1] for k in tries) == \
        ["2/1.end.json", "2/1.json"]
    journal = [json.loads(line) for line in s3.get_object(
        Bucket="chester-test", Key=f"chester/sweeps/{sweep}/supervisor/journal.jsonl")[
        "Body"].read().decode().splitlines()]
    assert journal[-1]["event"] == "done"
    (ev,) = [e for e in journal if e["event"] == "requeued"]
    assert (ev["token"], ev["attempt"], ev["instance"], ev["why"]) == \
        (lost, 2, second, f"lost with instance {first}")
    # the laptop comes back: the store learns the requeue and the attempts
    rows = _cli_rows(env, monkeypatch, capsys, "supervised")
    rows = rows.get("runs", rows) if isinstance(rows, dict) else rows
    assert sorted(r["state"] for r in rows) == ["succeeded"] * 3
    (row,) = [r for r in rows if r["remote_id"] == second]
    assert row["attempt"] == 2
    hist = _cli_rows(env, monkeypatch, capsys, row["ref"])["history"]
    assert {"at": ev["at"], "state": "requeued", "reason": f"lost with instance {first}; "
            f"the supervisor started instance 2 ({second})"} in hist, hist
    assert _children(farm, servers) == []
