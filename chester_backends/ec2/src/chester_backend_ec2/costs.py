"""What a pool (``type: pool``) asks of EC2: the most a run costs (``chester_capacity``)
and what a sweep's instances have cost (``chester_spend``), from :mod:`.prices` and the
instances' hours."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chester.plugin.records import Capacity, RunHandle, Spend
from chester_backend_ec2 import prices
from chester_backend_ec2.options import Ec2Options

_GMT = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) GMT\)")


def types_of(o: Ec2Options) -> tuple[str, ...]:
    return tuple(o.instance_types) or (o.instance_type,)


def price_bound(o: Ec2Options, itype: str) -> float | None:
    """The most an instance of ``itype`` costs per hour: a spot bid's ``max_price``, else the
    on-demand price (AWS's default spot maximum; ``hourly_price`` or the list price)."""
    if o.spot and o.max_price:
        return float(o.max_price)
    return prices.on_demand(o, itype)[0]


def capacity(o: Ec2Options, limits: Iterable[float | None]) -> Capacity:
    """Instances start on demand (no free capacity to wait for, no room limit); a run costs
    at most the dearest type's bound shared by the runs of one instance, for at most its
    ``time_limit_s`` (``limits``: each run's, None where it has none)."""
    bounds = [price_bound(o, t) for t in types_of(o)]
    per_hour = None if any(b is None for b in bounds) else \
        max(b for b in bounds if b is not None) / max(1, o.runs_per_instance)
    lims = list(limits) or [o.time_limit_s]
    hours = None if any(v is None for v in lims) else max(float(v or 0) for v in lims) / 3600
    note = "price unknown (set hourly_price)" if per_hour is None else \
        f"at most {prices.usd(per_hour)} per run-hour"
    return Capacity(free=0, room=None, wait_s=0.0, paid=True, usd_per_run_hour=per_hour,
                    run_hours=hours, note=note)


def _ended(inst: Mapping[str, Any]) -> float | None:
    m = _GMT.search(inst.get("StateTransitionReason") or "")
    if not m:
        return None
    import calendar

    return float(calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")))


def spend(o: Ec2Options, insts: Sequence[Mapping[str, Any]], handles: Sequence[RunHandle],
          now_prices: Mapping[str, tuple[float | None, str | None]], *, now: float,
          alive: Iterable[str], group_tag: str, launched: Any) -> Spend:
    """Money spent by the instances of these runs' groups (each instance's price now x its
    hours: from launch to its end, or to now while alive; an end not recorded counts to
    now) and projected (what the live ones may still cost until their runs' time limit, or
    their ``max_lifetime_s``, at the price bound; a run with no instance yet at its most)."""
    live = set(alive)
    groups = {h.get("group") for h in handles if h.get("group")}
    mine = [i for i in insts if _tag(i, group_tag) in groups]
    spent = projected = 0.0
    seen_groups: set[str] = set()
    for inst in mine:
        start = launched(inst.get("LaunchTime"))
        if start is None:
            continue
        seen_groups.add(_tag(inst, group_tag) or "")
        price = now_prices.get(inst["InstanceId"], (None, None))[0]
        bound = price_bound(o, inst.get("InstanceType") or o.instance_type)
        if price is None:
            price = bound or 0.0
        is_live = inst["State"]["Name"] in live
        end = now if is_live else (_ended(inst) or now)
        cost = price * max(0.0, end - start) / 3600
        spent += cost
        projected += cost
        if is_live:
            cap = o.time_limit_s or o.max_lifetime_s
            if cap:
                projected += (bound or price) * max(0.0, cap - (now - start)) / 3600
    waiting = [h for h in handles if h.get("group") not in seen_groups]
    if waiting and o.time_limit_s:
        per_run = capacity(o, [o.time_limit_s])
        if per_run.usd_per_run_hour is not None and per_run.run_hours is not None:
            projected += len(waiting) * per_run.usd_per_run_hour * per_run.run_hours
    return Spend(usd=spent, usd_projected=max(projected, spent))


def _tag(inst: Mapping[str, Any], key: str) -> str | None:
    for t in inst.get("Tags", ()):
        if t["Key"] == key:
            return str(t["Value"])
    return None
