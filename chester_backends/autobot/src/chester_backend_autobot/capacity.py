"""What a pool (``type: pool``) asks of the lab, and what each run asks of its nodes: the
GPUs a run takes and the nodes it may go to (which the plan also sends to the scheduler),
the runs the lab's free GPUs start now (from the scheduler's ``capacity`` answer) and the
GPU-hours the runs have used (from their states); and a run's end as the end watcher sees it
(its host the node it was placed on)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from chester.plugin.errors import UserError
from chester.plugin.records import BackendConfig, Capacity, RunHandle, RunSpec, RunStatus, Spend
from chester_backend_autobot.options import AutobotOptions, node_name, scheduler_config


def gpus(backend: BackendConfig, r: RunSpec, who: str) -> int:
    """The GPUs the run takes: a ``gpus_per_run`` (or ``gpus``) resource, else the
    backend's ``gpus_per_run``; at least one."""
    g = r.resources.get("gpus_per_run", r.resources.get("gpus"))
    try:
        n = int(g) if g is not None else backend.options.gpus_per_run
    except (TypeError, ValueError):
        raise UserError(f"{who}: run {r.name!r}: gpus must be a whole "
                        f"number, not {g!r}") from None
    return max(1, n)


def nodes(backend: BackendConfig, r: RunSpec, who: str) -> list[str]:
    """The run's node allow-list (the earlier chester's #CHESTERNODE): a ``nodes``
    resource, else every node of the backend."""
    o: AutobotOptions = backend.options
    want = r.resources.get("nodes")
    if not want:
        return list(o.nodes)
    if isinstance(want, str):
        want = want.replace(",", " ").split()
    names = [node_name(str(n)) for n in want]
    unknown = [n for n in names if n not in o.nodes]
    if unknown:
        raise UserError(f"{who}: run {r.name!r} asks for nodes {unknown} "
                        f"that are not in this backend's nodes ({', '.join(o.nodes)})")
    return names


def per_run(backend: BackendConfig, runs: Sequence[RunSpec], who: str) -> int:
    """The GPUs the hungriest of the runs takes (the backend's ``gpus_per_run`` without
    runs): what a free run is counted in."""
    return max((gpus(backend, r, who) for r in runs),
               default=max(1, backend.options.gpus_per_run))


def request(backend: BackendConfig) -> str:
    """The scheduler's ``capacity`` call's stdin: its config and the nodes to ask."""
    return json.dumps({"config": scheduler_config(backend),
                       "nodes": list(backend.options.nodes)})


def parse(data: Mapping[str, Any], per_run: int) -> Capacity:
    """The capacity the scheduler's answer says: each node's free GPUs in whole runs of
    ``per_run`` GPUs, less what its queue waits to start. What waits beyond that has no
    known start (runs' lengths are not known); a lab costs nothing."""
    free_runs = sum(int(f) // per_run for f in data["free"].values())
    waiting = -(-int(data["queued_gpus"]) // per_run)
    down = f", {len(data['unreachable'])} nodes not answering" if data["unreachable"] else ""
    return Capacity(free=max(0, free_runs - waiting),
                    note=f"{sum(data['free'].values())} of {data['total']} GPUs free, "
                         f"{waiting} runs queued{down}")


def spend(backend: BackendConfig, states: Iterable[RunStatus]) -> Spend:
    """GPU-hours: each started run's time from its start to its end (or now) x the
    backend's GPUs per run."""
    now = time.time()
    seconds = sum(max(0.0, (st.ended_at or now) - st.started_at)
                  for st in states if st.started_at is not None)
    return Spend(gpu_hours=seconds / 3600 * max(1, backend.options.gpus_per_run))


#: the run's placement record (the node and GPUs the scheduler gave it: its
#: ``scheduler.PLACEMENT``, not imported here so that loading the plugin stays light), which
#: the end watcher reads beside the run's end: the node is the run's host, as a poll says
PLACEMENT = ".chester/autobot.json"


def final_status(handle: RunHandle, records: dict[str, Any]) -> RunStatus | None:
    """A run's final status from the records the end watcher sent (the one rule:
    :func:`chester.remote.watcher.hosted_final_status`), its host the node its placement
    of this attempt names, as the scheduler's ``status`` says."""
    from chester.remote.watcher import hosted_final_status

    st = hosted_final_status(handle, records)
    pl = (records.get("files") or {}).get(PLACEMENT)
    if st is None or not isinstance(pl, dict) or pl.get("token") != handle.token:
        return st
    if int(pl.get("attempt") or 1) < int(records.get("attempt") or 1) or not pl.get("node"):
        return st
    return attrs.evolve(st, host=pl["node"])
