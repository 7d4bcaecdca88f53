"""The ``Sweep`` handle: a launched sweep's runs, their states, waiting, pulling, cancelling.

A ``Sweep`` reads and writes only the job store and the backend hooks, so the same handle
works in the launching process and, through :func:`chester.sweep`, in any later one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from chester.config import ChesterConfig, get_config
from chester.dispatch import Dispatcher
from chester.errors import UserError
from chester.logs import get_logger
from chester.store import RunRow, Store, SweepRow
from chester.types import (
    BARE_EXCLUDES,
    BackendConfig,
    PullPatterns,
    PullResult,
    RunHandle,
    RunStatus,
    State,
)

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
        return self._sweep.store.run(self.id)

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
    """A launched sweep. Get one from :func:`chester.launch` or :func:`chester.sweep`."""

    row: SweepRow
    store: Store = attrs.field(repr=False)
    config: ChesterConfig = attrs.field(repr=False)
    dispatcher: Dispatcher = attrs.field(repr=False, factory=Dispatcher)
    _backend: BackendConfig | None = attrs.field(default=None, repr=False, alias="backend")
    prepared: Any = attrs.field(default=None, repr=False)

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def exp_prefix(self) -> str:
        return self.row.exp_prefix

    @property
    def backend(self) -> BackendConfig:
        if self._backend is None:
            self._backend = self.config.backend(self.row.backend, self.dispatcher.manager)
        return self._backend

    @property
    def runs(self) -> list[Run]:
        return [Run(self, r.id, r.name, r.token) for r in self.store.runs(self.id)]

    def __len__(self) -> int:
        return len(self.store.runs(self.id))

    def rows(self) -> list[RunRow]:
        return self.store.runs(self.id)

    # -- status ---------------------------------------------------------------------------
    def refresh(self) -> list[RunRow]:
        """Ask the backend about every unfinished run (one hook call) and store the answer."""
        rows = self.store.runs(self.id)
        live = [r for r in rows if r.handle is not None and not r.state.terminal]
        if live:
            result = self.dispatcher.call("chester_status", self.backend,
                                          handles=[r.handle for r in live])
            updates: list[tuple[int, RunStatus]] = []
            for r in live:
                st = result.get(r.token)
                if st is not None:
                    updates.append((r.id, st))
            self.store.record_status(updates)
            rows = self.store.runs(self.id)
        return rows

    def status(self, refresh: bool = True) -> dict[str, State]:
        """Run name → state, refreshed from the backend unless ``refresh=False``."""
        rows = self.refresh() if refresh else self.store.runs(self.id)
        return {r.name: r.state for r in rows}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.store.runs(self.id):
            out[r.state.value] = out.get(r.state.value, 0) + 1
        return out

    # -- pull ---------------------------------------------------------------------------
    def pull(self, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
             bare: bool = False, extra_dirs: Sequence[tuple[str, str]] = (),
             only_new: bool = False, rows: Sequence[RunRow] | None = None) -> list[Any]:
        """Bring finished runs home (incremental; a second pull transfers nothing new)."""
        rows = list(rows) if rows is not None else self.store.runs(self.id)
        todo = [r for r in rows if r.handle is not None and r.state.terminal
                and not (only_new and r.pulled_at)]
        if not todo:
            return []
        excl = tuple(exclude) + (BARE_EXCLUDES if bare else ())
        if not extra_dirs:
            extra_dirs = [tuple(p) for p in self.row.options.get("extra_pull_dirs", [])]
        pats = PullPatterns(include=tuple(include), exclude=excl, bare=bare,
                            extra_dirs=tuple(tuple(p) for p in extra_dirs))  # type: ignore[misc]
        results = self.dispatcher.call("chester_pull", self.backend,
                                       handles=[r.handle for r in todo],
                                       dest=self.config.project_path, patterns=pats)
        # a run is pulled only when the backend says all its files arrived; one it did not
        # answer for did not arrive either
        by_token = {res.token: res for res in results}
        out = [by_token.get(r.token) or PullResult(token=r.token, complete=False) for r in todo]
        self.store.mark_pulled([r.id for r, res in zip(todo, out, strict=True) if res.complete])
        missing = [r.name for r, res in zip(todo, out, strict=True) if not res.complete]
        if missing:
            log.warning("pull_incomplete", sweep=self.exp_prefix, runs=len(missing),
                        first=missing[0])
        return out

    # -- wait -----------------------------------------------------------------------------
    def wait(self, timeout: float | None = None, pull: bool = True, *,
             poll_interval: float | None = None, progress: bool | None = None,
             bare_failed: bool = True, include: Sequence[str] = (), exclude: Sequence[str] = (),
             extra_dirs: Sequence[tuple[str, str]] = (),
             pull_retries: int = PULL_RETRIES) -> dict[str, State]:
        """Wait until every submitted run ends; with ``pull``, bring each one home as it ends.

        Runs never submitted (a dry run, a failed launch) are not waited for: they stay
        ``pending`` until the launch is run again. Failed runs are pulled too (logs first:
        large artefacts skipped unless ``bare_failed=False``). A pull whose files did not all
        arrive is tried again at each poll, and up to ``pull_retries`` more polls once every
        run has ended; the run stays unpulled (``Run.pulled`` false) if they never arrive.
        Raises :class:`~chester.errors.WaitTimeout` (a ``TimeoutError``) after ``timeout``
        seconds. Polls every ``poll_interval`` seconds: by default the backend's own
        ``poll_interval`` option when it has one, else the backend type's usual interval.
        """
        from chester.errors import TransientBackendError, WaitTimeout

        caps = self.dispatcher.manager.get_backend(self.backend.type).spec.capabilities
        interval = poll_interval if poll_interval is not None else \
            getattr(self.backend.options, "poll_interval", None) or caps.status_poll_interval_s
        deadline = None if timeout is None else time.monotonic() + timeout
        show = sys.stderr.isatty() if progress is None else progress
        bar = _Progress(len(self), f"{self.exp_prefix} [{self.backend.name}]") if show else None
        backoff = interval
        retries_left = pull_retries
        try:
            while True:
                try:
                    rows = self.refresh()
                    backoff = interval
                except TransientBackendError as exc:
                    log.warning("status_failed", sweep=self.exp_prefix, error=str(exc))
                    backoff = min(backoff * 2, 300.0)
                    rows = self.store.runs(self.id)
                if pull:
                    ok = [r for r in rows if r.state == State.SUCCEEDED and not r.pulled_at]
                    bad = [r for r in rows if r.state.terminal and r.state != State.SUCCEEDED
                           and r.handle is not None and not r.pulled_at]
                    if ok:
                        self.pull(rows=ok, include=include, exclude=exclude, extra_dirs=extra_dirs)
                    if bad:
                        self.pull(rows=bad, bare=bare_failed, include=include, exclude=exclude)
                    if ok or bad:
                        rows = self.store.runs(self.id)
                if bar:
                    bar.update(rows)
                waiting = [r for r in rows if not r.state.terminal and r.handle is not None]
                unpulled = [r for r in rows if pull and r.state.terminal
                            and r.handle is not None and not r.pulled_at]
                if not waiting:
                    if not unpulled or retries_left <= 0:
                        if unpulled:
                            log.warning("not_pulled", sweep=self.exp_prefix, runs=len(unpulled),
                                        first=unpulled[0].name)
                        return {r.name: r.state for r in rows}
                    retries_left -= 1
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(
                        f"sweep {self.exp_prefix!r} not finished after {timeout:g}s "
                        f"({len(waiting)} of {len(rows)} runs still going); wait again to "
                        "keep waiting")
                time.sleep(backoff if deadline is None
                           else max(0.0, min(backoff, deadline - time.monotonic())))
        finally:
            if bar:
                bar.close()

    # -- cancel / logs --------------------------------------------------------------------
    def cancel(self, names: Iterable[str] | None = None) -> dict[str, bool]:
        """Cancel unfinished runs (all, or those named); returns name → stopped."""
        wanted = set(names) if names is not None else None
        rows = [r for r in self.store.runs(self.id)
                if r.handle is not None and not r.state.terminal
                and (wanted is None or r.name in wanted)]
        if not rows:
            return {}
        result = self.dispatcher.call("chester_cancel", self.backend,
                                      handles=[r.handle for r in rows])
        self.refresh()
        return {r.name: bool(result.get(r.token)) for r in rows}

    def logs(self, run: str, *, follow: bool = False, stream: str = "stdout",
             out: Any = None) -> None:
        rows = [r for r in self.store.runs(self.id) if r.name == run or r.token == run]
        if not rows or rows[0].handle is None:
            raise UserError(f"no submitted run {run!r} in sweep {self.exp_prefix!r}")
        self.dispatcher.call("chester_logs", self.backend, handle=rows[0].handle, follow=follow,
                             stream=stream, out=out or sys.stdout)


class _Progress:
    """A rich progress bar over run states (only on a terminal)."""

    def __init__(self, total: int, label: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                           transient=False)
        self._p.start()
        self._t = self._p.add_task(label, total=total, detail="")

    def update(self, rows: Sequence[RunRow]) -> None:
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        detail = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        self._p.update(self._t, completed=sum(1 for r in rows if r.state.terminal), detail=detail)

    def close(self) -> None:
        self._p.stop()


def open_store(config: ChesterConfig | None = None, *, create: bool = True) -> Store:
    """The project's job store; ``create=False`` raises a one-line error when there is none."""
    cfg = config or get_config()
    return Store(cfg.store_path, create=create)


def sweep(exp_prefix: str | None = None, *, config: ChesterConfig | None = None,
          dispatcher: Dispatcher | None = None, sweep_id: int | None = None) -> Sweep:
    """Reattach to the latest sweep named ``exp_prefix`` (or any, or by id) from the store."""
    cfg = config or get_config()
    store = open_store(cfg, create=False)
    row = store.sweep(sweep_id) if sweep_id is not None else store.latest_sweep(exp_prefix)
    if row is None:
        what = f"named {exp_prefix!r} " if exp_prefix else ""
        raise UserError(f"no sweep {what}in the job store {cfg.store_path}")
    return Sweep(row=row, store=store, config=cfg, dispatcher=dispatcher or Dispatcher())


def wait_all(sweeps: Sequence[Sweep], **kw: Any) -> None:
    for s in sweeps:
        s.wait(**kw)


ProgressHook = Callable[[Sequence[RunRow]], None]
