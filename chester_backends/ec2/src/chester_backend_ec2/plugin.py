"""The ``ec2`` backend plugin: runs on EC2 instances, code and results through S3.

S3 layout under ``s3://<bucket>/<prefix>/``::

    code/objects/<sha256>                 one object per unique file content (shared by sweeps)
    code/manifests/<sha256>.json          {"files": {rel: [sha256, mode]}}
    agent/<sha256>.py                     the instance agent
    sweeps/<sweep>/instances/<group>.json the spec of one instance (its runs, setup)
    sweeps/<sweep>/runs/<token>/...       each run folder, both ways (a growing file as
                                          <rel>.chester-seg/<gen>/<offset> segments)
    sweeps/<sweep>/ctl/status/<token>.json status records written by the instance
    sweeps/<sweep>/ctl/cancel/<token>     cancel markers written by the launcher
    sweeps/<sweep>/ctl/heartbeat/<group>.json  the agent's heartbeat (its LastModified counts)
    sweeps/<sweep>/ctl/attempts/<group>/<n>/<k>[.end].json  try k to start the group's
                                          instance n, taken by one process (requeue.py)
    sweeps/<sweep>/ctl/claims/<token>/<n>      attempt n of a run claimed by one instance
    sweeps/<sweep>/ctl/stolen/<group>.json     runs a group's instance took from other groups

boto3 is imported lazily (``aws.client``), never when the plugin is loaded.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from chester.logs import get_logger
from chester.plugin.errors import UserError
from chester.plugin.manager import hookimpl
from chester.plugin.records import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    Capacity,
    PreparedSweep,
    PullPatterns,
    PullResult,
    RunHandle,
    RunSpec,
    RunStatus,
    Spend,
    State,
)
from chester.remote import paths
from chester.remote.backend import Backend, hook_function
from chester.remote.sync import decide
from chester.target import states
from chester.target.rundir import CANCELLED_BY, clock
from chester_backend_ec2 import aws
from chester_backend_ec2.options import Ec2Options
from chester_backend_ec2.requeue import GONE, Tries

NAME = "ec2"
SWEEP_TAG = "chester:sweep"
GROUP_TAG = "chester:group"
ATTEMPT_TAG = "chester:attempt"
#: Files of a run folder that never come back (they went out from here).
NEVER_PULLED = (".chester/payload.pkl",)
PULL_STATE = ".chester/ec2-pulled.json"
ALIVE = ("pending", "running")
log = get_logger()


# -- keys ----------------------------------------------------------------------------------------
def _root(o: Ec2Options) -> str:
    return (o.prefix.strip("/") + "/") if o.prefix.strip("/") else ""


def sweep_key(backend: BackendConfig, exp_prefix: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", exp_prefix)[:60].strip("-") or "sweep"
    import hashlib

    h = hashlib.sha256(f"{backend.project_path}\0{backend.name}\0{exp_prefix}".encode())
    return f"{safe}-{h.hexdigest()[:10]}"


def sweep_prefix(o: Ec2Options, sweep: str) -> str:
    return f"{_root(o)}sweeps/{sweep}/"


# -- prepare -------------------------------------------------------------------------------------


def _user_data(o: Ec2Options, spec_key: str, agent_key: str, attempt: int = 1) -> str:
    from chester_backend_ec2 import render

    return render.user_data(bucket=o.bucket, spec_key=spec_key, agent_key=agent_key,
                            region=o.region, endpoint_url=o.endpoint_url, python=o.python,
                            bootstrap=o.bootstrap_commands, max_lifetime_s=o.max_lifetime_s,
                            attempt=attempt)


def heartbeat_interval(o: Ec2Options) -> float:
    """How often the agent writes its heartbeat: five per ``heartbeat_timeout_s``."""
    return max(min(o.watch_interval_s, 1.0), min(60.0, o.heartbeat_timeout_s / 5))


def _time_limit(o: Ec2Options, r: RunSpec) -> float | None:
    v = r.resources.get("time_limit_s", o.time_limit_s) if r.resources else o.time_limit_s
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise UserError(f"ec2 backend: run {r.name}: time_limit_s must be seconds, got "
                        f"{v!r}") from None
    if v <= 0:
        raise UserError(f"ec2 backend: run {r.name}: time_limit_s must be > 0, got {v!r}")
    return v


def _run_args(backend: BackendConfig, sweep: str, gtok: str, user_data: str,
              redact: bool = False, attempt: int = 1, instance_type: str | None = None,
              subnet_id: str | None = None, spot: bool | None = None) -> dict[str, Any]:
    o: Ec2Options = backend.options
    spot = o.spot if spot is None else spot
    tags = _tags(o, sweep) + [{"Key": GROUP_TAG, "Value": gtok}]
    if attempt > 1:
        tags.append({"Key": ATTEMPT_TAG, "Value": str(attempt)})
    args: dict[str, Any] = dict(o.run_instances_extra)
    args.update(
        ImageId=o.image_id, InstanceType=instance_type or o.instance_type, MinCount=1,
        MaxCount=1,
        ClientToken=gtok if attempt == 1 else f"{gtok}-a{attempt}", UserData="<user-data>" if redact else user_data,
        InstanceInitiatedShutdownBehavior="terminate",
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled",
                         "HttpPutResponseHopLimit": 1, "InstanceMetadataTags": "disabled"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                           {"ResourceType": "volume", "Tags": tags}],
    )
    if o.key_name:
        args["KeyName"] = o.key_name
    if subnet_id or o.subnet_id:
        args["SubnetId"] = subnet_id or o.subnet_id
    if o.security_group_ids:
        args["SecurityGroupIds"] = list(o.security_group_ids)
    if o.iam_instance_profile:
        prof = o.iam_instance_profile
        args["IamInstanceProfile"] = {"Arn": prof} if prof.startswith("arn:") else {"Name": prof}
    if spot:
        opts: dict[str, Any] = {"InstanceInterruptionBehavior": o.interruption_behavior,
                                "SpotInstanceType": "one-time" if o.interruption_behavior ==
                                "terminate" else "persistent"}
        if o.max_price:
            opts["MaxPrice"] = str(o.max_price)
        args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": opts}
        # the spot request carries the tags too: cancel and cleanup find it by them
        args["TagSpecifications"].append({"ResourceType": "spot-instances-request",
                                          "Tags": tags})
    return args


# -- submit --------------------------------------------------------------------------------------
def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def _list(s3: Any, bucket: str, prefix: str) -> list[dict]:
    out: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Contents", ()))
    return out


def upload_code(s3: Any, o: Ec2Options, data: Mapping[str, Any]) -> int:
    """Upload the snapshot's missing objects and its manifest; return the bytes sent."""
    from concurrent.futures import ThreadPoolExecutor

    if _exists(s3, o.bucket, data["manifest_key"]):
        return 0
    prefix = f"{_root(o)}code/objects/"
    have = {obj["Key"][len(prefix):] for obj in _list(s3, o.bucket, prefix)}
    missing = [(d, p) for d, p in sorted(data["paths"].items()) if d not in have]
    if missing:
        with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
            for fut in [pool.submit(s3.upload_file, p, o.bucket, prefix + d) for d, p in missing]:
                fut.result()
    sent = sum(os.path.getsize(p) for _, p in missing)
    body = data["manifest"].encode()
    s3.put_object(Bucket=o.bucket, Key=data["manifest_key"], Body=body)
    return sent + len(body)


def supervisor_cost(o: Ec2Options, ec2: Any, inst: Mapping | None) -> str:
    """The supervisor's part of the submit line: its instance and its cost per hour."""
    from chester_backend_ec2 import prices

    itype = (inst or {}).get("InstanceType") or o.supervisor_instance_type
    usd, _ = prices.on_demand(o, itype)
    cost = "cost unknown" if usd is None else f"{prices.usd(usd)}/h"
    if inst is None:
        return f"an on-demand {itype}, {cost}"
    return f"supervisor {inst['InstanceId']} (on-demand {itype}, {cost})"


def launch_summary(o: Ec2Options, ec2: Any, sweep: str, insts: Sequence[Mapping],
                   started: int) -> str:
    """The line a submit prints: how many instances run, which, and what they cost per hour
    (spot: the current spot price of the type in its zone; on-demand: ``hourly_price`` or
    the list price table of :mod:`chester_backend_ec2.prices`; else unknown)."""
    from chester_backend_ec2 import prices

    kinds: dict[str, int] = {}
    for i in insts:
        k = f"{'spot' if i.get('InstanceLifecycle') == 'spot' else 'on-demand'} " \
            f"{i.get('InstanceType') or '?'}"
        kinds[k] = kinds.get(k, 0) + 1
    what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    cost = prices.total_line(prices.instance_prices(o, ec2, insts))
    return (f"ec2: sweep {sweep}: {len(insts)} instance(s), {started} started now ({what}); "
            f"estimated cost {cost}")


#: run_instances errors that mean "no capacity for this type/zone/market": the next one is
#: tried. See docs/backends/ec2.md for the AWS pages these codes come from.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded", "InsufficientHostCapacity", "Unsupported",
    "UnfulfillableCapacity",
})


def placements(o: Ec2Options) -> list[tuple[str, str | None, bool]]:
    """(instance type, subnet, spot) in the order they are tried."""
    types = list(dict.fromkeys([o.instance_type, *o.instance_types]))
    subnets: list[str | None] = list(dict.fromkeys(
        [s for s in (o.subnet_id, *o.subnet_ids) if s])) or [None]
    markets = [o.spot] + ([False] if o.spot and o.on_demand_fallback else [])
    return [(t, sn, m) for m in markets for t in types for sn in subnets]


def launch_sequential(backend: BackendConfig, ec2: Any, sweep: str, gtok: str, user_data: str,
                      attempt: int = 1) -> dict:
    """Start one instance, trying the next type, subnet (zone) and market on a capacity error.

    Each placement has its own ClientToken (a token reused with other arguments is an
    error at AWS); a lost response is found again by the group tag (see submit)."""
    from botocore.exceptions import ClientError

    from chester.plugin.errors import BackendError, TransientBackendError
    from chester_backend_ec2 import aws

    o: Ec2Options = backend.options
    tried: list[str] = []
    options = placements(o)
    with aws.errors("run_instances", ec2):
        for k, (itype, subnet, spot) in enumerate(options):
            args = _run_args(backend, sweep, gtok, user_data, attempt=attempt,
                             instance_type=itype, subnet_id=subnet, spot=spot)
            if k:
                args["ClientToken"] = f"{args['ClientToken']}-c{k}"
            try:
                return ec2.run_instances(**args)["Instances"][0]
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "?")
                if code not in CAPACITY_CODES or len(options) == 1:
                    raise
                tried.append(f"{itype} {'spot' if spot else 'on-demand'} in "
                             f"{subnet or 'the default subnet'}: {code}")
        msg = ("ec2 backend: no capacity for any placement tried: " + "; ".join(tried) +
               " (add instance_types or subnet_ids, or set on_demand_fallback)")
        if any("InsufficientInstanceCapacity" in t for t in tried):
            raise TransientBackendError(msg)
        raise BackendError(msg)


# -- EC2 Fleet -----------------------------------------------------------------------------------
class _FleetUnavailable(Exception):
    """The endpoint or the launcher's permissions do not allow EC2 Fleet (launch_api auto)."""


#: error codes that say "this endpoint/identity cannot use fleets" rather than "no capacity"
FLEET_UNAVAILABLE_CODES = frozenset({
    "InvalidAction", "UnsupportedOperation", "NotImplemented", "UnauthorizedOperation",
    "AccessDenied", "AccessDeniedException",
})


def _tags(o: Ec2Options, sweep: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": str(v)} for k, v in sorted(o.tags.items())] + \
        [{"Key": "Name", "Value": f"chester-{sweep}"[:256]}, {"Key": SWEEP_TAG, "Value": sweep}]


def fleet_args(backend: BackendConfig, sweep: str, gtok: str, user_data: str, template: str,
               spot: bool, attempt: int = 1) -> dict[str, Any]:
    """One CreateFleet call of type ``instant`` for one instance: every (type, subnet) pool
    as an override of the sweep's launch template, the group's user-data and tags."""
    import base64

    o: Ec2Options = backend.options
    tags = _tags(o, sweep) + [{"Key": GROUP_TAG, "Value": gtok}]
    if attempt > 1:
        tags.append({"Key": ATTEMPT_TAG, "Value": str(attempt)})
    pools = list(dict.fromkeys((t, sn) for t, sn, _ in placements(o)))
    overrides = []
    for prio, (itype, subnet) in enumerate(pools):
        ov: dict[str, Any] = {"InstanceType": itype, "Priority": float(prio)}
        if subnet:
            ov["SubnetId"] = subnet
        if spot and o.max_price:
            ov["MaxPrice"] = str(o.max_price)
        overrides.append(ov)
    args: dict[str, Any] = {
        "Type": "instant",
        "ClientToken": f"{gtok}-a{attempt}-{'s' if spot else 'o'}",
        "TargetCapacitySpecification": {"TotalTargetCapacity": 1,
                                        "DefaultTargetCapacityType":
                                            "spot" if spot else "on-demand"},
        "LaunchTemplateConfigs": [{
            "LaunchTemplateSpecification": {
                "LaunchTemplateName": template, "Version": "$Default",
                "LaunchTemplateSpecificationUserData":
                    base64.b64encode(user_data.encode()).decode()},
            "Overrides": overrides}],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
    }
    if spot:
        args["SpotOptions"] = {"AllocationStrategy": o.allocation_strategy,
                               "InstanceInterruptionBehavior": "terminate"}
    else:  # in the order the user listed types and subnets
        args["OnDemandOptions"] = {"AllocationStrategy": "prioritized"}
    return args


def check_gpus(o: Ec2Options, ec2: Any) -> None:
    """Packed runs get ``gpus_per_run`` GPUs each: every instance type tried must have
    ``runs_per_instance × gpus_per_run`` of them (DescribeInstanceTypes' ``GpuInfo``)."""
    from botocore.exceptions import ClientError

    from chester_backend_ec2 import aws

    need = o.runs_per_instance * o.gpus_per_run
    if o.runs_per_instance < 2 or not need:
        return
    types = sorted({t for t, _, _ in placements(o)})
    try:
        found = ec2.describe_instance_types(InstanceTypes=types)["InstanceTypes"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
            return  # the launcher may not describe types: the run's own CUDA check will say
        with aws.errors("describing instance types", ec2, sent=False):
            raise
    for it in found:
        have = sum(int(g.get("Count") or 0) for g in (it.get("GpuInfo") or {}).get("Gpus", ()))
        if have < need:
            raise UserError(
                f"ec2 backend: {it['InstanceType']} has {have} GPU(s) but runs_per_instance="
                f"{o.runs_per_instance} x gpus_per_run={o.gpus_per_run} needs {need}: lower "
                "runs_per_instance, set gpus_per_run: 0 for CPU runs, or pick a type with "
                f"{need} GPUs")


def _describe(ec2: Any, filters: list[dict]) -> list[dict]:
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for res in page.get("Reservations", ()):
            out.extend(res.get("Instances", ()))
    return out


def _tag(inst: Mapping, key: str) -> str | None:
    for t in inst.get("Tags", ()):
        if t["Key"] == key:
            return t["Value"]
    return None


def _check_actions(iam: Any, prof: str, profile: Mapping, actions: Sequence[str]) -> None:
    """Refuse an instance profile whose roles' policies (inline and attached) do not allow
    every one of ``actions`` (a pattern like ``ec2:*`` allows what it matches)."""
    import fnmatch
    import urllib.parse

    allowed: list[str] = []
    for role in profile.get("Roles", ()):
        docs = [iam.get_role_policy(RoleName=role["RoleName"], PolicyName=n)["PolicyDocument"]
                for n in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]]
        for att in iam.list_attached_role_policies(RoleName=role["RoleName"])[
                "AttachedPolicies"]:
            ver = iam.get_policy(PolicyArn=att["PolicyArn"])["Policy"]["DefaultVersionId"]
            docs.append(iam.get_policy_version(PolicyArn=att["PolicyArn"], VersionId=ver)[
                "PolicyVersion"]["Document"])
        for doc in docs:
            if isinstance(doc, str):
                doc = json.loads(urllib.parse.unquote(doc))
            stmts = doc.get("Statement", [])
            for st in [stmts] if isinstance(stmts, dict) else stmts:
                if st.get("Effect") == "Allow":
                    act = st.get("Action", [])
                    allowed += [act] if isinstance(act, str) else list(act)
    missing = [a for a in actions
               if not any(fnmatch.fnmatchcase(a.lower(), p.lower()) for p in allowed)]
    if missing:
        raise UserError(f"ec2 backend: the supervisor's instance profile {prof!r} does not allow "
                        f"{', '.join(missing)}: give its role the supervisor policy in "
                        "docs/backends/ec2.md (or set supervisor_instance_profile)")


# -- status --------------------------------------------------------------------------------------


def _sweeps(handles: Sequence[RunHandle]) -> dict[str, list[RunHandle]]:
    out: dict[str, list[RunHandle]] = {}
    for h in handles:
        out.setdefault(h.get("sweep") or "", []).append(h)
    return out


@attrs.define
class Ctl:
    """What the ``ctl/`` prefix of a sweep holds."""

    records: dict[str, dict] = attrs.Factory(dict)  # token -> status record
    #: token -> ETag of its status record as read: a verdict replaces only that one
    etags: dict[str, str] = attrs.Factory(dict)
    cancels: set[str] = attrs.Factory(set)  # tokens with a cancel marker
    cancelled_by: dict[str, str] = attrs.Factory(dict)  # token -> who, when its marker says
    beats: dict[str, float] = attrs.Factory(dict)  # group -> time of its last heartbeat
    attempts: dict[str, Tries] = attrs.Factory(dict)  # group -> its tries (requeue.py)


#: records that end a run for good (the rule's)
FINAL_RECORDS = states.FINAL
#: who wrote a verdict record (status polls: a bound or a lost instance), in its ``by``
LAUNCHER = "launcher"
#: a ``lost`` verdict's flag: the run went with its instance while it ran, and the group's
#: next instance (a requeue) runs its next attempt; the agent does not take it as final
INSTANCE_LOST = "instance_lost"


def _spot_reclaimed(inst: Mapping | None) -> bool:
    if not inst:
        return False
    reason = (inst.get("StateReason") or {}).get("Code", "") + " " + \
        inst.get("StateTransitionReason", "")
    return "Spot" in reason or "spot" in reason


def to_status(h: RunHandle, inst: Mapping | None, rec: Mapping | None,
              cancelled: bool, cancelled_by: str | None = None) -> RunStatus:
    """One run's state from its instance (None: gone), status record and cancel marker
    (``cancelled_by``: who wrote it, when the marker says).

    The record is what the agent published, read on the instance by the one rule
    (:mod:`chester.target.states`); an end it holds decides by that rule here too (an agent
    of an earlier chester did not say whether ``.done`` was there: its success stands).
    What only EC2 tells (the instance is gone, a spot reclaim, a requeue) decides the rest."""
    istate = (inst or {}).get("State", {}).get("Name", "gone")
    iid = (inst or {}).get("InstanceId") or h.remote_id
    alive = istate in ALIVE
    kw: dict[str, Any] = {"remote_id": iid}
    by = f"cancelled by {cancelled_by}" if cancelled_by else None
    if rec:
        kw.update(reason=rec.get("reason"), stderr_tail=rec.get("stderr_tail"),
                  exit_code=rec.get("exit_code"), attempt=rec.get("attempt"),
                  started_at=rec.get("started_at"), ended_at=rec.get("ended_at"))
        st = rec.get("state")
        if alive and not rec.get("preempted") and not cancelled and \
                _number(inst or {}) > _launch(rec) and \
                (rec.get(INSTANCE_LOST) or st in (states.RUNNING, states.TERMINATED)):
            # the record is of the group's earlier instance, lost with the run: this one
            # runs the run's next attempt (its agent publishes it once it starts)
            return RunStatus(state=State.REQUEUED, remote_id=iid, attempt=rec.get("attempt"),
                             pending_reason=f"lost with instance {rec.get('instance') or '?'}"
                                            f"; started again on {iid} (instance "
                                            f"{_number(inst or {})})")
        if rec.get("ended_at") is not None or st in states.FINAL:
            v = states.from_end(rec, done=rec.get("done", True), cancel=cancelled)
            if not v.get("stopped"):  # a signal's stop: EC2 may know why (below)
                reason = by if v["state"] == states.CANCELLED and by else v["reason"]
                return RunStatus(state=State(v["state"]), **{
                    **kw, "reason": reason, "exit_code": v["exit_code"],
                    "stderr_tail": None if v["state"] == states.SUCCEEDED else
                    kw["stderr_tail"]})
        if cancelled and not alive:  # the instance went with the run, after a cancel
            return RunStatus(state=State.CANCELLED,
                             **{**kw, "reason": by or states.CANCELLED_REASON})
        if rec.get("preempted") and alive and \
                int(_tag(inst or {}, ATTEMPT_TAG) or 1) > int(rec.get("launch") or
                                                              rec.get("attempt") or 1):
            return RunStatus(state=State.REQUEUED, remote_id=iid, attempt=rec.get("attempt"),
                             pending_reason=f"preempted; started again on {iid}")
        if rec.get("preempted"):
            if alive and st == "running":
                # the two-minute notice: the run goes on until the instance is taken
                return RunStatus(state=State.RUNNING, **{
                    **kw, "pending_reason": f"spot interruption notice on {iid}"})
            kw["reason"] = f"spot interruption of {iid}; the run did not finish"
            return RunStatus(state=State.PREEMPTED, **kw)
        if st == states.TERMINATED:
            if _spot_reclaimed(inst):
                kw["reason"] = f"instance {iid} stopped the run ({rec.get('reason')})"
                return RunStatus(state=State.PREEMPTED, **kw)
            if inst is None or istate in GONE:  # its shutdown stopped it: the instance went
                kw["reason"] = (f"instance {iid} is {istate}: its shutdown stopped the run "
                                f"({rec.get('reason')})")
                return RunStatus(state=State.LOST, **kw)
            kw["reason"] = f"instance {iid} stopped the run ({rec.get('reason')})"
            return RunStatus(state=State.FAILED, **kw)
        if st == "running":
            if alive:
                return RunStatus(state=State.RUNNING, **kw)
            if _spot_reclaimed(inst):
                return RunStatus(state=State.PREEMPTED, **{**kw, "reason":
                                 f"spot interruption of {iid}"})
            return RunStatus(state=State.LOST, **{**kw, "reason":
                             f"instance {iid} is {istate} but the run never ended"})
    if cancelled and not alive:
        return RunStatus(state=State.CANCELLED, remote_id=iid,
                         reason=by or states.CANCELLED_REASON)
    if alive or (cancelled and alive):
        return RunStatus(state=State.QUEUED, remote_id=iid,
                         pending_reason=f"instance {iid} {istate}, setting up")
    if istate in ("stopping", "stopped"):
        return RunStatus(state=State.PREEMPTED if _spot_reclaimed(inst) else State.QUEUED,
                         remote_id=iid, pending_reason=f"instance {iid} is {istate}")
    if _spot_reclaimed(inst):
        return RunStatus(state=State.PREEMPTED, remote_id=iid,
                         reason=f"spot interruption of {iid} before the run started")
    return RunStatus(state=State.LOST, remote_id=iid,
                     reason=f"instance {iid} is {istate} and left no status record (its "
                     f"bootstrap may have failed: see `aws ec2 get-console-output "
                     f"--instance-id {iid}`)")


def _number(inst: Mapping) -> int:
    """The instance's number in its group (its ``chester:attempt`` tag; 1 untagged)."""
    try:
        return int(_tag(inst, ATTEMPT_TAG) or 1)
    except ValueError:
        return 1


def _launch(rec: Mapping) -> int:
    """The number in its group of the instance that wrote ``rec`` (an older record: 1)."""
    try:
        return int(rec.get("launch") or 1)
    except (TypeError, ValueError):
        return 1


def _started_on(rec: Mapping | None, inst: Mapping | None) -> bool:
    """The record says the run started on ``inst`` (None: not listed any more): its worker
    recorded its start, and the record is of that instance (by its number in the group)."""
    if not rec or rec.get("started_at") is None and rec.get("state") != states.RUNNING:
        return False
    return inst is None or _launch(rec) == _number(inst)


def lost_with_instance(o: Ec2Options, inst: Mapping | None, rec: Mapping | None,
                       st: RunStatus, now: float, cancelled: bool = False) -> bool:
    """Whether a ``lost`` run went with its instance while it ran, so the group's next
    instance may run its next attempt (within ``max_requeues``, as a preempted one).

    Yes when the instance is gone (terminated by someone else, shutting down, or no longer
    listed) or chester terminated it for a stopped heartbeat (its record says
    :data:`INSTANCE_LOST`), and the run's worker had started there. No for a run that never
    started (a bootstrap that failed, an instance that gave no sign of its agent: the next
    instance would fail the same way), for a cancelled run, and for an instance gone at or
    after its ``max_lifetime_s`` (its own bound ended it)."""
    if st.state != State.LOST or not rec or cancelled:
        return False
    if rec.get("by") == LAUNCHER:  # its verdict on the instance now the group's latest
        return bool(rec.get(INSTANCE_LOST)) and (inst is None or _launch(rec) == _number(inst))
    if inst is not None and inst.get("State", {}).get("Name") not in GONE:
        return False
    if not _started_on(rec, inst):
        return False
    launched = _ts((inst or {}).get("LaunchTime"))
    return not (o.max_lifetime_s and launched is not None and
                now - launched >= o.max_lifetime_s)


def _current(insts: list[dict]) -> dict[str, dict]:
    """Each group's current instance: an alive one, else the one launched last."""
    by_group: dict[str, dict] = {}
    for inst in insts:
        g = _tag(inst, GROUP_TAG)
        if g is None:
            continue
        prev = by_group.get(g)
        if prev is None or (inst["State"]["Name"] in ALIVE) or \
                prev["State"]["Name"] not in ALIVE and inst.get("LaunchTime", 0) > \
                prev.get("LaunchTime", 0):
            by_group[g] = inst
    return by_group


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _members(hs: Sequence[RunHandle]) -> dict[str, list[RunHandle]]:
    out: dict[str, list[RunHandle]] = {}
    for h in hs:
        if h.get("group"):
            out.setdefault(h.get("group") or "", []).append(h)
    return out


# -- packed instances: a run taken by another group's instance ---------------------------------
def _run_group(h: RunHandle, ctl: Ctl) -> str | None:
    """The group whose instance runs ``h``: the one named in its status record (a packed
    instance's freed slot may take a run of another group), else the handle's."""
    return (ctl.records.get(h.token) or {}).get("group") or h.get("group")


def _running_members(hs: Sequence[RunHandle], ctl: Ctl) -> dict[str, list[RunHandle]]:
    """Like :func:`_members`, by the group that runs each run; every handle's own group is a
    key (possibly with no runs left: its instance is still bounded)."""
    out: dict[str, list[RunHandle]] = {g: [] for g in _members(hs)}
    for h in hs:
        g = _run_group(h, ctl)
        if g:
            out.setdefault(g, []).append(h)
    return out


def _attempts(gtok: str, insts: list[dict], ctl: Ctl) -> int:
    """How many instances the group has had: the numbers taken in S3, else the attempt tags."""
    from chester_backend_ec2 import requeue

    tags = [int(_tag(i, ATTEMPT_TAG) or 1) for i in insts if _tag(i, GROUP_TAG) == gtok]
    return max([requeue.taken(ctl.attempts.get(gtok) or {}), *tags])


def _will_requeue(o: Ec2Options, hs: Sequence[RunHandle], out: dict[str, RunStatus],
                  insts: list[dict], ctl: Ctl) -> None:
    """``preempted`` is final in chester: a run whose group may still start again reads
    ``requeued`` until that is decided."""
    for h in hs:
        st = out[h.token]
        gtok = _run_group(h, ctl)
        if st.state != State.PREEMPTED or not gtok:
            continue
        if _attempts(gtok, insts, ctl) < 1 + o.max_requeues:
            out[h.token] = attrs.evolve(
                st, state=State.REQUEUED,
                pending_reason=f"preempted; will start again ({st.reason or 'spot interruption'})")


# -- cancel --------------------------------------------------------------------------------------


# -- pull ----------------------------------------------------------------------------------------
def _wanted(rel: str, rules: list[tuple[str, str]]) -> bool:
    if rel in NEVER_PULLED:
        return False
    parts = rel.split("/")
    for k in range(1, len(parts)):
        if not decide(rules, "/".join(parts[:k]), True):
            return False
    return decide(rules, rel, False)


def _download(s3: Any, bucket: str, obj: Mapping[str, Any], path: Path, tmp: Path) -> int:
    """Write a run file (whole, or its segments joined) to ``path``; with ``append``, the
    local copy already holds that many segments and only the rest come down. Returns the
    bytes downloaded."""
    import shutil

    from chester_backend_ec2 import segments

    parts = obj["parts"]
    skip = int(obj.get("append") or 0)
    if len(parts) == 1 and not skip:
        s3.download_file(bucket, parts[0][1], str(tmp))
        os.replace(tmp, path)
        return int(parts[0][2])
    if skip:
        shutil.copyfile(path, tmp)
    n = 0
    with open(tmp, "ab" if skip else "wb") as out:
        for _offset, key, _size in parts[skip:]:
            n += segments.copy_body(s3.get_object(Bucket=bucket, Key=key)["Body"], out)
    os.replace(tmp, path)
    return n


# -- logs ----------------------------------------------------------------------------------------


def _refuse_plain_secrets(setup: str, env_script: str, runs: Sequence[RunSpec]) -> None:
    """Refuse a sweep whose setup, environment script or runs' env hold a secret: S3 would
    store it in plain text."""
    from chester_backend_ec2 import render

    seen = render.find_secret(setup + env_script + json.dumps(
        [dict(r.env) for r in runs], default=str))
    if seen:
        raise UserError(f"ec2 backend: prepare_commands, the environment setup or the runs' env "
                        f"hold {seen}, which would be stored in plain text in S3; give the "
                        "instances access through their instance role (iam_instance_profile) "
                        "and other secrets through the remote secrets option")


def _instance_groups(backend: BackendConfig, runs: Sequence[RunSpec], sweep: str,
                     scripts: dict[str, str], code: Mapping[str, Any]) -> list[dict]:
    """Split the runs into instances of ``runs_per_instance`` runs each: per group its token,
    runs, spec (what the agent runs, from ``code``: where the code, agent and scripts are) and
    user-data. The first group's user-data and RunInstances call go into ``scripts`` (shown
    before a launch); a secret in them or user-data over EC2's 16 KB is refused."""
    from chester_backend_ec2 import render

    o: Ec2Options = backend.options
    sp = code["sweep_prefix"]
    groups = []
    n = o.runs_per_instance
    for i in range(0, len(runs), n):
        members = list(runs[i:i + n])
        gtok = render.group_token(r.token for r in members)
        spec = {
            "sweep_prefix": sp, "group": gtok,
            "code": {"manifest_key": code["manifest_key"],
                     "objects_prefix": f"{_root(o)}code/objects/"},
            "code_dir": o.remote_dir, "runtime": code["runtime"],
            "setup_script": code["setup_script"], "env_script": code["env_script"],
            "worker_argv": code["worker_argv"], "gpus_per_run": o.gpus_per_run,
            "sync_interval_s": o.sync_interval_s, "watch_interval_s": o.watch_interval_s,
            "shutdown_when_done": o.shutdown_when_done,
            "max_lifetime_s": o.max_lifetime_s, "preempt_signal": o.preempt_signal,
            "heartbeat_interval_s": heartbeat_interval(o), "slots": n,
            "runs": [{"token": r.token, "name": r.name, "remote_dir": r.remote_dir,
                      "time_limit_s": _time_limit(o, r), "index": i + k}
                     for k, r in enumerate(members)],
        }
        spec_key = f"{sp}instances/{gtok}.json"
        ud = _user_data(o, spec_key, code["agent_key"])
        if i == 0:
            seen = render.find_secret(ud + json.dumps(o.tags) + json.dumps(
                o.run_instances_extra, default=str))
            if seen:
                raise UserError(f"ec2 backend: the user-data, tags or run_instances_extra hold "
                                f"{seen}; instances get their access from the instance role "
                                "(iam_instance_profile), never from user-data")
        if len(ud.encode()) > render.USER_DATA_LIMIT:
            raise UserError(f"ec2 backend: user-data is {len(ud.encode())} bytes, over EC2's "
                            f"16 KB: shorten bootstrap_commands")
        groups.append({"token": gtok, "runs": [r.token for r in members],
                       "spec_key": spec_key, "spec": spec, "user_data": ud})
        if i == 0:
            scripts["user-data"] = ud
            scripts["run_instances"] = json.dumps(_run_args(backend, sweep, gtok, ud,
                                                            redact=True), indent=1)
    return groups


def _prepare_summary(o: Ec2Options, n_runs: int, n_groups: int, snap: Mapping[str, Any],
                     fleet: bool) -> str:
    """The one line shown before a launch: runs, instances and how they start, the code
    sent, each instance's lifetime and the bound on its cost."""
    from chester_backend_ec2 import prices

    size = sum(snap["sizes"].values())
    life = f"{o.max_lifetime_s / 3600:g} h" if o.max_lifetime_s else "unbounded (!)"
    types = list(dict.fromkeys(t for t, _, _ in placements(o)))
    more = f" (or {', '.join(types[1:])})" if len(types) > 1 else ""
    how = (f"EC2 Fleet ({o.allocation_strategy})" if fleet else "RunInstances") + \
        (", on-demand if no spot capacity" if o.spot and o.on_demand_fallback else "")
    return (f"{n_runs} runs on {n_groups} {'spot' if o.spot else 'on-demand'} "
            f"{o.instance_type} instance(s){more} in {o.region or 'the default region'} "
            f"via {how}; code "
            f"{len(snap['files'])} files ({size} bytes) via s3://{o.bucket}/{_root(o)}; "
            f"each instance lives at most {life}; cost: "
            f"{prices.bound_line(o, types, n_groups)}")


def _upload_sweep(s3: Any, o: Ec2Options, d: Mapping[str, Any], runs: Sequence[RunSpec],
                  stats: dict[str, int]) -> None:
    """Send what the instances read: the code snapshot, the agent (once per version), each
    run's files and each group's spec; ``stats`` gets the bytes sent."""
    from concurrent.futures import ThreadPoolExecutor

    with aws.errors("uploading the code snapshot", s3, sent=False):
        stats["code_bytes"] = upload_code(s3, o, d)
        if not _exists(s3, o.bucket, d["agent_key"]):
            from chester_backend_ec2.render import agent_source

            s3.put_object(Bucket=o.bucket, Key=d["agent_key"], Body=agent_source())
    uploads = [(str(Path(r.local_dir) / rel), f"{d['sweep_prefix']}runs/{r.token}/{rel}")
               for r in runs
               for rel in ("variant.json", ".chester/run.json", ".chester/payload.pkl")
               if (Path(r.local_dir) / rel).exists()]
    stats["run_bytes"] = sum(os.path.getsize(p) for p, _ in uploads)
    with aws.errors("uploading run folders", s3), ThreadPoolExecutor(max_workers=8) as pool:
        futs = [pool.submit(s3.upload_file, p, o.bucket, key) for p, key in uploads]
        futs += [pool.submit(s3.put_object, Bucket=o.bucket, Key=g["spec_key"],
                             Body=json.dumps(g["spec"], sort_keys=True).encode())
                 for g in d["groups"]]
        for fut in futs:
            fut.result()


def _existing_instances(ec2: Any, d: Mapping[str, Any]) -> dict[str, dict]:
    """The sweep's instances that already exist (an earlier, interrupted submit), by group
    token."""
    existing: dict[str, dict] = {}
    gtoks = [g["token"] for g in d["groups"]]
    with aws.errors("describing instances", ec2):
        for i in range(0, len(gtoks), 200):
            for inst in _describe(ec2, [{"Name": f"tag:{GROUP_TAG}", "Values": gtoks[i:i + 200]}]):
                gtok = _tag(inst, GROUP_TAG)  # present: the filter asked for it
                if gtok is not None:
                    existing[gtok] = inst
    return existing


def _sweep_handles(backend: BackendConfig, prepared: PreparedSweep, existing: Mapping[str, dict],
                   taken: Mapping[str, str], claimed: Mapping[str, str]) -> list[RunHandle]:
    """One handle per run, in the runs' order: on the instance that claimed it, else on its
    group's instance (its own or, when freed slots took all its runs, the one that did)."""
    d = prepared.data
    by_token = {r.token: r for r in prepared.runs}
    handles = []
    for g in d["groups"]:
        inst = existing.get(g["token"]) or {"InstanceId": taken[g["token"]]}
        for tok in g["runs"]:
            r = by_token[tok]
            handles.append(RunHandle(
                run_id=r.run_id, token=r.token, backend=backend.name,
                local_dir=str(r.local_dir), remote_dir=r.remote_dir,
                remote_id=claimed.get(tok) or inst["InstanceId"], host=None,
                extra=(("sweep", d["sweep"]), ("group", g["token"]),
                       ("group_size", str(len(g["runs"]))))))
    order = {r.token: i for i, r in enumerate(prepared.runs)}
    handles.sort(key=lambda h: order[h.token])
    return handles


class Ec2Backend(Backend):
    """The ``ec2`` backend: runs on EC2 instances, code and results through S3.

    An instance keeps what this backend learns while it works, per plugin manager (one per
    ``chester`` command; a test builds its own): its boto3 clients, the status records it
    has read (by key and ETag: a record is fetched again only once it changed), the launch
    templates it made, the instance profiles it checked, the (region, endpoint) pairs that
    refused EC2 Fleet, the groups whose spot requests it cancelled, and what its last
    submit sent."""

    name = NAME

    def __init__(self) -> None:
        super().__init__()
        self.clients = aws.Clients()
        #: bytes and instances of the last submit (for the bench and tests)
        self.last_submit: dict[str, int] = {}
        self._records: dict[tuple[str, str, str], dict] = {}
        #: (region, endpoint) where CreateFleet/CreateLaunchTemplate was refused as
        #: unsupported or not permitted: launch_api auto uses RunInstances there from then on
        self._no_fleet: set[tuple[str | None, str | None]] = set()
        self._templates: set[str] = set()
        #: one CreateLaunchTemplate at a time: the groups of a submit launch in parallel
        self._template_lock = threading.Lock()
        self._template_fields: frozenset[str] | None = None
        self._checked_profiles: set[tuple[str | None, str]] = set()
        self._released: set[str] = set()

    def spec(self) -> BackendSpec:
        return BackendSpec(
            name=NAME, summary="EC2 instances (spot by default), code and results through S3",
            options_cls=Ec2Options,
            capabilities=Capabilities(remote=True, shared_fs=False, supports_arrays=False,
                                      idempotent_submit=True, needs_code_sync=True,
                                      status_poll_interval_s=30.0),
            remote_root=lambda o: o.remote_dir)

    def client(self, kind: str, options: Ec2Options) -> Any:
        """This instance's boto3 client of ``kind`` (``s3``, ``ec2``, ``iam``), made on first
        use (:class:`chester_backend_ec2.aws.Clients`)."""
        return self.clients.get(kind, options)

    @hookimpl
    def chester_capacity(self, backend: BackendConfig, runs: Sequence[RunSpec]) -> Capacity:
        """A paid member: what a run costs at most (:func:`.costs.capacity`); no AWS call."""
        from chester_backend_ec2 import costs

        o: Ec2Options = backend.options
        return costs.capacity(o, [_time_limit(o, r) for r in runs])

    @hookimpl
    def chester_spend(self, backend: BackendConfig, handles: Sequence[RunHandle]) -> Spend:
        """What these runs' instances have cost and may still cost (one DescribeInstances
        for the sweeps; :func:`.costs.spend`)."""
        from chester_backend_ec2 import costs, prices

        o: Ec2Options = backend.options
        ec2 = self.client("ec2", o)
        with aws.errors("describing instances", ec2):
            insts = _describe(ec2, [{"Name": f"tag:{SWEEP_TAG}",
                                     "Values": sorted(_sweeps(handles))}])
        return costs.spend(o, insts, handles, prices.instance_prices(o, ec2, insts),
                           now=time.time(), alive=ALIVE, group_tag=GROUP_TAG, launched=_ts)

    @hookimpl
    def chester_register_commands(self, subparsers: Any) -> None:
        """``chester ec2 ls`` / ``chester ec2 kill`` (see :mod:`chester_backend_ec2.cli`)."""
        from chester_backend_ec2 import cli

        cli.register(subparsers, self)

    @hookimpl
    def chester_prepare(self, backend: BackendConfig, runs: Sequence[RunSpec],
                        staging_dir: Path) -> PreparedSweep:
        """Plan the sweep's instances and what each runs: the code snapshot and its
        manifest, the agent, one spec and user-data per group of runs, the calls shown before
        a launch and the summary. Refuses a sweep without an image, with a secret that would
        land in S3 or user-data, or with options a launch template cannot hold."""
        from chester_backend_ec2 import render

        o: Ec2Options = backend.options
        if not o.image_id:
            raise UserError("ec2 backend: set image_id (an AMI with python3) in chester.yaml")
        if not runs:
            raise UserError("ec2 backend: nothing to launch")
        sweep = sweep_key(backend, runs[0].exp_prefix)
        sp = sweep_prefix(o, sweep)
        snap = render.snapshot(backend)
        manifest = render.manifest_bytes(snap)
        manifest_key = f"{_root(o)}code/manifests/{render.sha256_bytes(manifest)}.json"
        agent = render.agent_source()
        agent_key = f"{_root(o)}agent/{render.sha256_bytes(agent)}.py"
        setup, env_script, worker_argv = render.setup_scripts(backend)
        _refuse_plain_secrets(setup, env_script, runs)
        staging_dir = Path(staging_dir)
        (staging_dir / "manifest.json").write_bytes(manifest)
        scripts: dict[str, str] = {"setup.sh": setup, "env.sh": env_script}
        groups = _instance_groups(backend, runs, sweep, scripts, code={
            "sweep_prefix": sp, "manifest_key": manifest_key, "agent_key": agent_key,
            "runtime": snap["runtime"], "setup_script": setup, "env_script": env_script,
            "worker_argv": worker_argv})
        if o.launch_api == "fleet" and self.outside_template(o):
            raise UserError(f"ec2 backend: run_instances_extra sets {', '.join(self.outside_template(o))}"
                            ", which a launch template cannot hold: use launch_api: run_instances "
                            "(or auto), or drop them")
        fleet = self.use_fleet(o)
        if fleet:
            scripts["create_fleet"] = json.dumps(fleet_args(
                backend, sweep, str(groups[0]["token"]), "", f"chester-{sweep}-<digest>", o.spot),
                indent=1).replace('"LaunchTemplateSpecificationUserData": ""',
                                  '"LaunchTemplateSpecificationUserData": "<user-data>"')
        return PreparedSweep(
            backend=backend.name, runs=tuple(runs), staging_dir=staging_dir,
            uploads=tuple(Path(p) for p in snap["paths"].values()), scripts=scripts,
            summary=_prepare_summary(o, len(runs), len(groups), snap, fleet),
            data={"sweep": sweep, "sweep_prefix": sp, "manifest_key": manifest_key,
                  "manifest": manifest.decode(), "paths": snap["paths"],
                  "agent_key": agent_key, "groups": groups})

    @hookimpl
    def chester_submit(self, backend: BackendConfig, prepared: PreparedSweep) -> list[RunHandle]:
        """Upload the sweep and start the instances it still needs: none for a group whose
        instance exists (an earlier, interrupted submit) or whose runs other instances' freed
        slots all claimed. Returns one handle per run, in the runs' order."""
        o: Ec2Options = backend.options
        d = prepared.data
        s3 = self.client("s3", o)
        ec2 = self.client("ec2", o)
        stats = {"code_bytes": 0, "run_bytes": 0, "instances": 0}
        _upload_sweep(s3, o, d, prepared.runs, stats)
        existing = _existing_instances(ec2, d)
        todo = [g for g in d["groups"] if g["token"] not in existing]
        claimed = self._claimed_by(s3, o, d["sweep_prefix"]) if todo and o.runs_per_instance > 1 else {}
        # groups whose runs other instances' freed slots all took: no instance of their own
        taken = {g["token"]: claimed[g["runs"][0]] for g in todo
                 if all(t in claimed for t in g["runs"])}
        todo = [g for g in todo if g["token"] not in taken]
        if todo:
            self._launch_groups(backend, ec2, d, todo, existing, stats)
        self.last_submit.clear()
        self.last_submit.update(stats)
        handles = _sweep_handles(backend, prepared, existing, taken, claimed)
        line = launch_summary(o, ec2, d["sweep"], list(existing.values()), stats["instances"])
        if o.supervise is True:
            handles = [attrs.evolve(h, extra=(*h.extra, ("supervised", "1"))) for h in handles]
            sup = self.start_supervisor(backend, ec2, s3, d["sweep"], handles)
            line += f"; {supervisor_cost(o, ec2, sup)}"
        elif o.max_requeues > 0:
            line += (f"; requeues need a status poll (Sweep.wait, chester monitor): set "
                     f"supervise: true for a supervisor instance that requeues without this "
                     f"machine ({supervisor_cost(o, ec2, None)})")
        print(line, file=sys.stderr)
        return handles

    def start_supervisor(self, backend: BackendConfig, ec2: Any, s3: Any, sweep: str,
                         handles: Sequence[RunHandle]) -> dict:
        """Write the supervisor's spec and start its on-demand instance (once per sweep: an
        alive one is kept); returns the instance."""
        from chester_backend_ec2 import render, supervisor

        o: Ec2Options = backend.options
        spec_key = f"{sweep_prefix(o, sweep)}{supervisor.SPEC}"
        opts = attrs.asdict(o, recurse=False)
        with aws.errors("writing the supervisor's spec", s3):
            s3.put_object(Bucket=o.bucket, Key=spec_key, Body=json.dumps(
                {"backend": backend.name, "options": opts,
                 "handles": [h.to_dict() for h in handles]}, default=list).encode())
            s3.delete_object(Bucket=o.bucket, Key=f"{sweep_prefix(o, sweep)}{supervisor.STOP}")
        with aws.errors("describing the supervisor", ec2):
            alive = _describe(ec2, [{"Name": f"tag:{SWEEP_TAG}", "Values": [sweep]},
                                    {"Name": f"tag:{supervisor.ROLE_TAG}",
                                     "Values": [supervisor.ROLE]},
                                    {"Name": "instance-state-name", "Values": list(ALIVE)}])
        if alive:
            return alive[0]
        prof = o.supervisor_instance_profile or o.iam_instance_profile
        self.check_instance_profile(attrs.evolve(o, iam_instance_profile=prof),
                                    actions=supervisor.ACTIONS)
        ud = render.supervisor_user_data(
            bucket=o.bucket, spec_key=spec_key, region=o.region, endpoint_url=o.endpoint_url,
            python=o.python, bootstrap=o.supervisor_bootstrap_commands,
            max_lifetime_s=o.max_lifetime_s)
        tags = _tags(o, sweep) + [{"Key": supervisor.ROLE_TAG, "Value": supervisor.ROLE}]
        args: dict[str, Any] = dict(
            ImageId=o.supervisor_image_id or o.image_id, InstanceType=o.supervisor_instance_type,
            MinCount=1, MaxCount=1, ClientToken=f"{sweep}-sup-{int(time.time())}"[:64],
            UserData=ud, InstanceInitiatedShutdownBehavior="terminate",
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled",
                             "HttpPutResponseHopLimit": 1},
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                               {"ResourceType": "volume", "Tags": tags}])
        if prof:
            args["IamInstanceProfile"] = {"Arn": prof} if prof.startswith("arn:") else \
                {"Name": prof}
        if o.subnet_id:
            args["SubnetId"] = o.subnet_id
        if o.security_group_ids:
            args["SecurityGroupIds"] = list(o.security_group_ids)
        with aws.errors("starting the supervisor", ec2):
            return dict(ec2.run_instances(**args)["Instances"][0])

    def _launch_groups(self, backend: BackendConfig, ec2: Any, d: Mapping[str, Any],
                       todo: Sequence[dict], existing: dict[str, dict],
                       stats: dict[str, int]) -> None:
        """Start one instance per group of ``todo``, eight at a time, adding each to
        ``existing``. Once one launch is refused no more start; then the error says how many
        of the sweep's instances were started and keep running (``last_submit`` holds what
        was sent)."""
        from concurrent.futures import ThreadPoolExecutor

        lock = threading.Lock()
        refused = threading.Event()
        self.check_instance_profile(backend.options)
        check_gpus(backend.options, ec2)

        def launch(g: dict) -> None:
            if refused.is_set():
                return  # an earlier launch was refused: start nothing more
            try:
                inst = self.launch_instance(backend, ec2, d["sweep"], g["token"], g["user_data"])
            except BaseException:
                refused.set()
                raise
            with lock:
                existing[g["token"]] = inst
                stats["instances"] += 1

        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
            for fut in [pool.submit(launch, g) for g in todo]:
                try:
                    fut.result()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            self.last_submit.clear()
            self.last_submit.update(stats)
            started = len(existing)
            if not started:
                raise errors[0]
            first = errors[0]
            raise type(first)(
                f"{first}; {started} of {len(d['groups'])} instances of sweep {d['sweep']} were "
                "started and keep running (bounded by boot_timeout_s and max_lifetime_s): "
                f"launch again to start the rest, or stop them with `chester ec2 kill "
                f"{d['sweep']}`") from None

    def _claimed_by(self, s3: Any, o: Ec2Options, sp: str) -> dict[str, str]:
        """The sweep's runs an instance has claimed (``ctl/claims/<token>/<n>``, written by the
        agents): ``{token: instance id}``."""
        from chester_backend_ec2 import aws

        out: dict[str, str] = {}
        with aws.errors("reading run claims", s3):
            for obj in _list(s3, o.bucket, f"{sp}ctl/claims/"):
                tok = obj["Key"][len(f"{sp}ctl/claims/"):].split("/", 1)[0]
                if tok not in out:
                    rec = self._get_json(s3, o, obj) or {}
                    out[tok] = str(rec.get("instance") or "")
        return out

    def use_fleet(self, o: Ec2Options) -> bool:
        """Whether instances start through an EC2 Fleet of type ``instant`` (``launch_api``)."""
        if o.launch_api != "auto":
            return o.launch_api == "fleet"
        if o.spot and o.interruption_behavior != "terminate":
            return False  # a persistent request: only RunInstances (or a maintain fleet) makes it
        if (o.region, os.environ.get("AWS_ENDPOINT_URL")) in self._no_fleet:
            return False
        pools = {(t, sn) for t, sn, _ in placements(o)}
        return len(pools) > 1 and not self.outside_template(o)

    def outside_template(self, o: Ec2Options) -> list[str]:
        """``run_instances_extra`` keys a launch template cannot hold (the fleet needs one)."""
        return sorted(k for k in o.run_instances_extra if k not in self._template_keys())

    def _template_keys(self) -> frozenset[str]:
        """What a launch template may hold (botocore's model of EC2, read once)."""
        if self._template_fields is None:
            import botocore.session

            model = botocore.session.get_session().get_service_model("ec2")
            self._template_fields = frozenset(
                model.shape_for("RequestLaunchTemplateData").members)
        return self._template_fields

    def launch_instance(self, backend: BackendConfig, ec2: Any, sweep: str, gtok: str, user_data: str,
                        attempt: int = 1) -> dict:
        """Start the instance of one group: through an EC2 Fleet (:func:`launch_fleet`) when
        :func:`use_fleet` says so, else one RunInstances per placement (:func:`launch_sequential`).
        Either way the instance carries its sweep and group tags from its launch."""
        o: Ec2Options = backend.options
        if self.use_fleet(o):
            try:
                return self.launch_fleet(backend, ec2, sweep, gtok, user_data, attempt=attempt)
            except _FleetUnavailable as exc:
                log.warning("ec2_fleet_unavailable", backend=backend.name, reason=str(exc),
                            fallback="run_instances")
                self._no_fleet.add((o.region, os.environ.get("AWS_ENDPOINT_URL")))
        return launch_sequential(backend, ec2, sweep, gtok, user_data, attempt=attempt)

    def launch_template(self, backend: BackendConfig, ec2: Any, sweep: str) -> tuple[str, dict]:
        """The sweep's launch template (created once, by one launch thread): everything an instance gets but its
        type, subnet, market, user-data and per-instance tags, which the fleet call sets. Its name
        holds a digest of its data, so changed options make a new template, never a stale one."""
        import hashlib

        from botocore.exceptions import ClientError

        from chester_backend_ec2 import aws

        o: Ec2Options = backend.options
        args = _run_args(backend, sweep, "-", "", spot=False)
        keys = self._template_keys()
        data = {k: v for k, v in args.items() if k in keys and k not in (
            "UserData", "InstanceType", "InstanceMarketOptions", "TagSpecifications")}
        tags = _tags(o, sweep)
        data["TagSpecifications"] = [{"ResourceType": "volume", "Tags": tags}]
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
        name = f"chester-{sweep}-{digest[:10]}"
        with self._template_lock:
            if name not in self._templates:
                with aws.errors("creating the launch template", ec2):
                    try:
                        ec2.create_launch_template(
                            LaunchTemplateName=name, LaunchTemplateData=data,
                            TagSpecifications=[{"ResourceType": "launch-template",
                                                "Tags": tags}])
                    except ClientError as exc:
                        code = exc.response.get("Error", {}).get("Code", "")
                        if code in FLEET_UNAVAILABLE_CODES and o.launch_api == "auto":
                            raise _FleetUnavailable(f"CreateLaunchTemplate: {code}") from None
                        if code != "InvalidLaunchTemplateName.AlreadyExistsException":
                            raise
                self._templates.add(name)
        return name, data

    def launch_fleet(self, backend: BackendConfig, ec2: Any, sweep: str, gtok: str, user_data: str,
                     attempt: int = 1) -> dict:
        """Start one instance through EC2 Fleet (type ``instant``): one call picks among every
        (type, subnet) pool with the allocation strategy, spot first; with
        ``on_demand_fallback`` a second call asks for on-demand when no spot pool had capacity.

        An instant fleet answers with the instances it started and one error per pool it could
        not use; the capacity codes (``CAPACITY_CODES``) move on to on-demand or to the final
        error, any other code is final. Returns a DescribeInstances-like dict of the instance
        (``InstanceId``, ``InstanceType``, ``SubnetId``, ``Placement``, ``InstanceLifecycle``)."""
        from botocore.exceptions import ClientError

        from chester.plugin.errors import BackendError, TransientBackendError
        from chester_backend_ec2 import aws

        o: Ec2Options = backend.options
        template, _ = self.launch_template(backend, ec2, sweep)
        markets = [o.spot] + ([False] if o.spot and o.on_demand_fallback else [])
        tried: list[str] = []
        codes: list[str] = []
        for spot in markets:
            market = "spot" if spot else "on-demand"
            args = fleet_args(backend, sweep, gtok, user_data, template, spot, attempt=attempt)
            with aws.errors("create_fleet", ec2):
                try:
                    res = ec2.create_fleet(**args)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "?")
                    if code in FLEET_UNAVAILABLE_CODES and o.launch_api == "auto":
                        raise _FleetUnavailable(f"CreateFleet: {code}") from None
                    if code not in CAPACITY_CODES:
                        raise
                    tried.append(f"every pool {market}: {code}")
                    codes.append(code)
                    continue
            for r in res.get("Instances") or ():
                ids = r.get("InstanceIds") or ()
                if ids:
                    ov = (r.get("LaunchTemplateAndOverrides") or {}).get("Overrides") or {}
                    inst: dict[str, Any] = {
                        "InstanceId": ids[0], "InstanceType": r.get("InstanceType") or
                        ov.get("InstanceType"), "SubnetId": r.get("SubnetId") or ov.get("SubnetId"),
                        "Placement": {"AvailabilityZone": r.get("AvailabilityZone") or
                                      ov.get("AvailabilityZone")},
                        "State": {"Name": "pending"}, "LaunchedBy": "fleet"}
                    if (r.get("Lifecycle") or market) == "spot":
                        inst["InstanceLifecycle"] = "spot"
                    return inst
            errs = res.get("Errors") or ()
            if not errs:
                tried.append(f"every pool {market}: no instance and no error")
                continue
            fatal = []
            for e in errs:
                ov = (e.get("LaunchTemplateAndOverrides") or {}).get("Overrides") or {}
                code = e.get("ErrorCode") or "?"
                where = f"{ov.get('InstanceType', '?')} {e.get('Lifecycle') or market} in " \
                        f"{ov.get('SubnetId') or ov.get('AvailabilityZone') or 'the default subnet'}"
                tried.append(f"{where}: {code}")
                codes.append(code)
                if code not in CAPACITY_CODES:
                    fatal.append(f"{where}: {code}: {e.get('ErrorMessage') or ''}".strip())
            if fatal:
                raise BackendError(f"ec2 backend: create_fleet at {aws.where(ec2)} failed: "
                                   + "; ".join(fatal))
        msg = ("ec2 backend: no capacity for any placement tried (EC2 Fleet, "
               f"{o.allocation_strategy}): " + "; ".join(dict.fromkeys(tried)) +
               " (add instance_types or subnet_ids, or set on_demand_fallback)")
        if "InsufficientInstanceCapacity" in codes:
            raise TransientBackendError(msg)
        raise BackendError(msg)

    def check_instance_profile(self, o: Ec2Options, actions: Sequence[str] = ()) -> None:
        """The instance profile exists (else every instance would boot and fail to reach S3);
        with ``actions``, its role's policies allow each of them (a supervisor's)."""
        from botocore.exceptions import ClientError

        from chester_backend_ec2 import aws

        prof = o.iam_instance_profile
        if not prof or (o.region, prof) in self._checked_profiles:
            return
        name = prof.rsplit("/", 1)[-1] if prof.startswith("arn:") else prof
        iam = self.client("iam", o)
        try:
            got = iam.get_instance_profile(InstanceProfileName=name)
            if actions:
                _check_actions(iam, prof, got["InstanceProfile"], actions)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            if code == "NoSuchEntity":
                raise UserError(f"ec2 backend: iam_instance_profile {prof!r} does not exist; create "
                                "it with the policy in docs/backends/ec2.md, or fix the name") \
                    from None
            if code not in ("AccessDenied", "AccessDeniedException"):
                with aws.errors("checking the instance profile", iam, sent=False):
                    raise
            return  # the launcher may not read IAM: run_instances will say
        self._checked_profiles.add((o.region, prof))

    def _get_json(self, s3: Any, o: Ec2Options, obj: Mapping) -> dict | None:
        ck = (o.bucket, obj["Key"], obj.get("ETag", ""))
        rec = self._records.get(ck)
        if rec is None:
            try:
                rec = json.loads(s3.get_object(Bucket=o.bucket, Key=obj["Key"])["Body"].read())
            except (ValueError, KeyError):
                return None
            self._records[ck] = rec
        return rec

    def read_ctl(self, s3: Any, o: Ec2Options, sweep: str) -> Ctl:
        """One list call, plus one get per record that changed since this process last read it.
        A heartbeat's time is its object's LastModified (S3's clock, not the instance's)."""
        from chester_backend_ec2 import requeue

        prefix = f"{sweep_prefix(o, sweep)}ctl/"
        ctl = Ctl()
        tries = []
        for obj in _list(s3, o.bucket, prefix):
            rest = obj["Key"][len(prefix):]
            if rest.startswith("cancel/"):
                tok = rest[len("cancel/"):]
                ctl.cancels.add(tok)
                if obj.get("Size"):  # who cancelled it, and when (the marker says so)
                    marker = self._get_json(s3, o, obj) or {}
                    by, at = marker.get("by"), marker.get("at")
                    if by:
                        ctl.cancelled_by[tok] = str(by) + (
                            f" at {clock(at)}" if isinstance(at, (int, float)) else "")
            elif rest.startswith("heartbeat/") and rest.endswith(".json"):
                ctl.beats[rest[len("heartbeat/"):-len(".json")]] = obj["LastModified"].timestamp()
            elif rest.startswith("attempts/"):
                tries.append(obj)
            elif rest.startswith("status/") and rest.endswith(".json"):
                tok = rest[len("status/"):-len(".json")]
                ctl.etags[tok] = obj.get("ETag", "")
                rec = self._get_json(s3, o, obj)
                if rec is not None:
                    ctl.records[tok] = rec
        ctl.attempts = requeue.parse(tries, f"{prefix}attempts/", lambda obj: self._get_json(s3, o, obj))
        return ctl

    def _ctl(self, s3: Any, o: Ec2Options, sweep: str) -> tuple[dict[str, dict], set[str]]:
        ctl = self.read_ctl(s3, o, sweep)
        return ctl.records, ctl.cancels

    @hookimpl
    def chester_status(self, backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, RunStatus]:
        from chester_backend_ec2 import aws

        o: Ec2Options = backend.options
        s3 = self.client("s3", o)
        ec2 = self.client("ec2", o)
        groups = _sweeps(handles)
        with aws.errors("describing instances", ec2):
            insts = _describe(ec2, [{"Name": f"tag:{SWEEP_TAG}", "Values": sorted(groups)}])
        by_group = _current(insts)
        out: dict[str, RunStatus] = {}
        for sweep, hs in groups.items():
            with aws.errors("reading status records", s3):
                ctl = self.read_ctl(s3, o, sweep)
            self._reap(backend, ec2, s3, sweep, hs, by_group, ctl)
            for h in hs:
                out[h.token] = to_status(h, by_group.get(_run_group(h, ctl) or ""),
                                         ctl.records.get(h.token), h.token in ctl.cancels,
                                         ctl.cancelled_by.get(h.token))
            if o.max_requeues > 0:
                self._requeue(backend, ec2, s3, sweep, hs, out, insts, by_group, ctl)
                _will_requeue(o, hs, out, insts, ctl)
            self._release_spot_requests(o, ec2, s3, sweep, hs, out, ctl)
            if any(h.get("supervised") for h in hs):
                self._reconcile(o, s3, sweep, hs, out)
        return out

    def _reconcile(self, o: Ec2Options, s3: Any, sweep: str, hs: Sequence[RunHandle],
                   out: dict[str, RunStatus]) -> None:
        """Bring in what the sweep's supervisor did (its journal): each requeue it made goes
        into the run's history at its own time, and an unfinished run says how the
        supervisor is."""
        from chester_backend_ec2 import supervisor

        with aws.errors("reading the supervisor's journal", s3):
            events = supervisor.read_journal(s3, o.bucket, sweep_prefix(o, sweep))
        if events is None:
            return
        line = supervisor.supervision_line(events, time.time())
        for h in hs:
            st = out[h.token]
            hist = tuple((e["at"], State.REQUEUED.value,
                          f"{e.get('why') or 'preempted'}; the supervisor started instance "
                          f"{e['attempt']} ({e['instance']})") for e in events
                         if e.get("event") == "requeued" and e.get("token") == h.token)
            pending = st.pending_reason
            if not st.state.terminal and not st.reason:
                pending = f"{pending}; {line}" if pending else line
            if hist or pending != st.pending_reason:
                out[h.token] = attrs.evolve(st, history=hist, pending_reason=pending)

    def _reap(self, backend: BackendConfig, ec2: Any, s3: Any, sweep: str, hs: Sequence[RunHandle],
              by_group: dict[str, dict], ctl: Ctl) -> None:
        """Terminate running instances that are past their bounds, whatever their agent does:

        - past ``max_lifetime_s`` (plus a slack for the agent's own stop): its open runs ``timeout``;
        - no heartbeat ``boot_timeout_s`` after it started: its runs ``lost`` (bootstrap hung);
        - a heartbeat older than ``heartbeat_timeout_s``: its open runs ``lost`` (agent died).

        The verdict is written as the runs' status records, so every launcher reads the same;
        each only over the record this poll read (S3's If-Match on its ETag): a record that
        changed since, a next attempt's say, is left as it is and decided at the next poll."""
        from chester_backend_ec2 import aws, requeue

        o: Ec2Options = backend.options
        now = time.time()
        kill: list[str] = []
        for gtok, mhs in _running_members(hs, ctl).items():
            inst = by_group.get(gtok)
            if inst is None or inst["State"]["Name"] != "running":
                continue
            launched = _ts(inst.get("LaunchTime"))
            if launched is None:
                continue
            iid = inst["InstanceId"]
            # runs not ended, and runs lost with an earlier instance this one has not
            # started again yet (its agent publishes their next attempt once it does)
            open_ = [h for h in mhs if (ctl.records.get(h.token) or {}).get("state")
                     not in FINAL_RECORDS or
                     ctl.records[h.token].get(INSTANCE_LOST) and
                     _launch(ctl.records[h.token]) < _number(inst)]
            beat = ctl.beats.get(gtok)
            age = now - launched
            verdict: tuple[str, str] | None = None
            dead_agent = False
            if o.max_lifetime_s and age > o.max_lifetime_s + min(600.0, max(
                    5.0, o.max_lifetime_s * 0.1)):
                verdict = ("timeout", f"instance {iid} ran past max_lifetime_s="
                           f"{o.max_lifetime_s:g} ({age:.0f} s since it started); chester "
                           "terminated it")
            # a beat from before the instance's launch (LaunchTime in whole seconds, a little
            # slack for the clocks) is its group's earlier instance's, lost a moment before:
            # at least heartbeat_timeout_s before this one was launched to replace it
            elif beat is None or beat + min(2.0, o.heartbeat_timeout_s / 2) < launched:
                if age > o.boot_timeout_s:
                    verdict = ("lost", f"instance {iid} gave no sign of its agent {age:.0f} s after "
                               f"it started (boot_timeout_s={o.boot_timeout_s:g}); chester "
                               f"terminated it (see `aws ec2 get-console-output --instance-id "
                               f"{iid}`)")
            elif now - beat > o.heartbeat_timeout_s and (open_ or o.shutdown_when_done):
                dead_agent = True
                verdict = ("lost", f"the agent on instance {iid} stopped its heartbeat "
                           f"{now - beat:.0f} s ago (heartbeat_timeout_s="
                           f"{o.heartbeat_timeout_s:g}); chester terminated the instance")
            if verdict is None:
                continue
            kill.append(iid)
            state, reason = verdict
            with aws.errors("recording terminated runs", s3):
                for h in open_:
                    old = ctl.records.get(h.token) or {}
                    rec = {"token": h.token, "state": state, "reason": reason, "ended_at": now,
                           "attempt": old.get("attempt") or 1, "started_at": old.get("started_at"),
                           "by": LAUNCHER, "group": old.get("group") or gtok,
                           "instance": iid, "launch": _number(inst)}
                    if dead_agent and _started_on(old, inst):
                        # the run went with the instance while it ran: as after a spot
                        # interruption, the group's next instance may run its next attempt
                        rec[INSTANCE_LOST] = True
                    # only over the record this poll read: another poll may have requeued
                    # the run since, and the next instance's agent written its next attempt
                    etag = requeue.replace(s3, o.bucket, f"{sweep_prefix(o, sweep)}ctl/status/"
                                           f"{h.token}.json",
                                           json.dumps(rec, sort_keys=True).encode(),
                                           ctl.etags.get(h.token))
                    if etag is None:
                        log.debug("ec2_verdict_not_written", token=h.token, verdict=state,
                                  instance=iid, why="its record changed since this poll read "
                                  "it; the next poll decides from the newer one")
                        continue
                    ctl.records[h.token], ctl.etags[h.token] = rec, etag
            by_group[gtok] = {**inst, "State": {"Name": "shutting-down"}}
        if kill:
            with aws.errors("terminating instances past their bounds", ec2):
                ec2.terminate_instances(InstanceIds=kill)
            self._cancel_spot_requests(o, ec2, [g for g, i in by_group.items()
                                           if i["InstanceId"] in kill])

    def _requeue(self, backend: BackendConfig, ec2: Any, s3: Any, sweep: str, hs: Sequence[RunHandle],
                 out: dict[str, RunStatus], insts: list[dict], by_group: dict[str, dict],
                 ctl: Ctl) -> None:
        """Start the unfinished runs of a preempted or lost instance again on a new instance.

        Only when the instance is gone (terminated, or no longer listed at all), a run of it
        asked about is preempted or was lost with it while it ran (:func:`lost_with_instance`),
        every other one is over, and the group has had fewer than ``1 + max_requeues``
        instances (preemptions and losses count alike). The next instance is taken and started
        by :func:`requeue.next_instance`, exactly once whatever other process polls at the same
        time. A launch that fails (a quota, no capacity) leaves the runs ``requeued`` with the
        error as pending reason and is tried again at the next poll; it never fails the status
        call. The runs the next instance's agent will run read ``requeued``: the preempted and
        lost ones, and any whose record holds no end (it never started)."""
        from chester.plugin.errors import ChesterError
        from chester_backend_ec2 import requeue

        o: Ec2Options = backend.options
        now = time.time()
        for gtok, mhs in _running_members(hs, ctl).items():
            cur = by_group.get(gtok)
            if cur is not None and cur["State"]["Name"] not in requeue.GONE:
                continue
            why: dict[str, str] = {}  # token -> why its next attempt runs elsewhere
            for h in mhs:
                st, rec = out[h.token], ctl.records.get(h.token)
                lost_on = (rec or {}).get("instance") or (cur or {}).get("InstanceId") or \
                    h.remote_id or "its instance"
                if st.state == State.PREEMPTED:
                    why[h.token] = "preempted"
                elif lost_with_instance(o, cur, rec, st, now, h.token in ctl.cancels):
                    why[h.token] = f"lost with instance {lost_on}"
            if not why or any(not out[h.token].state.terminal and h.token not in why
                              for h in mhs):
                continue
            # as this poll knows them: one _reap just terminated reads shutting-down
            listed = [cur if cur is not None and i["InstanceId"] == cur["InstanceId"] else i
                      for i in insts if _tag(i, GROUP_TAG) == gtok]
            try:
                res = requeue.next_instance(backend, s3, ec2, sweep, gtok, listed,
                                            tries=ctl.attempts.get(gtok) or {}, now=now,
                                            launch=self.launch_instance)
            except ChesterError as exc:  # S3 refused the bookkeeping: the next poll tries again
                res = requeue.Outcome(kind="failed", attempt=_attempts(gtok, insts, ctl) + 1,
                                      error=str(exc))
            if res.kind == "used_up":
                continue
            old = cur["InstanceId"] if cur else (mhs[0].remote_id or "its instance")
            for h in mhs:  # a run with no end in its record is run by the next instance too
                rec = ctl.records.get(h.token)
                if h.token not in why and out[h.token].state == State.LOST and \
                        (rec or {}).get("state") not in FINAL_RECORDS:
                    why[h.token] = f"lost with instance {old}"
            for h in mhs:
                st = out[h.token]
                if h.token not in why:
                    continue
                cause = f"preempted on {old}" if why[h.token] == "preempted" else why[h.token]
                if res.kind == "failed":
                    out[h.token] = attrs.evolve(st, state=State.REQUEUED, pending_reason=(
                        f"{cause}; starting instance {res.attempt} failed ({res.error}); tried "
                        "again at the next status poll"))
                elif res.kind == "starting":
                    out[h.token] = attrs.evolve(st, state=State.REQUEUED, pending_reason=(
                        f"{cause}; instance {res.attempt} is being started"))
                else:
                    out[h.token] = RunStatus(
                        state=State.REQUEUED, remote_id=res.instance,
                        attempt=(st.attempt or 1) + 1,
                        pending_reason=f"{cause}; started again on {res.instance} "
                                       f"(instance {res.attempt})")
            if res.kind == "started" and res.instance:
                self.requeued(sweep, gtok, [(h.token, why[h.token]) for h in mhs
                                            if h.token in why], res.attempt, res.instance)

    def requeued(self, sweep: str, group: str, runs: Sequence[tuple[str, str]], attempt: int,
                 instance: str) -> None:
        """This process started ``instance``, number ``attempt`` of ``group``, for ``runs``
        (token, why: ``preempted`` or ``lost with instance i-...``). Nothing here; the
        supervisor writes it to its journal."""

    def _release_spot_requests(self, o: Ec2Options, ec2: Any, s3: Any, sweep: str,
                               hs: Sequence[RunHandle], out: Mapping[str, RunStatus],
                               ctl: Ctl) -> None:
        """A persistent spot request (interruption_behavior stop/hibernate) outlives its
        instance and starts a new one when it is terminated: cancel it once every run of its
        group is final (status polls ask only about unfinished runs: the others of a packed
        group are looked up in their records)."""
        if not o.spot or o.interruption_behavior == "terminate":
            return
        done = []
        for g, mhs in _members(hs).items():
            if g in self._released or not all(out[h.token].state.terminal for h in mhs):
                continue
            if len(mhs) < int(mhs[0].get("group_size") or 1):
                spec = self._get_json(s3, o, {"Key": f"{sweep_prefix(o, sweep)}instances/{g}.json",
                                         "ETag": "spec"}) or {}
                asked = {h.token for h in mhs}
                if not all((ctl.records.get(r["token"]) or {}).get("state") in FINAL_RECORDS
                           for r in spec.get("runs", ()) if r["token"] not in asked):
                    continue
            done.append(g)
        if done:
            self._cancel_spot_requests(o, ec2, done)

    def _cancel_spot_requests(self, o: Ec2Options, ec2: Any, groups: Sequence[str]) -> list[str]:
        """Cancel the open, active or disabled spot requests of these groups (found by their
        tags). Only persistent requests (``interruption_behavior`` stop or hibernate) outlive
        their instance; one-time requests close by themselves, so nothing is asked then."""
        from chester_backend_ec2 import aws

        if not groups or not o.spot or o.interruption_behavior == "terminate":
            return []
        ids: list[str] = []
        with aws.errors("cancelling spot requests", ec2):
            for i in range(0, len(groups), 200):
                res = ec2.describe_spot_instance_requests(Filters=[
                    {"Name": f"tag:{GROUP_TAG}", "Values": list(groups[i:i + 200])},
                    {"Name": "state", "Values": ["open", "active", "disabled"]}])
                ids += [r["SpotInstanceRequestId"] for r in res.get("SpotInstanceRequests", ())]
            if ids:
                ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=sorted(ids))
        self._released.update(groups)
        return ids

    @hookimpl
    def chester_cancel(self, backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, bool]:
        from chester_backend_ec2 import aws

        o: Ec2Options = backend.options
        s3 = self.client("s3", o)
        ec2 = self.client("ec2", o)
        body = json.dumps({"by": CANCELLED_BY, "at": time.time()}).encode()
        with aws.errors("writing cancel markers", s3):
            for h in handles:
                s3.put_object(Bucket=o.bucket, Body=body,
                              Key=f"{sweep_prefix(o, h.get('sweep') or '')}ctl/cancel/{h.token}")
        self._stop_supervisors(o, s3, handles)
        self._await_agents(o, s3, handles)
        asked: dict[str, set[str]] = {}
        for h in handles:
            asked.setdefault(h.get("group") or "", set()).add(h.token)
        # an instance is terminated only when every run it carries is cancelled
        whole = sorted({h.get("group") or "" for h in handles if h.get("group") and
                        len(asked[h.get("group") or ""]) >= int(h.get("group_size") or 1)})
        if whole:
            # first the persistent spot requests, which would start the instances again
            self._cancel_spot_requests(o, ec2, whole)
            with aws.errors("terminating instances", ec2):
                ids = set()
                for i in range(0, len(whole), 200):
                    ids |= {inst["InstanceId"] for inst in _describe(
                        ec2, [{"Name": f"tag:{GROUP_TAG}", "Values": whole[i:i + 200]},
                              {"Name": "instance-state-name",
                               "Values": ["pending", "running", "stopping", "stopped"]}])}
                if ids:
                    ec2.terminate_instances(InstanceIds=sorted(ids))
        return {h.token: True for h in handles}

    def _stop_supervisors(self, o: Ec2Options, s3: Any, handles: Sequence[RunHandle]) -> None:
        """A cancel of every run of a supervised sweep stops its supervisor (``stop``): it
        ends at its next cycle and its instance terminates."""
        from chester_backend_ec2 import supervisor

        for sweep, hs in _sweeps([h for h in handles if h.get("supervised")]).items():
            sp = sweep_prefix(o, sweep)
            with aws.errors("reading the supervisor's spec", s3):
                found = _list(s3, o.bucket, f"{sp}{supervisor.SPEC}")
            spec = (self._get_json(s3, o, found[0]) or {}) if found else {}
            if {h["token"] for h in spec.get("handles", ())} <= {h.token for h in hs}:
                with aws.errors("stopping the supervisor", s3):
                    s3.put_object(Bucket=o.bucket, Key=f"{sp}{supervisor.STOP}", Body=b"")

    def _await_agents(self, o: Ec2Options, s3: Any, handles: Sequence[RunHandle]) -> None:
        """Give the agents of running runs up to ``cancel_grace_s`` to stop them and sync their
        folders (they read the cancel markers every ``watch_interval_s``) before any instance is
        terminated, so a cancelled run's files reach S3. Runs not started yet are not waited for."""
        from chester_backend_ec2 import aws

        deadline = time.monotonic() + o.cancel_grace_s
        by_sweep = _sweeps(handles)
        waiting: set[str] | None = None
        while True:
            live: set[str] = set()
            for sweep, hs in by_sweep.items():
                with aws.errors("reading status records", s3):
                    records, _ = self._ctl(s3, o, sweep)
                live |= {h.token for h in hs if (records.get(h.token) or {}).get("state") ==
                         "running" and not records[h.token].get("ended_at")}
            waiting = live if waiting is None else waiting & live
            if not waiting or time.monotonic() >= deadline:
                return
            time.sleep(min(1.0, o.watch_interval_s))

    @hookimpl
    def chester_pull(self, backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                     patterns: PullPatterns) -> list[PullResult]:
        from chester.target.rundir import read_json, write_json_atomic
        from chester_backend_ec2 import aws, segments

        o: Ec2Options = backend.options
        s3 = self.client("s3", o)
        rules = [("+", p) for p in patterns.include] + [("-", p) for p in patterns.exclude]
        plan: list[tuple[RunHandle, list[tuple[str, dict]], dict]] = []
        with aws.errors("listing run folders", s3):
            for h in handles:
                prefix = f"{sweep_prefix(o, h.get('sweep') or '')}runs/{h.token}/"
                local = Path(h.local_dir)
                state = read_json(local / PULL_STATE) or {}
                todo = []
                for rel, obj in segments.files(_list(s3, o.bucket, prefix), prefix).items():
                    if not rel or rel.endswith("/") or not _wanted(rel, rules):
                        continue
                    path = local / rel
                    etag = obj.get("ETag", "")
                    try:
                        st = path.stat()
                    except OSError:
                        st = None
                    if st is not None:
                        seen = state.get(rel)
                        if not isinstance(seen, dict):
                            seen = {}
                        untouched = [st.st_size, st.st_mtime_ns] == [seen.get("size"),
                                                                      seen.get("mtime_ns")]
                        if untouched and seen.get("etag") == etag:
                            continue  # unchanged since the last pull
                        if not untouched and obj["LastModified"] is not None and \
                                st.st_mtime > obj["LastModified"].timestamp():
                            continue  # a local file changed here and newer: never overwritten
                        had = seen.get("parts") if untouched and isinstance(seen, dict) else None
                        if had and obj["parts"][:len(had)] == [tuple(x) for x in had]:
                            obj = {**obj, "append": len(had)}  # grown: only new segments come down
                    todo.append((rel, obj))
                plan.append((h, todo, state))
        from chester.remote.progress import Progress

        results = []
        with Progress(f"pull {backend.name}", sum(obj["Size"] for _, todo, _ in plan
                                                 for _, obj in todo), unit="bytes") as bar:
            with aws.errors("downloading run files", s3):
                for h, todo, state in plan:
                    local = Path(h.local_dir)
                    nbytes = 0
                    for rel, obj in todo:
                        path = local / rel
                        path.parent.mkdir(parents=True, exist_ok=True)
                        tmp = path.with_name(f".{path.name}.ec2-part")
                        n = _download(s3, o.bucket, obj, path, tmp)
                        st = path.stat()
                        state[rel] = {"etag": obj["ETag"], "size": st.st_size,
                                      "mtime_ns": st.st_mtime_ns}
                        if len(obj["parts"]) > 1 or segments.SEG in obj["parts"][0][1]:
                            state[rel]["parts"] = [list(x) for x in obj["parts"]]
                        nbytes += n
                        bar.advance(n)
                    if todo:
                        write_json_atomic(local / PULL_STATE, state)
                    results.append(PullResult(token=h.token, files=len(todo), bytes=nbytes,
                                              complete=paths.arrived(h.local_dir)))
        return results

    @hookimpl
    def chester_logs(self, backend: BackendConfig, handle: RunHandle, follow: bool, stream: str,
                     out: TextIO) -> bool:
        from botocore.exceptions import ClientError

        from chester.remote.follow import follow as follow_log
        from chester_backend_ec2 import aws, segments

        o: Ec2Options = backend.options
        s3 = self.client("s3", o)
        name = "stderr.log" if stream == "stderr" else "stdout.log"
        key = f"{sweep_prefix(o, handle.get('sweep') or '')}runs/{handle.token}/{name}"

        def read(offset: int) -> bytes:
            with aws.errors("reading logs", s3):
                try:
                    found = segments.list_file(s3, o.bucket, key)
                    return segments.read(s3, o.bucket, found["parts"], offset) if found else b""
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code")
                    if code in ("NoSuchKey", "404", "InvalidRange", "416"):
                        return b""
                    raise

        def finished() -> bool:
            return self.chester_status(backend, [handle])[handle.token].state.terminal

        return follow_log(read, finished, self.log_cursor(handle, stream, out), follow=follow,
                          interval=max(1.0, min(o.sync_interval_s, 10.0)))


def __getattr__(name: str) -> Any:  # the hooks' earlier module-level names
    return hook_function(Ec2Backend, name, __name__)
