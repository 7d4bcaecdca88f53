"""The sweep's supervisor: a small on-demand instance that looks after the sweep without the
laptop (``supervise: true``).

Every ``supervise_interval_s`` it makes the status round trip a laptop's poll makes
(:meth:`~chester_backend_ec2.plugin.Ec2Backend.chester_status` over every run of the sweep):
instances past their bounds are terminated and their runs recorded ``timeout``/``lost``, and a
group whose instance was preempted, or lost while its runs ran (terminated under them, or
reaped for a stopped heartbeat), gets its next instance through
:func:`chester_backend_ec2.requeue.next_instance`, the one exactly-once step every requeuer
calls, so a laptop that polls at the same time and the supervisor never both start one.
It ends when every run is final, when ``supervisor/stop`` exists (``chester cancel``), or at
its own ``max_lifetime_s``; then it powers its instance off, which terminates it
(``InstanceInitiatedShutdownBehavior=terminate``).

Keys under ``sweeps/<sweep>/supervisor/``::

    spec.json      what it supervises: {"options": the backend's options, "handles": [...]}
    journal.jsonl  what it did, one JSON object a line: ``started``, ``requeued`` (token,
                   attempt, instance, why: ``preempted`` or ``lost with instance i-...``,
                   at), ``error``, ``done``/``stopped``/``lifetime``, and last the
                   ``cycle`` line (last cycle, next cycle); rewritten every cycle
    stop           written by ``chester cancel``: the supervisor ends at its next cycle
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SPEC = "supervisor/spec.json"
JOURNAL = "supervisor/journal.jsonl"
STOP = "supervisor/stop"
ROLE_TAG = "chester:role"
ROLE = "supervisor"

#: Every API action the supervisor's code may call: its instance profile's policy (in
#: docs/backends/ec2.md) allows these and no more; a test checks them against the calls made.
ACTIONS = (
    "ec2:DescribeInstances", "ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances",
    "ec2:CreateFleet", "ec2:CreateLaunchTemplate", "ec2:DescribeSpotInstanceRequests",
    "ec2:CancelSpotInstanceRequests", "iam:PassRole",
    "s3:ListBucket", "s3:GetObject", "s3:PutObject",
)


def journal_lines(events: Sequence[Mapping[str, Any]], cycle: Mapping[str, Any] | None) -> bytes:
    return "".join(json.dumps(e, sort_keys=True) + "\n"
                   for e in [*events, *([cycle] if cycle else [])]).encode()


def read_journal(s3: Any, bucket: str, sp: str) -> list[dict] | None:
    """The supervisor's journal of the sweep at ``sp`` (None: the sweep has none)."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=f"{sp}{JOURNAL}")["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    out = []
    for line in body.decode().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def supervision_line(events: Sequence[Mapping[str, Any]], now: float) -> str:
    """How the supervisor is, for a run's reason column."""
    from chester.target.rundir import clock

    end = next((e for e in reversed(events) if e.get("event") in ("done", "stopped",
                                                                   "lifetime")), None)
    if end is not None:
        return f"supervisor {end['event']} at {clock(end['at'])}"
    cyc = next((e for e in reversed(events) if e.get("event") == "cycle"), None)
    if cyc is None:
        return "supervisor not started yet"
    late = now > float(cyc["next"]) + 3 * float(cyc.get("interval") or 60)
    return (f"supervisor {'silent' if late else 'alive'}, last cycle {clock(cyc['at'])}, "
            f"next {clock(cyc['next'])}")


class Supervisor:
    """One sweep's supervisor: :meth:`cycle` once per interval until :meth:`cycle` says done."""

    def __init__(self, s3: Any, bucket: str, spec_key: str, spec: Mapping[str, Any]):
        from chester.plugin.records import BackendConfig, RunHandle
        from chester_backend_ec2.options import Ec2Options
        from chester_backend_ec2.plugin import NAME, Ec2Backend

        self.s3, self.bucket = s3, bucket
        self.sp = spec_key[:-len(SPEC)]
        self.options = Ec2Options(**spec["options"])
        self.backend = BackendConfig(name=spec.get("backend") or NAME, type=NAME,
                                     options=self.options, project_path=Path("."),
                                     log_dir=Path("."))
        self.handles = [RunHandle.from_dict(h) for h in spec["handles"]]
        self.events: list[dict] = []
        self.started_at = time.time()
        journal = self

        class Supervising(Ec2Backend):
            def requeued(self, sweep: str, group: str, runs: Sequence[tuple[str, str]],
                         attempt: int, instance: str) -> None:
                journal.launched(runs, attempt, instance)

        self.plugin = Supervising()
        self.log("started", handles=len(self.handles))

    def log(self, event: str, **kw: Any) -> None:
        self.events.append({"at": time.time(), "event": event, **kw})

    def launched(self, runs: Sequence[tuple[str, str]], attempt: int, iid: str) -> None:
        """This supervisor started instance ``iid`` (number ``attempt`` of its group) for
        ``runs`` (token, why: ``preempted`` or ``lost with instance i-...``)."""
        for token, why in runs:
            self.log("requeued", token=token, attempt=attempt, instance=iid, why=why)

    def write(self, cycle: Mapping[str, Any] | None) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.sp}{JOURNAL}",
                           Body=journal_lines(self.events, cycle))

    def stop_asked(self) -> bool:
        from chester_backend_ec2.plugin import _exists

        return _exists(self.s3, self.bucket, f"{self.sp}{STOP}")

    def cycle(self) -> bool:
        """One cycle; True when the supervisor is done (the journal says why)."""
        o = self.options
        now = time.time()
        if self.stop_asked():
            self.log("stopped")
        elif o.max_lifetime_s and now - self.started_at > o.max_lifetime_s:
            self.log("lifetime", max_lifetime_s=o.max_lifetime_s)
        else:
            try:
                out = self.plugin.chester_status(self.backend, self.handles)
            except Exception as exc:  # the next cycle tries again
                self.log("error", error=str(exc))
            else:
                if all(st.state.terminal for st in out.values()):
                    self.log("done", states=sorted({st.state.value for st in out.values()}))
                    self.write(None)
                    return True
            self.write({"at": now, "event": "cycle", "next": now + o.supervise_interval_s,
                        "interval": o.supervise_interval_s})
            return False
        self.write(None)
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m chester_backend_ec2.supervisor BUCKET SPEC_KEY`` on the supervisor instance."""
    import boto3

    bucket, spec_key = (sys.argv[1:] if argv is None else list(argv))[:2]
    kw = {"region_name": os.environ.get("CHESTER_EC2_REGION") or None,
          "endpoint_url": os.environ.get("CHESTER_EC2_S3_ENDPOINT") or None}
    s3 = boto3.client("s3", **kw)
    spec = json.loads(s3.get_object(Bucket=bucket, Key=spec_key)["Body"].read())
    sup = Supervisor(s3, bucket, spec_key, spec)
    try:
        while not sup.cycle():
            time.sleep(sup.options.supervise_interval_s)
    finally:
        subprocess.run(shlex.split(os.environ.get("CHESTER_EC2_POWEROFF", "shutdown -h now")),
                       check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
