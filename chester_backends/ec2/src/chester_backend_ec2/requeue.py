"""Starting a group's next instance exactly once, whoever asks.

An instance carries the runs of one group; a group's instances are numbered 1, 2, ... (their
``chester:attempt`` tag): 1 is the submit's, each later one replaces one that was preempted.
Any number of processes may decide at the same moment that a group needs its next instance
(status polls of ``Sweep.wait``, ``chester status`` or ``chester monitor`` on one or several
machines, a supervisor), and EC2 may not deduplicate two launches by their ClientToken. So the
number is taken with a conditional write before any launch (S3 ``PutObject`` with
``If-None-Match: *``, which creates a key only if it does not exist yet), and only the process
whose write created the key launches. :func:`next_instance` is that whole step.

Keys under ``sweeps/<sweep>/ctl/attempts/<group>/``::

    <n>/<k>.json      try k to start instance n, created by the one process making that try,
                      before its launch call: {"by", "at"}
    <n>/<k>.end.json  what came of it, written by that process afterwards:
                      {"instance": id, "at"} or {"error": message, "at"}

A try that ended in an error (a quota, no capacity) is followed by the next try at the next
call, from any process. A try with no outcome after :data:`STALE_TRY_S` (its process died
during the launch) is followed by the next one too, unless an instance tagged with that
number is listed (it started after all: its outcome is written then). Whatever instances
there are, the agents' claims (``ctl/claims/<token>/<attempt>``) let only one of them run a
run's attempt (see the agent).

boto3 is not imported here; the caller's clients are used.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from chester.logs import get_logger

log = get_logger()

#: Seconds after which a try with no outcome is taken to have died with its process.
STALE_TRY_S = 300.0
#: Instance states of an instance that is gone for good.
GONE = ("shutting-down", "terminated")


@attrs.frozen(kw_only=True)
class Try:
    """One try to start instance n of a group."""

    at: float  # when it was taken (the object's LastModified, S3's clock)
    instance: str | None = None  # the instance it started
    error: str | None = None  # why the launch was refused
    ended_at: float | None = None  # when its outcome was written (None: no outcome yet)


#: A group's tries: instance number -> try number -> try.
Tries = dict[int, dict[int, Try]]


@attrs.frozen(kw_only=True)
class Outcome:
    """What :func:`next_instance` found or did.

    ``kind``: ``up`` (the group's latest instance is up, or started and not listed yet:
    nothing to do), ``started`` (this call launched instance ``attempt``), ``starting``
    (another process is starting it), ``failed`` (this call's launch was refused: ``error``;
    the next call tries again) or ``used_up`` (``max_requeues`` reached)."""

    kind: Literal["up", "started", "starting", "failed", "used_up"]
    attempt: int
    instance: str | None = None
    error: str | None = None


def prefix(o: Any, sweep: str, group: str = "") -> str:
    from chester_backend_ec2.plugin import sweep_prefix

    return f"{sweep_prefix(o, sweep)}ctl/attempts/" + (f"{group}/" if group else "")


def create(s3: Any, bucket: str, key: str, body: bytes) -> bool:
    """Write ``key`` only if it does not exist yet: True when this call created it."""
    from botocore.exceptions import ClientError

    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        return True
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # 409: another conditional write of the same key was in flight
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return False
        raise


def replace(s3: Any, bucket: str, key: str, body: bytes, etag: str | None) -> str | None:
    """Write ``key`` only if it is still the object that was read: its ETag is ``etag``, or
    it does not exist when ``etag`` is None. Returns the new object's ETag, or None when S3
    refused because the object changed (or went) since it was read: nothing was written."""
    from botocore.exceptions import ClientError

    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        return str(s3.put_object(Bucket=bucket, Key=key, Body=body, **cond).get("ETag") or "")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # 409: another conditional write of the same key was in flight; 404: If-Match on
        # an object deleted since
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or \
                status in (404, 409, 412):
            return None
        raise


def parse(objs: Iterable[Mapping], base: str,
          get_json: Callable[[Mapping], dict | None]) -> dict[str, Tries]:
    """Every group's tries from a listing of ``ctl/attempts/`` (``base``: that prefix).
    ``get_json`` reads an object's body (only outcomes are read). A record of an older
    version, ``<group>.json`` = {"attempt", "instance"}, reads as one try."""
    taken: dict[tuple[str, int, int], float] = {}
    ends: dict[tuple[str, int, int], Mapping] = {}
    out: dict[str, Tries] = {}
    for obj in objs:
        rest = obj["Key"][len(base):]
        parts = rest.split("/")
        if len(parts) == 1 and rest.endswith(".json"):  # the older single record
            rec = get_json(obj) or {}
            try:
                n = int(rec.get("attempt") or 1)
            except (TypeError, ValueError):
                continue
            at = float(rec.get("at") or 0)
            out.setdefault(rest[:-len(".json")], {}).setdefault(n, {})[1] = Try(
                at=at, instance=rec.get("instance"),
                ended_at=at if rec.get("instance") else None)
            continue
        if len(parts) != 3:
            continue
        group, n_s, name = parts
        end = name.endswith(".end.json")
        k_s = name[:-len(".end.json")] if end else name[:-len(".json")] \
            if name.endswith(".json") else ""
        try:
            n, k = int(n_s), int(k_s)
        except ValueError:
            continue
        if end:
            ends[(group, n, k)] = obj
        else:
            taken[(group, n, k)] = obj["LastModified"].timestamp()
    for (group, n, k), at in taken.items():
        t = Try(at=at)
        if (group, n, k) in ends:
            rec = get_json(ends[(group, n, k)]) or {}
            t = Try(at=at, instance=rec.get("instance"), error=rec.get("error"),
                    ended_at=float(rec.get("at") or at))
        out.setdefault(group, {}).setdefault(n, {})[k] = t
    return out


def read(s3: Any, o: Any, sweep: str, group: str) -> Tries:
    """The group's tries, as S3 holds them now."""
    from chester_backend_ec2.plugin import _list

    base = prefix(o, sweep)
    objs = _list(s3, o.bucket, prefix(o, sweep, group))

    def get_json(obj: Mapping) -> dict | None:
        try:
            return json.loads(s3.get_object(Bucket=o.bucket, Key=obj["Key"])["Body"].read())
        except ValueError:
            return None

    return parse(objs, base, get_json).get(group, {})


def taken(tries: Tries) -> int:
    """The highest instance number taken (1: only the submit's)."""
    return max([1, *tries])


def started(tries: Tries) -> dict[int, Try]:
    """Instance number -> the try that started it."""
    return {n: t for n, ts in tries.items() for _, t in sorted(ts.items()) if t.instance}


def _number(inst: Mapping) -> int:
    from chester_backend_ec2.plugin import ATTEMPT_TAG, _tag

    try:
        return int(_tag(inst, ATTEMPT_TAG) or 1)
    except ValueError:
        return 1


def who() -> str:
    """This process, for the records (never used to decide anything)."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def next_instance(backend: Any, s3: Any, ec2: Any, sweep: str, group: str,
                  listed: Sequence[Mapping], *, tries: Tries | None = None,
                  now: float | None = None, launch: Callable[..., dict] | None = None
                  ) -> Outcome:
    """Make sure the group's latest instance is up: when it is gone, start the next one,
    exactly once among every process that calls this at the same time.

    Call it when every unfinished run of the group is preempted. ``listed``: the group's
    instances as DescribeInstances lists them now (any state; none when they aged out);
    ``tries``: what ``ctl/attempts/<group>/`` holds (read here when None; a listing a little
    old is fine: the conditional write decides); ``launch``: what starts the instance, the
    calling backend's :meth:`~chester_backend_ec2.plugin.Ec2Backend.launch_instance`
    (default: a new backend's). Raises :class:`chester.errors.ChesterError`
    only when S3 cannot be read or written; a refused launch is the ``failed`` outcome."""
    from chester.plugin.errors import ChesterError
    from chester_backend_ec2 import aws, render
    from chester_backend_ec2.plugin import Ec2Backend, _exists, _root, _user_data, sweep_prefix

    o = backend.options
    now = time.time() if now is None else now
    base = prefix(o, sweep, group)
    if tries is None:
        with aws.errors("reading the group's instances", s3):
            tries = read(s3, o, sweep, group)
    by_n: dict[int, Mapping] = {}
    for one in listed:
        n = _number(one)
        if n not in by_n or one["State"]["Name"] not in GONE:  # a live one wins (a twin)
            by_n[n] = one
    ok = started(tries)
    latest = max([1, *ok, *by_n])
    n = taken(tries)
    if n <= latest:
        n = latest
        latest_inst = by_n.get(n)
        if latest_inst is not None:
            iid = latest_inst["InstanceId"]
            if n in tries and n not in ok:  # started after all: say so for later readers
                key = f"{base}{n}/{max(tries[n])}.end.json"
                with aws.errors("recording an instance", s3):
                    s3.put_object(Bucket=o.bucket, Key=key, Body=json.dumps(
                        {"instance": iid, "at": now, "found": True}).encode())
            if latest_inst["State"]["Name"] not in GONE:
                return Outcome(kind="up", attempt=n, instance=iid)
        elif n in ok and now - (ok[n].ended_at or ok[n].at) < o.boot_timeout_s:
            return Outcome(kind="up", attempt=n, instance=ok[n].instance)  # not listed yet
        n += 1
    if n > 1 + o.max_requeues:
        return Outcome(kind="used_up", attempt=n - 1)
    ts = tries.get(n, {})
    k = max(ts, default=0)
    if k and ts[k].error is None and now - ts[k].at < STALE_TRY_S:
        return Outcome(kind="starting", attempt=n)
    key = f"{base}{n}/{k + 1}"
    with aws.errors("taking the group's next instance", s3):
        if not create(s3, o.bucket, f"{key}.json",
                      json.dumps({"by": who(), "at": now}).encode()):
            return Outcome(kind="starting", attempt=n)
    try:
        agent = render.agent_source()
        agent_key = f"{_root(o)}agent/{render.sha256_bytes(agent)}.py"
        with aws.errors("uploading the agent", s3):
            if not _exists(s3, o.bucket, agent_key):
                s3.put_object(Bucket=o.bucket, Key=agent_key, Body=agent)
        spec_key = f"{sweep_prefix(o, sweep)}instances/{group}.json"
        inst = (launch or Ec2Backend().launch_instance)(
            backend, ec2, sweep, group, _user_data(o, spec_key, agent_key, attempt=n), attempt=n)
    except ChesterError as exc:
        _outcome(s3, o, f"{key}.end.json", {"error": str(exc), "at": time.time()})
        return Outcome(kind="failed", attempt=n, error=str(exc))
    _outcome(s3, o, f"{key}.end.json", {"instance": inst["InstanceId"], "at": time.time()})
    return Outcome(kind="started", attempt=n, instance=inst["InstanceId"])


def _outcome(s3: Any, o: Any, key: str, rec: dict) -> None:
    """Record a try's outcome; when S3 refuses, the try reads as stale later and the
    listed instance (or the next try) settles it."""
    from chester.plugin.errors import ChesterError
    from chester_backend_ec2 import aws

    try:
        with aws.errors("recording a launch", s3):
            s3.put_object(Bucket=o.bucket, Key=key, Body=json.dumps(rec).encode())
    except ChesterError as exc:
        log.warning("ec2_launch_unrecorded", key=key, error=str(exc))
