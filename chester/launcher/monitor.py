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
    return watch(sweeps, timeout=timeout, interval=interval, bare=bare, once=once)


def watch(sweeps: list[Sweep], *, label: str | None = None, timeout: float | None = None,
          interval: float | None = None, bare: bool = False, once: bool = False) -> int:
    """Wait for the sweeps' runs to end, pulling each as it ends; then say how they ended,
    naming every run that did not succeed with its reason (``label`` names a single sweep
    in that report). On a terminal a progress bar of fixed width; otherwise a plain line
    at most every 10 s. Ctrl-C says the runs go on and how to watch them. Returns the exit
    status: 1 if any run did not succeed or did not arrive."""
    import sys

    from chester.cli import present
    from chester.plugin.records import BARE_EXCLUDES

    tty = sys.stdout.isatty()
    console = None
    if tty:
        from rich.console import Console

        console = Console(file=sys.stdout, highlight=False)
    started = time.monotonic()
    current = sweeps[0]
    try:
        for sw in sweeps:
            current = sw
            if once:
                rows = sw.refresh()
                sw.pull(rows=[r for r in rows if r.state.terminal and not r.pulled_at],
                        bare=bare)
                continue
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() -
                                                                   started))
            plain = None if tty else present.PlainProgress(
                sw.ref, lambda line: print(line, flush=True))
            try:
                sw.wait(timeout=left, pull=True, poll_interval=interval, bare_failed=True,
                        exclude=BARE_EXCLUDES if bare else (), progress=tty, on_poll=plain)
            except WaitTimeout:
                going = sum(1 for r in sw.rows()
                            if r.handle is not None and not r.state.terminal)
                raise WaitTimeout(f"{sw.ref}: not finished after {timeout:g}s ({going} runs "
                                  "still going); `chester monitor` again to keep waiting"
                                  ) from None
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(f"chester: stopped waiting; the runs go on without this command. Watch "
              f"them: chester status {label or current.ref}  |  chester monitor "
              f"{' '.join(s.ref for s in sweeps) if label is None else label}",
              file=sys.stderr, flush=True)
        return 130
    bad = 0
    elapsed = None if once else time.monotonic() - started
    for sw in sweeps:
        rows = sw.rows()
        ref = label if label is not None and len(sweeps) == 1 else sw.ref
        bad += sum(1 for r in rows if r.state.terminal and r.state != State.SUCCEEDED)
        present.ended_report(console, ref, rows, prefix=sw.exp_prefix, elapsed=elapsed)
        unpulled = [r.name for r in rows if r.handle is not None and r.state.terminal
                    and not r.pulled_at]
        never = [r.name for r in rows if r.handle is None and not r.state.terminal]
        if unpulled and not once:
            bad += len(unpulled)
            print(f"{ref}: {len(unpulled)} not pulled (their files did not arrive: "
                  f"{', '.join(unpulled[:3])}{', ...' if len(unpulled) > 3 else ''}; "
                  f"`chester pull {sw.ref}` to try again)")
        if never:
            print(f"{ref}: {len(never)} never submitted (run the launch again to submit "
                  "them)")
    return 1 if bad else 0
