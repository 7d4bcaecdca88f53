"""Placing a pool's runs on its members (``type: pool``, :mod:`chester.plugin.pool`): ask
each member what it can take (``chester_capacity``) and what the sweep has cost
(``chester_spend``), decide with :func:`chester.plugin.pool.plan_placement`, and record each
run's member and its folder there in the job store before anything is submitted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from chester.logs import get_logger
from chester.plugin.dispatch import Dispatcher
from chester.plugin.errors import BackendError, HookNotImplementedError
from chester.plugin.pool import Placement, plan_placement, unknown_capacity
from chester.plugin.records import BackendConfig, Capacity, RunSpec, Spend
from chester.store import RunRow, Store
from chester.variants.naming import remote_mapper

log = get_logger()


def capacity(dispatcher: Dispatcher, member: BackendConfig, runs: Sequence[RunSpec]
             ) -> tuple[Capacity, str | None]:
    """What ``member`` says it can take, and a line when it could not say (a member that
    does not answer takes no runs; one without the hook counts as unknown)."""
    try:
        return dispatcher.call("chester_capacity", member, runs=list(runs)), None
    except HookNotImplementedError:
        return unknown_capacity(), None
    except BackendError as exc:
        return Capacity(free=0, room=0), f"member {member.name!r} did not answer ({exc}); " \
            "no runs sent to it now"


def spend(dispatcher: Dispatcher, pool: BackendConfig, rows: Sequence[RunRow]) -> Spend:
    """What the pool's submitted runs ``rows`` have cost, member by member (a member
    without ``chester_spend`` costs nothing)."""
    total = Spend()
    by_member: dict[str, list[RunRow]] = {}
    for r in rows:
        if r.member and r.handle is not None:
            by_member.setdefault(r.member, []).append(r)
    for m in pool.members:
        group = by_member.get(m.name)
        if not group:
            continue
        try:
            total = total + dispatcher.call("chester_spend", m,
                                            handles=[r.handle for r in group])
        except HookNotImplementedError:
            pass
    return total


def pool_rows(store: Store, pool: BackendConfig, exp_prefix: str) -> list[RunRow]:
    """The runs of ``exp_prefix`` launched on the pool ``pool`` (its budget covers them)."""
    return [r for r in store.experiment_runs(exp_prefix) if r.backend == pool.name]


@attrs.frozen(kw_only=True)
class Placed:
    """The runs for each member (rows as recorded: member and remote folder set), the
    runs held back, and what placement said."""

    groups: tuple[tuple[BackendConfig, tuple[RunRow, ...]], ...]
    held: tuple[RunRow, ...]
    notices: tuple[str, ...]
    placement: Placement | None = None


def place(store: Store, dispatcher: Dispatcher, pool: BackendConfig, rows: Sequence[RunRow],
          *, exp_prefix: str, project_path: Path, dry: bool = False) -> Placed:
    """Place ``rows`` (runs to submit) on ``pool``'s members. A run caught mid-submit goes
    back to the member it was sent to (whose submit checks its token); the others are
    placed anew, a run that was moved never on the member it moved from. Unless ``dry``,
    each run's member is in the store before this returns."""
    members = {m.name: m for m in pool.members}
    again = [r for r in rows if r.submit_state != "new" and r.member in members]
    fresh = [r for r in rows if not (r.submit_state != "new" and r.member in members)]
    specs = [RunSpec(run_id=r.id, token=r.token, name=r.name, exp_prefix=exp_prefix,
                     local_dir=Path(r.local_dir), remote_dir=r.remote_dir) for r in fresh]
    notices: list[str] = []
    caps: dict[str, Capacity] = {}
    for m in pool.members:
        cap, line = capacity(dispatcher, m, specs) if fresh else (unknown_capacity(), None)
        caps[m.name] = cap
        if line:
            notices.append(line)
    o = pool.options
    used = spend(dispatcher, pool, pool_rows(store, pool, exp_prefix)) if fresh and (
        any(c.paid for c in caps.values()) or o.budget.su is not None) else Spend()
    projected = used.usd_projected
    su_left = None if o.budget.su is None else o.budget.su - used.su
    out: dict[str, list[RunRow]] = {}
    for r in again:
        out.setdefault(r.member or "", []).append(r)
    records: list[tuple[int, str, str]] = []
    held: list[RunRow] = []
    plan = None
    by_origin: dict[str | None, list[RunRow]] = {}
    for r in fresh:  # a moved run is placed away from the member it left
        by_origin.setdefault(r.moved_from if r.moved_from in members else None, []).append(r)
    for origin, group in by_origin.items():
        plan = plan_placement(len(group), [(n, c) for n, c in caps.items() if n != origin],
                              max_wait_s=o.max_wait_s, budget_usd=o.budget.usd,
                              projected_usd=projected, run_time_s=o.run_time_s,
                              su_left=su_left)
        projected = plan.projected_usd
        notices += [n for n in plan.notices if n not in notices]
        i = 0
        for name, k in plan.counts:
            to = _remote_dir_for(dispatcher, members[name], project_path)
            for r in group[i:i + k]:
                row = attrs.evolve(r, member=name, remote_dir=to(r.local_dir))
                out.setdefault(name, []).append(row)
                records.append((r.id, name, row.remote_dir))
            i += k
            caps[name] = _less(caps[name], k)
        held += group[i:]
    if not dry:
        if records:
            store.place(records)
        if held:
            store.unplace([r.id for r in held])
    log.info("pool_placed", pool=pool.name, **{n: len(g) for n, g in out.items()},
             held=len(held))
    groups = tuple((members[n], tuple(g)) for n, g in out.items() if g)
    return Placed(groups=groups, held=tuple(held), notices=tuple(notices), placement=plan)


def _less(cap: Capacity, k: int) -> Capacity:
    """A member's capacity once ``k`` more runs went there."""
    return attrs.evolve(cap, free=max(0, cap.free - k),
                        room=None if cap.room is None else max(0, cap.room - k))


def _remote_dir_for(dispatcher: Dispatcher, member: BackendConfig, project_path: Path) -> Any:
    spec = dispatcher.manager.get_backend(member.type).spec
    root = spec.remote_root(member.options) if spec.remote_root else None
    if root is None:
        return str
    return remote_mapper(project_path, root)


__all__ = ["Placed", "capacity", "place", "pool_rows", "spend"]
