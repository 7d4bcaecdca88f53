"""``chester monitor`` / ``python -m chester.auto_pull``: wait and pull, from the job store.

Works on every sweep that still has unfinished or unpulled runs (or one named sweep), so it
can be stopped and started again at any time, from any shell, after the laptop slept.
"""

from __future__ import annotations

import time

from chester.config import get_config
from chester.dispatch import Dispatcher
from chester.errors import UserError
from chester.sweeps import Sweep, open_store
from chester.types import State


def _open_sweeps(exp_prefix: str | None) -> list[Sweep]:
    cfg = get_config()
    store = open_store(cfg, create=False)
    disp = Dispatcher()
    rows = store.sweeps(exp_prefix)
    if exp_prefix and not rows:
        raise UserError(f"no sweep named {exp_prefix!r} in the job store {cfg.store_path}")
    out = []
    for row in rows:
        runs = store.runs(row.id)
        if any(not r.state.terminal or (r.handle and not r.pulled_at) for r in runs):
            out.append(Sweep(row=row, store=store, config=cfg, dispatcher=disp))
    return out


def monitor(exp_prefix: str | None = None, *, interval: float | None = None,
            bare: bool = False, timeout: float | None = None, once: bool = False) -> int:
    """Poll every unfinished sweep and pull each run as it ends. Returns an exit status."""
    sweeps = _open_sweeps(exp_prefix)
    if not sweeps:
        print("nothing to monitor: every run has ended and been pulled")
        return 0
    deadline = None if timeout is None else time.monotonic() + timeout
    for sw in sweeps:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if once:
            rows = sw.refresh()
            sw.pull(rows=[r for r in rows if r.state.terminal and not r.pulled_at], bare=bare)
            continue
        sw.wait(timeout=left, pull=True, poll_interval=interval, bare_failed=True,
                exclude=("*.pkl", "*.png", "*.gif", "*.pth", "*.pt") if bare else ())
    failed = 0
    for sw in sweeps:
        states = sw.status(refresh=False)
        failed += sum(1 for s in states.values() if s.terminal and s != State.SUCCEEDED)
        print(f"{sw.exp_prefix}: " + ", ".join(
            f"{n} {s}" for s, n in sorted(sw.counts().items())))
    return 1 if failed else 0
