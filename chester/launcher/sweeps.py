"""The ``Sweep`` handle: a launched sweep's runs, their states, waiting, pulling, cancelling.

A ``Sweep`` reads and writes only the job store and the backend hooks, so the same handle
works in the launching process and, through :func:`chester.sweep`, in any later one.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from chester.config import ChesterConfig, get_config
from chester.logs import get_logger
from chester.plugin.dispatch import Dispatcher
from chester.plugin.errors import UserError
from chester.plugin.records import (
    BARE_EXCLUDES,
    BackendConfig,
    PullPatterns,
    PullResult,
    RunHandle,
    RunStatus,
    State,
)
from chester.store import RunRow, Store, SweepRow

log = get_logger()

#: How many more polls ``Sweep.wait`` tries a pull whose files did not all arrive, once
#: every run has ended.
PULL_RETRIES = 3


@attrs.define
class Run:
    """One run of a sweep as the store knows it."""

    _sweep: Sweep = attrs.field(repr=False)
    id: int
    name: str
    token: str

    @property
    def _row(self) -> RunRow:
        return self._sweep.run_row(self.id)

    @property
    def log_dir(self) -> Path:
        """The run's local folder (results land here after a pull)."""
        return Path(self._row.local_dir)

    @property
    def remote_dir(self) -> str:
        return self._row.remote_dir

    @property
    def state(self) -> State:
        """The last known state (call ``Sweep.status()`` to refresh)."""
        return self._row.state

    @property
    def reason(self) -> str | None:
        return self._row.reason

    @property
    def stderr_tail(self) -> str | None:
        return self._row.stderr_tail

    @property
    def handle(self) -> RunHandle | None:
        return self._row.handle

    @property
    def pulled(self) -> bool:
        """Whether all of the run's files have arrived home (the backend said so)."""
        return self._row.pulled_at is not None


@attrs.define
class Sweep:
    """Runs from the store: one launch, or every launch of one ``exp_prefix`` (the
    experiment). Get one from :func:`chester.launch` (that launch) or :func:`chester.sweep`
    (``"PREFIX"``: the experiment; ``"PREFIX@N"``: launch ``N``).

    An experiment's launches are read from the store afresh on every call, so a handle
    made before a later launch of the same prefix covers that launch's runs too. Its runs
    may live on several backends; each operation asks each backend about its own runs.
    """

    row: SweepRow
    store: Store = attrs.field(repr=False)
    config: ChesterConfig = attrs.field(repr=False)
    dispatcher: Dispatcher = attrs.field(repr=False, factory=Dispatcher)
    _backend: BackendConfig | None = attrs.field(default=None, repr=False, alias="backend")
    prepared: Any = attrs.field(default=None, repr=False)
    #: what the launch said about itself, one line each: ``(level, text)``, level ``"note"``
    #: or ``"warning"`` (reattached, a new launch because the code changed, ...)
    notices: list[tuple[str, str]] = attrs.field(factory=list, repr=False, kw_only=True)
    #: how many runs the call that made this handle submitted (0: it reattached to a
    #: launch that had nothing left to submit, or it was a dry run)
    submitted: int = attrs.field(default=0, repr=False, kw_only=True)
    #: True: every launch of ``exp_prefix``; False: the launch ``row`` only.
    experiment: bool = attrs.field(default=False, kw_only=True)
    _backends: dict[str, BackendConfig] = attrs.field(factory=dict, repr=False, init=False)
    #: what a pool's watcher turn said already (each line is logged once)
    _said: set[str] = attrs.field(factory=set, repr=False, init=False)

    @property
    def id(self) -> int:
        """The launch's id (of an experiment: its latest launch)."""
        return self.row.id

    @property
    def exp_prefix(self) -> str:
        return self.row.exp_prefix

    @property
    def ref(self) -> str:
        """What names these runs on the command line: ``PREFIX`` or ``PREFIX@N``."""
        return self.exp_prefix if self.experiment else f"{self.exp_prefix}@{self.id}"

    @property
    def backend(self) -> BackendConfig:
        """The launch's backend (of an experiment: its latest launch's)."""
        return self._backend_for(self.row.backend)

    def _backend_for(self, name: str) -> BackendConfig:
        if self._backend is not None and self._backend.name == name:
            return self._backend
        found = self._backends.get(name)
        if found is None:
            found = self._backends[name] = self.config.backend(name, self.dispatcher.manager)
        return found

    def launches(self) -> list[SweepRow]:
        """The launches these runs come from, oldest first."""
        if not self.experiment:
            return [self.row]
        rows = self.store.sweeps(self.exp_prefix)
        if rows:
            self.row = rows[-1]
        return rows or [self.row]

    @property
    def runs(self) -> list[Run]:
        return [Run(self, r.id, r.name, r.token) for r in self.rows()]

    def __len__(self) -> int:
        return len(self.rows())

    def rows(self) -> list[RunRow]:
        """The runs as stored, in the order of their numbers."""
        if self.experiment:
            return self.store.experiment_runs(self.exp_prefix)
        return self.store.runs(self.id)

    def run_row(self, run_id: int) -> RunRow:
        """One run as stored."""
        return self.store.run(run_id)

    @property
    def notice(self) -> str | None:
        """The launch's first line about itself (see ``notices``), if any."""
        return self.notices[0][1] if self.notices else None

    # -- status ---------------------------------------------------------------------------
    def refresh(self, only: Sequence[RunRow] | None = None) -> list[RunRow]:
        """Ask each backend about its unfinished runs (one hook call each), store the answer.
        ``only``: ask about these runs alone."""
        rows = self.rows() if only is None else list(only)
        live = [r for r in rows if r.handle is not None and not r.state.terminal]
        if not live:
            return rows
        for name, group in _by_backend(live).items():
            result = self.dispatcher.call("chester_status", self._backend_for(name),
                                          handles=[r.handle for r in group])
            updates: list[tuple[int, RunStatus]] = []
            for r in group:
                st = result.get(r.token)
                if st is not None:
                    updates.append((r.id, st))
            self.store.record_status(updates)
        if only is not None:
            return [self.store.run(r.id) for r in rows]
        return self.rows()

    def status(self, refresh: bool = True) -> dict[str, State]:
        """Run name → state, refreshed from the backend unless ``refresh=False``."""
        rows = self.refresh() if refresh else self.rows()
        return {r.name: r.state for r in rows}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows():
            out[r.state.value] = out.get(r.state.value, 0) + 1
        return out

    # -- pull ---------------------------------------------------------------------------
    def pull(self, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
             bare: bool = False, extra_dirs: Sequence[tuple[str, str]] = (),
             only_new: bool = False, rows: Sequence[RunRow] | None = None) -> list[Any]:
        """Bring finished runs home (incremental; a second pull transfers nothing new)."""
        rows = list(rows) if rows is not None else self.rows()
        # a run whose folder a later run took over has nothing of its own left to bring
        todo = [r for r in rows if r.handle is not None and r.state.terminal
                and not r.reused_by and not (only_new and r.pulled_at)]
        if not todo:
            return []
        excl = tuple(exclude) + (BARE_EXCLUDES if bare else ())
        options = {launch.id: launch.options for launch in self.launches()}
        groups: dict[tuple[str, tuple], list[RunRow]] = {}
        for r in todo:
            extra = extra_dirs or options.get(r.sweep_id, {}).get("extra_pull_dirs", [])
            key = (r.where, tuple(tuple(p) for p in extra))
            groups.setdefault(key, []).append(r)
        got: dict[str, PullResult] = {}
        for (name, extra), group in groups.items():
            pats = PullPatterns(include=tuple(include), exclude=excl, bare=bare,
                                extra_dirs=extra)
            results = self.dispatcher.call("chester_pull", self._backend_for(name),
                                           handles=[r.handle for r in group],
                                           dest=self.config.project_path, patterns=pats)
            # a run is pulled only when the backend says all its files arrived; one it did
            # not answer for did not arrive either
            by_token = {res.token: res for res in results}
            for r in group:
                got[r.token] = by_token.get(r.token) or PullResult(token=r.token,
                                                                    complete=False)
            self.store.mark_pulled([r.id for r in group if got[r.token].complete])
        out = [got[r.token] for r in todo]
        missing = [r.name for r in todo if not got[r.token].complete]
        if missing:
            log.warning("pull_incomplete", sweep=self.ref, runs=len(missing), first=missing[0])
        return out

    # -- wait -----------------------------------------------------------------------------
    def _poll_interval(self, names: Iterable[str]) -> float:
        """The shortest of the backends' own ``poll_interval`` options (else their type's
        usual interval)."""
        out = []
        for name in names:
            b = self._backend_for(name)
            spec = self.dispatcher.manager.get_backend(b.type).spec
            own = spec.poll_interval(b.options) if spec.poll_interval else None
            out.append(own or spec.capabilities.status_poll_interval_s)
        return min(out)

    def wait(self, timeout: float | None = None, pull: bool = True, *,
             poll_interval: float | None = None, progress: bool | None = None,
             bare_failed: bool = True, include: Sequence[str] = (), exclude: Sequence[str] = (),
             extra_dirs: Sequence[tuple[str, str]] = (),
             pull_retries: int = PULL_RETRIES,
             on_poll: ProgressHook | None = None) -> dict[str, State]:
        """Wait until every submitted run ends; with ``pull``, bring each one home as it ends.

        Runs never submitted (a dry run, a failed launch) are not waited for: they stay
        ``pending`` until the launch is run again. Failed runs are pulled too (logs first:
        large artefacts skipped unless ``bare_failed=False``). A pull whose files did not all
        arrive is tried again at each poll, and up to ``pull_retries`` more polls once every
        run has ended; the run stays unpulled (``Run.pulled`` false) if they never arrive. A
        ``lost`` run never recorded its end, so what its pull brings is all there is: it is
        pulled once, and said once (``pull_incomplete``).
        Raises :class:`~chester.errors.WaitTimeout` (a ``TimeoutError``) after ``timeout``
        seconds. Polls every ``poll_interval`` seconds: by default the backend's own
        ``poll_interval`` option when it has one, else the backend type's usual interval (for
        runs on several backends, the shortest of theirs); between polls, a backend with a
        watcher of its runs' end records (SLURM's, ssh's, autobot's) hands over each end as
        it is recorded, and the wait records it, pulls it and goes on at once, asking the
        backends again only when the next poll is due. ``progress`` shows a progress
        bar (default: when stderr is a terminal); ``on_poll`` is called with the rows after
        every poll and every end handed over.
        """
        from chester.plugin.errors import TransientBackendError, WaitTimeout

        names = {r.where for r in self.rows()} or {self.row.backend}
        # a pool's runs are placed, and moved, while this waits (chester.launcher.moving)
        pools = {b for b in {r.backend for r in self.rows()}
                 if self._backend_for(b).members}
        interval = poll_interval if poll_interval is not None else self._poll_interval(names)
        deadline = None if timeout is None else time.monotonic() + timeout
        show = sys.stderr.isatty() if progress is None else progress
        bar = _Progress(len(self), self.ref) if show else None
        backoff = interval
        retries_left = pull_retries
        pulled_once: set[int] = set()  # lost runs: their end record can never arrive
        ends = _Ends(self)
        next_poll = None  # when the backends are asked again (None: now)
        try:
            while True:
                # a watcher's end wakes the wait before the next poll is due: the wait
                # records it and pulls, and asks the backends only when the poll is due
                # (a pool at every wake: a run's end frees room for the next)
                polled = next_poll is None or pools or time.monotonic() >= next_poll
                if polled:
                    try:
                        rows = self.refresh()
                        backoff = interval
                        if pools and self._pool_step(rows):
                            rows = self.rows()
                    except TransientBackendError as exc:
                        log.warning("status_failed", sweep=self.ref, error=str(exc))
                        backoff = min(backoff * 2, 300.0)
                        rows = self.rows()
                else:
                    rows = self.rows()
                if pull:
                    ok = [r for r in rows if r.state == State.SUCCEEDED and not r.pulled_at
                          and not r.reused_by]
                    bad = [r for r in rows if r.state.terminal and r.state != State.SUCCEEDED
                           and r.handle is not None and not r.pulled_at and not r.reused_by
                           and r.id not in pulled_once]
                    if ok:
                        self.pull(rows=ok, include=include, exclude=exclude, extra_dirs=extra_dirs)
                    if bad:
                        self.pull(rows=bad, bare=bare_failed, include=include, exclude=exclude)
                        pulled_once |= {r.id for r in bad if r.state == State.LOST}
                    if ok or bad:
                        rows = self.rows()
                if bar:
                    bar.update(rows)
                if on_poll is not None:
                    on_poll(rows)
                waiting = [r for r in rows if not r.state.terminal and r.handle is not None
                           or r.backend in pools and r.submit_state in ("new", "moving")]
                unpulled = [r for r in rows if pull and r.state.terminal
                            and r.handle is not None and not r.pulled_at and not r.reused_by
                            and r.id not in pulled_once]
                if not waiting:
                    if not unpulled or retries_left <= 0:
                        if unpulled:
                            log.warning("not_pulled", sweep=self.ref, runs=len(unpulled),
                                        first=unpulled[0].name)
                        return {r.name: r.state for r in rows}
                    retries_left -= 1
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(
                        f"sweep {self.ref!r} not finished after {timeout:g}s "
                        f"({len(waiting)} of {len(rows)} runs still going); wait again to "
                        "keep waiting")
                now = time.monotonic()
                if polled or next_poll is None:
                    next_poll = now + backoff
                ends.pause(waiting, max(0.0, next_poll - now) if deadline is None
                           else max(0.0, min(next_poll - now, deadline - now)))
        finally:
            ends.close()
            if bar:
                bar.close()

    def _pool_step(self, rows: Sequence[RunRow]) -> bool:
        """A watcher's turn over the pool runs (:func:`chester.launcher.moving.step`):
        True when it did anything. Each thing it says is logged once (a budget reached, a
        move), as a warning: never a silent stall."""
        from chester.launcher.moving import step

        lines = step(self, rows)
        for line in lines:
            if line not in self._said:
                self._said.add(line)
                log.warning("pool", sweep=self.ref, what=line)
        return bool(lines)

    # -- cancel / logs --------------------------------------------------------------------
    def cancel(self, names: Iterable[str] | None = None) -> dict[str, bool]:
        """Cancel unfinished runs (all, or those named); returns name → stopped (False:
        the run had ended by the time the backend was asked). The states are refreshed
        first, so runs that ended meanwhile are not counted."""
        wanted = set(names) if names is not None else None
        fresh = self.refresh()
        unplaced = self._cancel_unplaced([r for r in fresh if wanted is None
                                          or r.name in wanted])
        rows = [r for r in fresh
                if r.handle is not None and not r.state.terminal
                and (wanted is None or r.name in wanted)]
        if not rows:
            return unplaced
        result: dict[str, Any] = {}
        for name, group in _by_backend(rows).items():
            result.update(self.dispatcher.call("chester_cancel", self._backend_for(name),
                                               handles=[r.handle for r in group]))
        self.refresh()
        return {**unplaced, **{r.name: bool(result.get(r.token)) for r in rows}}

    def _cancel_unplaced(self, rows: Sequence[RunRow]) -> dict[str, bool]:
        """A pool's runs not placed on a member yet (no member had room): cancelled here,
        so no watcher places them later."""
        todo = [r for r in rows if r.handle is None and r.member is None
                and r.submit_state == "new" and not r.state.terminal
                and self._backend_for(r.backend).members]
        if not todo:
            return {}
        self.store.record_status([(r.id, RunStatus(state=State.CANCELLED,
                                                   reason="cancelled before it was placed"))
                                  for r in todo])
        self.store.set_submit_state([r.id for r in todo], "cancelled")
        return {r.name: True for r in todo}

    def logs(self, run: str, *, follow: bool = False, stream: str = "stdout",
             out: Any = None) -> None:
        rows = [r for r in self.rows() if r.name == run or r.token == run]
        if not rows or rows[-1].handle is None:
            raise UserError(f"no submitted run {run!r} in sweep {self.ref!r}")
        self.dispatcher.call("chester_logs", self._backend_for(rows[-1].where),
                             handle=rows[-1].handle, follow=follow, stream=stream,
                             out=out or sys.stdout)


@attrs.define
class DrySweep(Sweep):
    """What a dry run would launch: its runs live in this handle only (nothing is in the
    store, nothing on disk), so it has nothing to wait for, pull or cancel."""

    planned: list[RunRow] = attrs.field(factory=list, repr=False, kw_only=True)

    def rows(self) -> list[RunRow]:
        return list(self.planned)

    def run_row(self, run_id: int) -> RunRow:
        return next(r for r in self.planned if r.id == run_id)

    def launches(self) -> list[SweepRow]:
        return [self.row]


class _Ends:
    """What a wait does between its polls: it waits for the backends' watchers
    (:meth:`~chester.remote.backend.Backend.watch_ends`), started for the runs still going,
    and records each final status they hand over as it comes, so the end of a run is seen
    when it is recorded, not at the next poll. A backend without one, or whose watcher
    cannot start, is seen at the polls only. Closed when the wait ends."""

    #: how long to gather ends that come together before recording them (seconds)
    GATHER = 0.05

    def __init__(self, sweep: Sweep):
        import queue

        self.sweep = sweep
        self.queue: queue.Queue[tuple[str, RunStatus]] = queue.Queue()
        self.watches: dict[str, Any] = {}
        self.tokens: dict[str, set[str]] = {}  # the runs each watcher was given
        self.off: set[str] = set()  # backends with no watcher, or whose watcher failed

    def _start(self, waiting: Sequence[RunRow]) -> None:
        placed = [r for r in waiting if r.handle is not None]  # a pool's run once placed
        for name, group in _by_backend(placed).items():
            w = self.watches.get(name)
            tokens = {r.token for r in group}
            if name in self.off or (w is not None and w.alive and tokens <= self.tokens[name]):
                continue
            if w is not None:  # it ended (its lifetime), or runs were placed since: another
                self._stop(name)
                if getattr(w, "failed", False):  # it could not run there: the polls see the ends
                    log.warning("watch_failed", sweep=self.sweep.ref, backend=name,
                                error="the end watcher ended with an error")
                    self.off.add(name)
                    continue
            self.tokens[name] = tokens
            b = self.sweep._backend_for(name)
            plugin = self.sweep.dispatcher.manager.get_backend(b.type).plugin
            start = getattr(plugin, "watch_ends", None)
            try:
                w = start(b, [r.handle for r in group], lambda t, st: self.queue.put((t, st))) \
                    if start is not None else None
            except Exception as exc:  # noqa: BLE001 - the polls still see every end
                log.warning("watch_failed", sweep=self.sweep.ref, backend=name, error=str(exc))
                w = None
            if w is None:
                self.off.add(name)
            else:
                self.watches[name] = w

    def pause(self, waiting: Sequence[RunRow], seconds: float) -> None:
        """Sleep ``seconds``, or less: until a watcher hands over an end."""
        import queue

        self._start(waiting)
        if not self.watches:
            time.sleep(seconds)
            return
        try:
            got = [self.queue.get(timeout=seconds)] if seconds > 0 else []
        except queue.Empty:
            return
        end = time.monotonic() + self.GATHER
        while True:
            try:
                got.append(self.queue.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                break
        ids = {r.token: r.id for r in waiting}
        self.sweep.store.record_status([(ids[t], st) for t, st in got if t in ids])

    def _stop(self, name: str) -> None:
        w = self.watches.pop(name, None)
        if w is not None:
            try:
                w.close()
            except Exception as exc:  # noqa: BLE001 - a watcher that fails to stop ends by itself
                log.warning("watch_close_failed", sweep=self.sweep.ref, error=str(exc))

    def close(self) -> None:
        for name in list(self.watches):
            self._stop(name)


def _by_backend(rows: Iterable[RunRow]) -> dict[str, list[RunRow]]:
    """Runs by the backend whose hooks own them: a pool's run by its member."""
    groups: dict[str, list[RunRow]] = {}
    for r in rows:
        groups.setdefault(r.where, []).append(r)
    return groups


class _Progress:
    """A rich progress bar over run states (only on a terminal). Every part has a fixed
    width (the counts are padded to the number of runs' digits), so the bar never moves
    as counts appear."""

    def __init__(self, total: int, label: str, console: Any = None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Column

        self._digits = len(str(max(total, 1)))
        self._p = Progress(
            TextColumn("{task.description}", table_column=Column(
                no_wrap=True, overflow="ellipsis", max_width=24)),
            BarColumn(bar_width=16), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}", table_column=Column(no_wrap=True)),
            TimeElapsedColumn(), transient=False, console=console)
        self._p.start()
        self._t = self._p.add_task(label, total=total, detail=self._detail(()))

    def _detail(self, rows: Sequence[RunRow]) -> str:
        w = self._digits
        bad = sum(1 for r in rows if r.state.terminal
                  and r.state not in (State.SUCCEEDED, State.CANCELLED))
        going = sum(1 for r in rows if r.state in (State.RUNNING, State.REQUEUED))
        waiting = sum(1 for r in rows if r.state in (State.QUEUED, State.PENDING))
        return f"{bad:>{w}} failed {going:>{w}} running {waiting:>{w}} queued"

    def update(self, rows: Sequence[RunRow]) -> None:
        self._p.update(self._t, total=len(rows),
                       completed=sum(1 for r in rows if r.state.terminal),
                       detail=self._detail(rows))

    def close(self) -> None:
        self._p.stop()


def open_store(config: ChesterConfig | None = None, *, create: bool = True) -> Store:
    """The project's job store; ``create=False`` raises a one-line error when there is none."""
    cfg = config or get_config()
    return Store(cfg.store_path, create=create)


_LAUNCH_REF = re.compile(r"^(?P<prefix>.+)@(?P<id>\d+)$")


def find_sweep(store: Store, ref: str | None, *, sweep_id: int | None = None
               ) -> tuple[SweepRow, bool]:
    """What ``ref`` names in the store: ``(row, True)`` for an experiment (``PREFIX``, or
    with neither ``ref`` nor ``sweep_id`` the latest launch's experiment; ``row`` is its
    latest launch), ``(row, False)`` for one launch (``PREFIX@N`` or ``sweep_id``)."""
    where = f"in the job store {store.path}"
    if sweep_id is None and ref is not None and store.latest_sweep(ref) is None:
        m = _LAUNCH_REF.match(ref)  # a prefix that exists as written wins over PREFIX@N
        if m:
            ref, sweep_id = m["prefix"], int(m["id"])
    if sweep_id is None:
        row = store.latest_sweep(ref)
        if row is None:
            what = f"named {ref!r} " if ref else ""
            raise UserError(f"no sweep {what}{where}")
        return row, True
    try:
        found: SweepRow | None = store.sweep(sweep_id)
    except KeyError:
        found = None
    if found is not None and ref in (None, found.exp_prefix):
        return found, False
    if ref is None:
        raise UserError(f"no launch {sweep_id} {where}")
    ids = [s.id for s in store.sweeps(ref)]
    if not ids:
        raise UserError(f"no sweep named {ref!r} {where}")
    raise UserError(f"sweep {ref!r} has no launch {sweep_id}; its launches are "
                    f"{id_ranges(ids)} (see `chester status {ref} --all`)")


def id_ranges(ids: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3, 7"``."""
    spans: list[list[int]] = []
    for i in sorted(ids):
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def sweep(exp_prefix: str | None = None, *, config: ChesterConfig | None = None,
          dispatcher: Dispatcher | None = None, sweep_id: int | None = None) -> Sweep:
    """Reattach to runs in the store.

    ``sweep("PREFIX")`` is the experiment: every run of every launch with that
    ``exp_prefix`` (on any backend), in the order of their numbers; ``sweep("PREFIX@N")``
    or ``sweep(sweep_id=N)`` is launch ``N`` alone; ``sweep()`` is the experiment of the
    latest launch.
    """
    cfg = config or get_config()
    store = open_store(cfg, create=False)
    row, experiment = find_sweep(store, exp_prefix, sweep_id=sweep_id)
    return Sweep(row=row, store=store, config=cfg, dispatcher=dispatcher or Dispatcher(),
                 experiment=experiment)


def wait_all(sweeps: Sequence[Sweep], **kw: Any) -> None:
    for s in sweeps:
        s.wait(**kw)


ProgressHook = Callable[[Sequence[RunRow]], None]
"""Called by :meth:`Sweep.wait` with the rows after each poll (``on_poll``)."""
