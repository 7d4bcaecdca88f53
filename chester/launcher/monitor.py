"""``chester monitor`` / ``python -m chester.auto_pull``: wait and pull, from the job store.

Works on every sweep that still has unfinished or unpulled runs (or one named sweep), so it
can be stopped and started again at any time, from any shell, after the laptop slept.
"""

from __future__ import annotations

import time

from chester.config import get_config
from chester.launcher.sweeps import Sweep, find_sweep, open_store
from chester.plugin.dispatch import Dispatcher
from chester.plugin.errors import WaitTimeout
from chester.plugin.records import State
from chester.store import SweepRow


def _open_sweeps(ref: str | None) -> list[Sweep]:
    """The sweep ``ref`` names (``PREFIX``: every launch; ``PREFIX@N``: one), or every sweep
    with unfinished or unpulled runs; each read from the store afresh while it is watched."""
    cfg = get_config()
    store = open_store(cfg, create=False)
    disp = Dispatcher()
    if ref:
        row, experiment = find_sweep(store, ref)
        candidates = [Sweep(row=row, store=store, config=cfg, dispatcher=disp,
                            experiment=experiment)]
    else:
        latest: dict[str, SweepRow] = {}
        for row in store.sweeps():
            latest[row.exp_prefix] = row
        candidates = [Sweep(row=row, store=store, config=cfg, dispatcher=disp, experiment=True)
                      for row in sorted(latest.values(), key=lambda r: r.id)]
    # runs never submitted are nothing to wait for: they wait for the launch to run again
    return [sw for sw in candidates
            if any(r.handle is not None and (not r.state.terminal or not r.pulled_at)
                   for r in sw.rows())]


def monitor(exp_prefix: str | None = None, *, interval: float | None = None,
            bare: bool = False, timeout: float | None = None, once: bool = False) -> int:
    """Poll every unfinished sweep (or the one ``exp_prefix`` names: ``PREFIX`` or
    ``PREFIX@N``) and pull each run as it ends. Returns an exit status."""
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
        try:
            sw.wait(timeout=left, pull=True, poll_interval=interval, bare_failed=True,
                    exclude=("*.pkl", "*.png", "*.gif", "*.pth", "*.pt") if bare else ())
        except WaitTimeout:
            going = sum(1 for r in sw.rows() if r.handle is not None and not r.state.terminal)
            raise WaitTimeout(f"{sw.ref}: not finished after {timeout:g}s ({going} runs "
                              "still going); `chester monitor` again to keep waiting") from None
    bad = 0
    for sw in sweeps:
        rows = sw.rows()
        bad += sum(1 for r in rows if r.state.terminal and r.state != State.SUCCEEDED)
        line = f"{sw.ref}: " + ", ".join(
            f"{n} {s}" for s, n in sorted(sw.counts().items()))
        unpulled = [r.name for r in rows if r.handle is not None and r.state.terminal
                    and not r.pulled_at]
        never = [r.name for r in rows if r.handle is None and not r.state.terminal]
        if unpulled and not once:
            bad += len(unpulled)
            line += (f"; {len(unpulled)} not pulled (their files did not arrive: "
                     f"{', '.join(unpulled[:3])}{', ...' if len(unpulled) > 3 else ''})")
        if never:
            line += (f"; {len(never)} never submitted (run the launch again to submit "
                     "them)")
        print(line)
    return 1 if bad else 0
