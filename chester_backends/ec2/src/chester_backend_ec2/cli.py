"""``chester ec2 ls`` and ``chester ec2 kill``: what chester started on EC2, found by its tags.

They need no job store and no handles: an instance carries ``chester:sweep`` and
``chester:group`` tags from the moment it is launched, so a submit refused midway, a lost
launcher or a deleted project leaves nothing these commands cannot find.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from chester.plugin.errors import ChesterError, UserError

LIVE = ["pending", "running", "stopping", "stopped"]


def register(subparsers: Any, plugin: Any) -> None:
    """Add ``chester ec2``; its actions run with ``plugin``, the ec2 backend instance whose
    hook registered them (its clients and caches)."""
    p = subparsers.add_parser("ec2", help="EC2 instances chester started (found by their tags)")
    sub = p.add_subparsers(dest="ec2_command", metavar="ACTION")
    ls = sub.add_parser("ls", help="list live instances chester started: sweep, age, type, "
                                       "cost per hour, role (runs or supervisor)")
    ls.add_argument("sweep", nargs="?", help="only this sweep (its chester:sweep tag)")
    ls.add_argument("--backend", help="the ec2 backend of chester.yaml (default: the only one)")
    ls.add_argument("--json", action="store_true", help="JSON output")
    kill = sub.add_parser("kill", help="terminate the live instances of a sweep (or --all), "
                                       "cancelling their runs and spot requests first")
    kill.add_argument("sweep", nargs="?", help="the sweep (its chester:sweep tag)")
    kill.add_argument("--all", action="store_true", help="every instance chester started here")
    kill.add_argument("--backend", help="the ec2 backend of chester.yaml (default: the only one)")
    p.set_defaults(chester_command=lambda args: main(args, plugin))


def _backend(name: str | None) -> Any:
    from chester.config import get_config

    cfg = get_config()
    if name:
        return cfg.backend(name)
    names = [n for n in cfg.backend_names() if n in cfg.values["backends"] and
             cfg.backend_raw(n)[0] == "ec2"]
    if len(names) != 1:
        raise UserError("chester ec2: " + (f"several ec2 backends ({', '.join(names)}): pick one "
                                           "with --backend" if names else
                                           "no backend of type ec2 in chester.yaml"))
    return cfg.backend(names[0])


def live_instances(plugin: Any, o: Any, sweep: str | None = None) -> list[dict]:
    from chester_backend_ec2 import aws
    from chester_backend_ec2.plugin import SWEEP_TAG, _describe

    ec2 = plugin.client("ec2", o)
    flt = [{"Name": "instance-state-name", "Values": LIVE}]
    flt.append({"Name": f"tag:{SWEEP_TAG}", "Values": [sweep]} if sweep else
               {"Name": "tag-key", "Values": [SWEEP_TAG]})
    with aws.errors("describing instances", ec2):
        return _describe(ec2, flt)


def main(args: argparse.Namespace, plugin: Any) -> int:
    """``chester ec2 ls|kill`` with ``plugin``, the ec2 backend instance."""
    from chester_backend_ec2.plugin import GROUP_TAG, SWEEP_TAG, _tag

    if args.ec2_command not in ("ls", "kill"):
        raise UserError("usage: chester ec2 ls [SWEEP] | chester ec2 kill SWEEP|--all")
    backend = _backend(args.backend)
    o = backend.options
    if args.ec2_command == "ls":
        from chester_backend_ec2 import aws, prices

        insts = live_instances(plugin, o, args.sweep)
        costs = prices.instance_prices(o, plugin.client("ec2", o), insts)
        rows = []
        now = time.time()
        for i in sorted(insts, key=lambda i: (_tag(i, SWEEP_TAG) or "", i["LaunchTime"])):
            launched = i["LaunchTime"].timestamp()
            usd, source = costs[i["InstanceId"]]
            rows.append({"instance": i["InstanceId"], "sweep": _tag(i, SWEEP_TAG),
                         "state": i["State"]["Name"], "type": i.get("InstanceType"),
                         "market": i.get("InstanceLifecycle") or "on-demand",
                         "launched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(launched)),
                         "hours": round((now - launched) / 3600, 2),
                         "usd_per_hour": usd, "price_source": source,
                         "attempt": _tag(i, "chester:attempt") or "1",
                         "role": _tag(i, "chester:role") or "runs"})
        if args.json:
            json.dump(rows, sys.stdout, indent=1)
            print()
        else:
            from chester.cli import emit_table

            emit_table(f"chester ec2 instances ({len(rows)})",
                       ["Instance", "Sweep", "State", "Type", "Market", "Launched", "Hours",
                        "Cost/h", "Attempt", "Role"],
                       [[r["instance"], r["sweep"], r["state"], r["type"], r["market"],
                         r["launched"], r["hours"],
                         "unknown" if r["usd_per_hour"] is None else prices.usd(
                             r["usd_per_hour"]),
                         r["attempt"], r["role"]] for r in rows])
            if rows:
                print(f"estimated cost: {prices.total_line(costs)}")
        return 0
    if not args.all and not args.sweep:
        raise UserError("chester ec2 kill: name a SWEEP (see `chester ec2 ls`) or pass --all")
    from chester_backend_ec2 import aws

    insts = live_instances(plugin, o, None if args.all else args.sweep)
    ec2 = plugin.client("ec2", o)
    # first the runs: their agents record them cancelled, and no status poll requeues them
    sweeps = sorted({s for s in (_tag(i, SWEEP_TAG) for i in insts) if s} if args.all
                    else {args.sweep})
    try:
        n = cancel_runs(plugin, o, sweeps)
        if n:
            print(f"cancelled {n} unfinished run(s)")
    except ChesterError as exc:  # the instances are terminated all the same
        print(f"chester ec2 kill: could not mark the runs cancelled ({exc}); they may read "
              "failed or lost", file=sys.stderr)
    groups = sorted({g for g in (_tag(i, GROUP_TAG) for i in insts) if g})
    plugin._cancel_spot_requests(o, ec2, groups)
    ids = sorted(i["InstanceId"] for i in insts)
    if ids:
        with aws.errors("terminating instances", ec2):
            for k in range(0, len(ids), 500):
                ec2.terminate_instances(InstanceIds=ids[k:k + 500])
    print(f"terminated {len(ids)} instance(s)" + (": " + " ".join(ids) if ids else ""))
    n = delete_launch_templates(plugin, ec2, None if args.all else args.sweep)
    if n:
        print(f"deleted {n} launch template(s)")
    return 0


#: who a cancel marker written by ``chester ec2 kill`` names (status reads "cancelled by ...")
KILLED_BY = "chester ec2 kill"


def cancel_runs(plugin: Any, o: Any, sweeps: list[str]) -> int:
    """Write a cancel marker naming ``chester ec2 kill`` for every unfinished run of these
    sweeps (the runs of their instance specs whose record is not final); the number written."""
    from chester_backend_ec2 import aws
    from chester_backend_ec2.plugin import FINAL_RECORDS, _list, sweep_prefix

    s3 = plugin.client("s3", o)
    n = 0
    body = json.dumps({"by": KILLED_BY, "at": time.time()}).encode()
    with aws.errors("marking runs cancelled", s3):
        for sweep in sweeps:
            sp = sweep_prefix(o, sweep)
            ctl = plugin.read_ctl(s3, o, sweep)
            tokens = {r["token"] for obj in _list(s3, o.bucket, f"{sp}instances/")
                      for r in (plugin._get_json(s3, o, obj) or {}).get("runs", ())}
            for tok in sorted(tokens):
                if tok in ctl.cancels or \
                        (ctl.records.get(tok) or {}).get("state") in FINAL_RECORDS:
                    continue
                s3.put_object(Bucket=o.bucket, Key=f"{sp}ctl/cancel/{tok}", Body=body)
                n += 1
    return n


def delete_launch_templates(plugin: Any, ec2: Any, sweep: str | None) -> int:
    """Delete the launch templates EC2 Fleet launches used (tagged like their sweep). They
    cost nothing, so a launcher not allowed to list or delete them is not an error."""
    from botocore.exceptions import ClientError

    from chester_backend_ec2.plugin import SWEEP_TAG

    flt = [{"Name": f"tag:{SWEEP_TAG}", "Values": [sweep]} if sweep else
           {"Name": "tag-key", "Values": [SWEEP_TAG]}]
    n = 0
    try:
        for page in ec2.get_paginator("describe_launch_templates").paginate(Filters=flt):
            for t in page.get("LaunchTemplates", ()):
                ec2.delete_launch_template(LaunchTemplateId=t["LaunchTemplateId"])
                plugin._templates.discard(t["LaunchTemplateName"])
                n += 1
    except ClientError:
        pass
    return n
