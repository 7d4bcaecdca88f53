"""A pool's runs while a laptop watches (``Sweep.wait``, ``chester monitor``): runs no
member had room for are placed once one has, and a run that has waited past the pool's
``max_wait`` on its member without starting moves, once, to a member that starts it now
(free capacity, or a paid member within the budget).

A move is three steps, each recorded before the next: the run is marked ``moving`` and
cancelled on its member; once its state there is final, it becomes a new submission of
itself (a new token), unplaced, ``moved_from`` that member (a run whose ``moved_from`` is
set never moves again); then it is placed like any unplaced run, away from that member.
A run that started in the moment before the cancel reached it is submitted again with its
next attempt; one that ended otherwise first (it ran to its end) stays as it is. Each member keeps its own hooks: the runs are prepared and submitted on it
from their local run folders (a pool's launch writes every run's folder).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from chester.launcher.placing import capacity, place, pool_rows, spend
from chester.logs import get_logger
from chester.plugin.pool import plan_placement
from chester.plugin.records import BackendConfig, Capacity, RunSpec, State
from chester.store import RunRow
from chester.target import rundir as rd
from chester.variants.naming import safe_component

log = get_logger()


def pools_of(sweep: Any, rows: Sequence[RunRow]) -> list[BackendConfig]:
    """The pools these rows were launched on."""
    out = []
    for name in sorted({r.backend for r in rows}):
        cfg = sweep._backend_for(name)
        if cfg.members:
            out.append(cfg)
    return out


def step(sweep: Any, rows: Sequence[RunRow], *, now: float | None = None) -> list[str]:
    """One watcher's turn over a sweep's pool runs: finish moves whose cancel has ended,
    start new moves, place unplaced runs. Returns what it did, one line each."""
    lines: list[str] = []
    now = time.time() if now is None else now
    for pool in pools_of(sweep, rows):
        mine = [r for r in rows if r.backend == pool.name and not r.reused_by]
        lines += _finish_moves(sweep, mine)
        lines += _start_moves(sweep, pool, [sweep.run_row(r.id) for r in mine], now)
        fresh = [sweep.run_row(r.id) for r in mine]
        lines += _place_unplaced(sweep, pool, fresh)
    return lines


def _finish_moves(sweep: Any, rows: Sequence[RunRow]) -> list[str]:
    ended = [r for r in rows if r.submit_state == "moving" and r.state.terminal]
    if not ended:
        return []
    # ended otherwise than by the cancel (it ran to its end first): it stays, its result
    # is the run's, and it never moves
    sweep.store.keep_after_move([r.id for r in ended if r.state != State.CANCELLED])
    moving = [r for r in ended if r.state == State.CANCELLED]
    sweep.store.finish_move([(r.id, r.started_at is not None) for r in moving])
    return [f"{len(moving)} runs left {m} (cancelled before they started)"
            for m in sorted({r.member or "" for r in moving})]


def _start_moves(sweep: Any, pool: BackendConfig, rows: Sequence[RunRow], now: float
                 ) -> list[str]:
    """Cancel, to move them, the runs that waited past ``max_wait`` unstarted on a free
    member, as many as other members would start now (free capacity, or paid within the
    budget). A run on a paid member never moves: its instance is already paid for."""
    o = pool.options
    stuck = [r for r in rows if r.member and r.handle is not None and r.moved_from is None
             and r.submit_state == "submitted" and r.started_at is None
             and r.state in (State.QUEUED, State.PENDING)
             and r.submitted_at is not None and now - r.submitted_at > o.max_wait_s]
    if not stuck:
        return []
    specs = [RunSpec(run_id=r.id, token=r.token, name=r.name, exp_prefix=sweep.exp_prefix,
                     local_dir=Path(r.local_dir), remote_dir=r.remote_dir) for r in stuck]
    caps: dict[str, Capacity] = {}
    for m in pool.members:
        cap, _line = capacity(sweep.dispatcher, m, specs)
        # a move goes where a run starts now: free room only, or paid capacity
        caps[m.name] = cap if cap.paid else attrs.evolve(cap, room=min(
            cap.free, cap.room if cap.room is not None else cap.free), wait_s=None)
    # a run on a paid member stays: its instance is paid for, and nothing else started it
    stuck = [r for r in stuck if not caps[r.member or ""].paid]
    if not stuck:
        return []
    projected = spend(sweep.dispatcher, pool, pool_rows(sweep.store, pool, sweep.exp_prefix)
                      ).usd_projected if any(c.paid for c in caps.values()) else 0.0
    chosen: list[RunRow] = []
    for src in sorted({r.member or "" for r in stuck}):
        group = sorted((r for r in stuck if r.member == src), key=lambda r: r.submitted_at or 0)
        plan = plan_placement(len(group), [(n, c) for n, c in caps.items() if n != src],
                              max_wait_s=-1.0, budget_usd=o.budget.usd,
                              projected_usd=projected, run_time_s=o.run_time_s)
        taken = sum(k for _n, k in plan.counts)
        projected = plan.projected_usd
        for name, k in plan.counts:
            c = caps[name]
            caps[name] = attrs.evolve(c, free=max(0, c.free - k),
                                      room=None if c.room is None else max(0, c.room - k))
        chosen += group[:taken]
    if not chosen:
        return []
    sweep.store.begin_move([r.id for r in chosen])
    moving = [sweep.run_row(r.id) for r in chosen]
    moving = [r for r in moving if r.submit_state == "moving"]
    by_member: dict[str, list[RunRow]] = {}
    for r in moving:
        by_member.setdefault(r.member or "", []).append(r)
    for name, group in by_member.items():
        sweep.dispatcher.call("chester_cancel", sweep._backend_for(name),
                              handles=[r.handle for r in group])
    sweep.refresh(only=moving)
    return [f"{len(g)} runs waited over {o.max_wait_s:g} s on {n}: moving them"
            for n, g in by_member.items()]


def _place_unplaced(sweep: Any, pool: BackendConfig, rows: Sequence[RunRow]) -> list[str]:
    """Place and submit the runs with no member yet (held at launch, or moved)."""
    todo = [r for r in rows if r.member is None and r.submit_state == "new"]
    if not todo:
        return []
    placed = place(sweep.store, sweep.dispatcher, pool, todo, exp_prefix=sweep.exp_prefix,
                   project_path=sweep.config.project_path)
    lines = [f"pool {pool.name!r}: {n}" for n in placed.notices]  # the budget, no room
    for member, group in placed.groups:
        submit_rows(sweep, member, [sweep.run_row(r.id) for r in group])
        lines.append(f"{len(group)} runs placed on {member.name}")
    return lines


def project_dir_of(sweep: Any, member: BackendConfig) -> str:
    spec = sweep.dispatcher.manager.get_backend(member.type).spec
    root = spec.remote_root(member.options) if spec.remote_root else None
    return root or str(sweep.config.project_path)


def submit_rows(sweep: Any, member: BackendConfig, rows: Sequence[RunRow]) -> None:
    """Submit runs placed on ``member`` from their local run folders: each run record
    rewritten (token, attempt, the member's project folder), then the member's own
    ``chester_prepare`` and ``chester_submit`` (a sweep spec made from the folders for a
    member that takes one)."""
    from chester.launcher.launching import on_members
    from chester.launcher.payloads import split_payload
    from chester.launcher.relaunching import record_submit_failure
    from chester.target import sweepspec

    caps = sweep.dispatcher.manager.get_backend(member.type).spec.capabilities
    project_dir = project_dir_of(sweep, member)
    options = {launch.id: launch.options for launch in sweep.store.sweeps(sweep.exp_prefix)}
    staging = Path(tempfile.mkdtemp(prefix=f"chester-{safe_component(sweep.exp_prefix)}-"))
    try:
        entries: list[Any] = []
        fn_bytes = b""
        envs: dict[int, dict[str, str]] = {}
        for r in rows:
            d = Path(r.local_dir)
            meta = rd.read_json(d / rd.RUN_JSON) or {}
            envs[r.id] = dict(meta.get("env") or {})
            meta = {**meta, "token": r.token, "attempt": r.attempt, "project_dir": project_dir}
            rd.write_json_atomic(d / rd.RUN_JSON, meta)
            if caps.sweep_spec:
                fn, variant = split_payload((d / rd.PAYLOAD).read_bytes(), meta.get("fn_bytes"))
                fn_bytes = fn_bytes or fn
                entries.append((r.remote_dir, (d / rd.VARIANT_JSON).read_bytes(),
                                json.dumps(meta).encode(), variant))
        spec_file = None
        if caps.sweep_spec:
            spec_file = str(staging / "runs.spec")
            sweepspec.write(spec_file, fn_bytes, entries)
        specs = []
        for r in rows:
            res = (options.get(r.sweep_id) or {}).get("resources") or []
            specs.append(RunSpec(run_id=r.id, token=r.token, name=r.name,
                                 exp_prefix=sweep.exp_prefix, local_dir=Path(r.local_dir),
                                 remote_dir=r.remote_dir, env=envs[r.id], attempt=r.attempt,
                                 resources=dict(res[r.idx]) if r.idx < len(res) else {},
                                 spec_file=spec_file))
        prepared = sweep.dispatcher.call("chester_prepare", member, runs=specs,
                                         staging_dir=staging)
        sweep.store.set_submit_state([r.id for r in rows], "submitting")
        try:
            handles = sweep.dispatcher.call("chester_submit", member, prepared=prepared)
        except BaseException as exc:
            record_submit_failure(sweep.store, list(rows), exc)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sweep.store.record_submitted(on_members(handles, rows))


__all__ = ["pools_of", "project_dir_of", "step", "submit_rows"]
