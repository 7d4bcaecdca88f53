"""The ``chester`` subcommands (imported only when one runs)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from chester.cli import emit_json, emit_table
from chester.plugin.errors import UserError


def cmd_plugins(args: argparse.Namespace) -> int:
    if args.plugins_command == "new":
        from pathlib import Path

        from chester.plugin.scaffold import new_plugin

        root = new_plugin(args.name, Path(args.dir))
        print(f"wrote {root}\nnext: pip install -e '{root}[test]' && chester plugins list && "
              f"pytest {root}/tests")
        return 0
    if args.plugins_command != "list":
        raise UserError("usage: chester plugins list [--json] [--verbose] | plugins new NAME")
    from chester.plugin import listing

    # what the plugins registered, kept from the last listing while nothing it was read
    # from changed (chester.plugin.listing): no plugin is imported for it
    shown = None if args.verbose else listing.cached()
    if shown is None:
        from chester.plugin.manager import get_plugin_manager

        mgr = get_plugin_manager()
        backends = mgr.backends()  # also fills each record's backends
        shown = listing.of_manager(mgr)
        listing.keep(shown)
    if args.json:
        emit_json(shown["records"])
        return 0
    rows = []
    for r in shown["records"]:
        status = r["status"] if r["status"] != "error" else f"error: {r['error']}"
        rows.append([r["name"], r["distribution"], r["version"], status,
                     ", ".join(r["backends"]),
                     ", ".join(h.replace("chester_", "") for h in r["hooks"])])
    emit_table("chester plugins", ["Name", "Distribution", "Version", "Status", "Backends",
                                   "Hooks"], rows)
    for name, owners in shown["conflicts"]:
        print(f"conflict: backend {name!r} is claimed by {' and '.join(owners)}",
              file=sys.stderr)
    if args.verbose:
        import attrs

        for name, entry in sorted(backends.items()):
            print(f"\n{name}: {entry.spec.summary}  [{entry.distribution}]")
            caps = attrs.asdict(entry.spec.capabilities)
            print("  capabilities: " + ", ".join(
                k if v is True else f"{k}={v}" for k, v in caps.items() if v is not False))
            for f in attrs.fields(entry.spec.options_cls):
                text = f.metadata.get("help", "")
                default = "" if f.default is attrs.NOTHING or re.search(r"\bdefault\b", text) \
                    else f" (default: {_default_text(f.default)})"
                print(f"  {f.name}: {text}{default}")
    return 0


def _default_text(value: Any) -> str:
    import attrs

    if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
        value = value.factory() if not value.takes_self else "..."
    return repr(value)


def cmd_config(args: argparse.Namespace) -> int:
    from chester.config import describe, get_config

    cfg = get_config()
    rows = describe(cfg)
    if args.json:
        emit_json([{"key": k, "value": v, "source": s} for k, v, s in rows])
    else:
        emit_table("chester config", ["Key", "Value", "Source"], [list(r) for r in rows])
    return 0


def _sweeps(ref: str | None, all_: bool = False) -> list[Any]:
    """The runs a command acts on: the experiment ``ref`` names (``PREFIX``; no ``ref``: the
    latest launch's), or launch ``PREFIX@N``; with ``all_``, each launch on its own (of
    ``ref``, or every launch in the store)."""
    from chester.config import get_config
    from chester.launcher.sweeps import Sweep, find_sweep, open_store
    from chester.plugin.dispatch import Dispatcher

    cfg = get_config()
    store = open_store(cfg, create=False)
    disp = Dispatcher()
    if all_:
        if ref is None:
            rows = store.sweeps()
        else:
            row, experiment = find_sweep(store, ref)
            rows = store.sweeps(row.exp_prefix) if experiment else [row]
        if not rows:
            raise UserError(f"no sweep in the job store {cfg.store_path}")
        return [Sweep(row=r, store=store, config=cfg, dispatcher=disp) for r in rows]
    row, experiment = find_sweep(store, ref)
    return [Sweep(row=row, store=store, config=cfg, dispatcher=disp, experiment=experiment)]


def _console() -> Any:
    """A rich console on stdout (its width and height are the terminal's; NO_COLOR is
    honoured by rich)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


_RUN_REF = re.compile(r"^(?P<sweep>.+):(?P<number>\d+)$")


def find_run(store: Any, ref: str) -> tuple[Any, str]:
    """The run ``ref`` names, and its sweep's prefix: ``PREFIX:N`` (run number ``N`` of
    the sweep, as its folder ``N_...`` is numbered; ``PREFIX@L:N`` in launch ``L``), or a
    run's name, token, store id or folder. A name that matches nothing is an error listing
    the nearest names."""
    from chester.launcher.sweeps import find_sweep

    rows = store.find_runs(ref)
    if rows:
        row = rows[-1]
        return row, store.sweep(row.sweep_id).exp_prefix
    m = _RUN_REF.match(ref)
    if m:
        srow, experiment = find_sweep(store, m["sweep"])
        runs = store.experiment_runs(srow.exp_prefix) if experiment else store.runs(srow.id)
        found = [r for r in runs if r.number == int(m["number"])]
        if len(found) == 1:
            return found[0], srow.exp_prefix
        if len(found) > 1:
            raise UserError(f"{ref!r} names {len(found)} runs, one per launch: "
                            f"{', '.join(r.name for r in found)}; name one of them, or "
                            f"{m['sweep']}@L:{m['number']} for launch L")
        numbers = sorted({r.number for r in runs})
        from chester.launcher.sweeps import id_ranges

        raise UserError(f"sweep {m['sweep']!r} has no run {m['number']}; its runs are "
                        f"numbered {id_ranges(numbers) or 'nothing yet'} "
                        f"(see `chester status {m['sweep']}`)")
    names = [r.name for r in store.runs()]
    close = _nearest(ref, names)
    prefixes = sorted({s.exp_prefix for s in store.sweeps()})
    hint = ""
    if ref in prefixes:
        hint = f"; {ref!r} is a sweep: name a run of it as {ref}:N"
    elif close:
        hint = f"; nearest: {', '.join(close)}"
    raise UserError(f"no run {ref!r} in the job store {store.path}{hint} (a run is named "
                    "as its folder, or PREFIX:N)")


def _nearest(word: str, names: list[str], n: int = 3) -> list[str]:
    """The ``n`` names nearest to ``word`` (same number first, then by likeness)."""
    import difflib

    close = difflib.get_close_matches(word, names, n=n, cutoff=0.5)
    head = word.split("_", 1)[0]
    same = [x for x in names if head.isdigit() and x.split("_", 1)[0] == head]
    return list(dict.fromkeys([*[x for x in same if x in close], *close, *same]))[:n]


def _resolve(ref: str | None) -> tuple[list[Any], list[Any] | None]:
    """What a command that takes a sweep or a run acts on: ``(sweeps, None)`` for a sweep
    (``PREFIX``, ``PREFIX@N``, none: the latest), ``([the run's launch], [run])`` for a run
    (``PREFIX:N``, a run's name, token, id or folder)."""
    if ref is None:
        return _sweeps(None), None
    try:
        return _sweeps(ref), None
    except UserError as exc:
        if not str(exc).startswith("no sweep named"):
            raise  # PREFIX@N of a sweep without launch N: said as it is
        not_a_sweep = exc
    from chester.config import get_config
    from chester.launcher.sweeps import Sweep, find_sweep, open_store
    from chester.plugin.dispatch import Dispatcher

    cfg = get_config()
    store = open_store(cfg, create=False)
    try:
        row, _prefix = find_run(store, ref)
    except UserError as not_a_run:
        numbered = _RUN_REF.match(ref)
        if numbered and store.latest_sweep(numbered["sweep"]):
            raise  # a sweep's run number that does not exist: said as it is
        names = sorted({s.exp_prefix for s in store.sweeps()})
        close = _nearest(ref, names)
        runs = str(not_a_run).split("; nearest: ", 1)
        hint = (f"; did you mean the sweep {' or '.join(repr(c) for c in close)}?" if close
                else f"; runs nearest: {runs[1].split(' (a run', 1)[0]}" if len(runs) > 1
                else "")
        raise UserError(f"{not_a_sweep}, and no run of that name{hint}") from None
    srow, _ = find_sweep(store, None, sweep_id=row.sweep_id)
    # the run's sweep (its prefix): messages name it, and its runs PREFIX:N, as status does
    return [Sweep(row=srow, store=store, config=cfg, dispatcher=Dispatcher(),
                  experiment=True)], [row]


def cmd_status(args: argparse.Namespace) -> int:
    from chester.cli import present
    from chester.launcher.sweeps import id_ranges

    if args.exp_prefix is not None and not args.all:
        sweeps, runs = _resolve(args.exp_prefix)
        if runs is not None:
            return _run_details(sweeps[0], runs[0], json_=args.json)
    sweeps = _sweeps(args.exp_prefix, args.all)
    tty = sys.stdout.isatty()
    out_json = []
    tsv_started = False
    console = _console() if tty and not args.json else None
    for n, sw in enumerate(sweeps):
        stale = None
        if args.no_refresh:
            rows = sw.rows()
            stale = max((r.updated for r in rows), default=None)
        else:
            rows = sw.refresh()
        launches = [launch.id for launch in sw.launches()]
        backends = sorted({r.backend for r in rows} or {sw.row.backend})
        spend = None if args.no_refresh else _pool_spend(sw, rows)
        if args.json:
            out_json.append({
                "sweep": sw.exp_prefix, "ref": sw.ref, "sweep_id": sw.id,
                "sweep_ids": launches, "backend": backends[0] if len(backends) == 1 else None,
                "backends": backends,
                "runs": [{"id": r.id, "number": r.number, "name": r.name,
                          "ref": present.run_ref(sw.exp_prefix, r), "sweep_id": r.sweep_id,
                          "backend": r.backend, "state": r.state.value, "reason": r.reason,
                          "reason_line": present.reason(r),
                          "pending_reason": r.pending_reason, "exit_code": r.exit_code,
                          "host": r.host, "remote_id": r.remote_id, "attempt": r.attempt,
                          "reused_by": r.reused_by, "member": r.member,
                          "log_dir": r.local_dir, "stderr_tail": r.stderr_tail,
                          "pulled": bool(r.pulled_at)} for r in rows],
                **({"spend": spend} if spend else {})})
            continue
        ctx = present.Ctx(prefix=sw.exp_prefix, rows=rows)
        if console is None:  # piped: pure tab-separated values, reasons in a column
            if not tsv_started:
                print(present.tsv_header(sweep=True))
                tsv_started = True
            for r in rows:
                print(present.tsv_row(r, ctx, sweep=sw.ref))
            continue
        what = (f"launch{'es' if len(launches) > 1 else ''} {id_ranges(launches)}"
                if sw.experiment else f"launch {sw.id}")
        title = (f"{sw.ref} · {len(rows)} run{'s' if len(rows) != 1 else ''} on "
                 f"{', '.join(backends)} · {what}")
        if stale is not None:
            title += f" · stored states, {present.ago(stale)}"
        if n:
            console.print()
        present.screen(console, title, rows, sw.exp_prefix,
                       height=None if args.all else console.size.height,
                       more=f"chester status {sw.ref} --all", show_all=args.all,
                       notes=[d["line"] for d in (spend or {}).values()])
        if args.all:
            for r in rows:
                if r.state.terminal and r.state.value != "succeeded" and r.stderr_tail:
                    tail = r.stderr_tail.splitlines()[-TAIL_LINES:]
                    console.print(f"[dim]--- {present.run_ref(sw.exp_prefix, r)} "
                                  f"{r.name}: last lines of stderr ---[/]", crop=True)
                    for line in tail:
                        console.print(line, markup=False, crop=True, overflow="ellipsis",
                                      no_wrap=True)
    if args.json:
        emit_json(out_json if args.all else out_json[0])
    return 0


def _pool_spend(sw: Any, rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Each pool's spend over the rows placed on its members: ``{pool: {"usd": so far,
    "usd_projected": ..., "su": ..., "gpu_hours": ..., "line": the line shown}}``."""
    if not any(r.member for r in rows):
        return {}
    from chester.launcher.placing import spend
    from chester.plugin.pool import spend_line

    out: dict[str, dict[str, Any]] = {}
    for name in sorted({r.backend for r in rows if r.member}):
        pool = sw._backend_for(name)
        if not pool.members:
            continue
        s = spend(sw.dispatcher, pool, [r for r in rows if r.backend == name])
        out[name] = {"usd": s.usd, "usd_projected": s.usd_projected, "su": s.su,
                     "gpu_hours": s.gpu_hours, "line": f"{name} {spend_line(s, pool.options.budget)}"}
    return out


#: lines of a failed run's stderr that ``status --all`` and ``logs`` show
TAIL_LINES = 5
LOGS_TAIL_LINES = 20


def _run_details(sw: Any, row: Any, *, json_: bool) -> int:
    """``chester status PREFIX:N``: one run, every detail."""
    from chester.cli import present

    row = sw.refresh(only=[row])[0]
    ref = present.run_ref(sw.exp_prefix, row)
    if json_:
        emit_json({"name": row.name, "ref": ref, "number": row.number,
                   "sweep": sw.exp_prefix, "sweep_id": row.sweep_id, "backend": row.backend,
                   "state": row.state.value, "reason": row.reason,
                   "reason_line": present.reason(row), "pending_reason": row.pending_reason,
                   "exit_code": row.exit_code, "host": row.host, "remote_id": row.remote_id,
                   "attempt": row.attempt, "log_dir": row.local_dir,
                   "remote_dir": row.remote_dir, "stderr_tail": row.stderr_tail,
                   "started_at": row.started_at, "ended_at": row.ended_at,
                   "pulled": bool(row.pulled_at),
                   "history": [{"at": at, "state": st, "reason": why}
                               for at, st, why in sw.store.history(row.id)]})
        return 0
    fields = [("run", f"{row.name} ({ref})"), ("state", row.state.value),
              ("reason", present.reason(row)), ("backend", row.backend),
              ("launch", f"{sw.exp_prefix}@{row.sweep_id}"), ("attempt", str(row.attempt)),
              ("host", row.host or ""), ("remote id", row.remote_id or ""),
              ("exit", "" if row.exit_code is None else str(row.exit_code)),
              ("started", present.ago(row.started_at)), ("ended", present.ago(row.ended_at)),
              ("folder", row.local_dir),
              ("remote folder", row.remote_dir if row.remote_dir != row.local_dir else ""),
              ("pulled", present.ago(row.pulled_at))]
    for key, value in fields:
        if value:
            print(f"{key + ':':<15}{value}")
    if row.stderr_tail and row.state.terminal and row.state.value != "succeeded":
        print(f"--- last lines of stderr (all of it: chester logs {ref} --stderr) ---")
        print("\n".join(row.stderr_tail.splitlines()[-LOGS_TAIL_LINES:]))
    return 0


def cmd_sweeps(args: argparse.Namespace) -> int:
    """Every sweep (exp_prefix) of the project: launches, backends, counts by state, age.
    Unfinished runs are asked about first (one status call per backend, at most
    ``--timeout`` seconds); what could not be refreshed says how old it is."""
    from chester.cli import present
    from chester.config import get_config
    from chester.launcher.sweeps import open_store

    cfg = get_config()
    store = open_store(cfg, create=False)
    stale: dict[str, str] = {}
    if not args.no_refresh:
        stale = _refresh_unfinished(store, cfg, timeout=args.timeout)
    by_prefix: dict[str, list[Any]] = {}
    for row in store.sweeps():
        by_prefix.setdefault(row.exp_prefix, []).append(row)
    out = []
    now = time.time()
    for prefix, launches in by_prefix.items():
        rows = [r for launch in launches for r in store.runs(launch.id)]
        counts = present.counts_by_state(rows)
        live = [r for r in rows if r.handle is not None and not r.state.terminal]
        checked = min((r.updated for r in live), default=None)
        why = sorted({stale[r.backend] for r in live if r.backend in stale})
        out.append({"sweep": prefix, "launches": [s.id for s in launches],
                    "backends": sorted({s.backend for s in launches}), "runs": len(rows),
                    "states": {s: counts[s] for s in present.STATE_ORDER if counts.get(s)},
                    "last_launch": max(s.created for s in launches),
                    "checked_at": checked if (why or args.no_refresh) else
                    (now if live else None),
                    "stale": bool(live) and (bool(why) or args.no_refresh),
                    "stale_reason": "; ".join(why) or None})
    out.sort(key=lambda d: d["last_launch"])
    if args.json:
        emit_json(out)
        return 0
    if not out:
        print(f"no sweeps in the job store {cfg.store_path}")
        return 0

    def states(d: dict) -> str:
        text = ", ".join(f"{n} {s}" for s, n in d["states"].items())
        if d["stale"]:
            text += f" (as of {present.ago(d['checked_at'])})"
        return text

    emit_table(f"{len(out)} sweep{'s' if len(out) != 1 else ''} in {cfg.store_path}",
               ["Sweep", "Launches", "Backends", "Runs", "States", "Last launch"],
               [[d["sweep"], len(d["launches"]), ", ".join(d["backends"]), d["runs"],
                 states(d), present.ago(d["last_launch"])] for d in out],
               whole=("Sweep",), wrap=("States",))
    for why in sorted({d["stale_reason"] for d in out if d["stale_reason"]}):
        print(f"chester: warning: states not refreshed: {why}", file=sys.stderr)
    return 0


#: how long ``chester sweeps`` waits for the backends' answers before it shows stored
#: states (marked with their age)
SWEEPS_REFRESH_S = 10.0


def _refresh_unfinished(store: Any, cfg: Any, *, timeout: float) -> dict[str, str]:
    """Ask each backend about every unfinished run of the project, all backends at once
    (one status call each), for at most ``timeout`` seconds; store the answers. Returns
    backend name → why its runs were not refreshed."""
    import threading

    from chester.plugin.dispatch import Dispatcher

    live = [r for r in store.runs() if r.handle is not None and not r.state.terminal]
    if not live:
        return {}
    groups: dict[str, list[Any]] = {}
    for r in live:
        groups.setdefault(r.backend, []).append(r)
    disp = Dispatcher()
    answers: dict[str, Any] = {}
    failed: dict[str, str] = {}

    def ask(name: str, rows: list[Any]) -> None:
        try:
            backend = cfg.backend(name, disp.manager)
            answers[name] = disp.call("chester_status", backend,
                                      handles=[r.handle for r in rows])
        except Exception as exc:  # one backend's trouble leaves the others' answers
            failed[name] = f"{name}: {str(exc).splitlines()[0] if str(exc) else exc!r}"

    # daemon threads: a backend that does not answer in time is left behind, not awaited
    threads = [threading.Thread(target=ask, args=(n, rs), daemon=True,
                                name=f"chester-status-{n}") for n, rs in groups.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    out = dict(failed)
    for name, rows in groups.items():
        if name in failed:
            continue
        result = answers.get(name)
        if result is None:
            out[name] = f"{name} did not answer within {timeout:g}s"
            continue
        store.record_status([(r.id, result[r.token]) for r in rows if r.token in result])
    return out


def cmd_logs(args: argparse.Namespace) -> int:
    """A run's output (stdout, or ``--stderr``). A run that ended badly is followed by the
    last lines of its stderr, on stderr (stdout stays the run's own bytes). ``-f`` says
    when it waits for a run to start and ends with the run's final state, on stderr."""
    from chester.cli import present
    from chester.config import get_config
    from chester.launcher.sweeps import Sweep, find_sweep, open_store
    from chester.plugin.dispatch import Dispatcher

    cfg = get_config()
    store = open_store(cfg, create=False)
    row, prefix = find_run(store, args.run)
    if row.handle is None:
        raise UserError(f"run {row.name!r} was never submitted (run its launch again to "
                        "submit it)")
    disp = Dispatcher()
    srow, _ = find_sweep(store, None, sweep_id=row.sweep_id)
    sw = Sweep(row=srow, store=store, config=cfg, dispatcher=disp)
    ref = present.run_ref(prefix, row)
    backend = cfg.backend(row.backend, disp.manager)
    stream = "stderr" if args.stderr else "stdout"
    if args.follow:
        row = _refreshed(sw, row)
        if not row.state.terminal and row.state.value != "running":
            why = present.reason(row)
            _note(f"chester: {row.name} ({ref}) has not started ({row.state.value}"
                  f"{': ' + why if why else ''}); its output follows when it does (Ctrl-C "
                  "stops waiting; the run goes on)")
    try:
        with _until_reader_leaves(sys.stdout) if args.follow else contextlib.nullcontext():
            disp.call("chester_logs", backend, handle=row.handle, follow=args.follow,
                      stream=stream, out=sys.stdout)
    except (BrokenPipeError, _ReaderGone):
        # whoever read the output went away (`chester logs -f RUN | head`): done, as with
        # `tail -f | head`; nothing more can be written there
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if not args.follow:
            raise
        try:
            sys.stdout.flush()  # Ctrl-C is how one stops following: not an error
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if sys.stderr.isatty():
            _note(f"chester: stopped following {row.name}; the run goes on (chester logs -f "
                  f"{ref} to follow it again)")
        return 0
    sys.stdout.flush()
    row = _refreshed(sw, row, settle=args.follow)
    if not row.state.terminal:
        return 0
    tail_shown = False
    if row.state.value in present.BAD and stream == "stdout" and row.stderr_tail:
        tail = row.stderr_tail.splitlines()[-LOGS_TAIL_LINES:]
        _note(f"--- the last {len(tail)} lines of stderr (all: chester logs {ref} --stderr) "
              "---\n" + "\n".join(tail))
        tail_shown = True
    if args.follow or (row.state.value != "succeeded" and not tail_shown):
        _note(f"chester: {row.name} ({ref}) {present.state_and_reason(row)}")
    return 0


def _refreshed(sw: Any, row: Any, *, settle: bool = False) -> Any:
    """The run's state now (its backend asked); with ``settle``, asked again for a few
    seconds until it has ended (a scheduler's accounting may lag the end of the output)."""
    from chester.plugin.errors import BackendError

    deadline = time.monotonic() + (10.0 if settle else 0.0)
    while True:
        try:
            row = sw.refresh(only=[row])[0]
        except BackendError:
            return row
        if row.state.terminal or time.monotonic() >= deadline:
            return row
        time.sleep(0.5)


def _note(text: str) -> None:
    """A line of chester's own beside a command's output: on stderr, after what stdout
    has shown."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    print(text, file=sys.stderr, flush=True)


class _ReaderGone(BaseException):
    """Raised in the main thread when the reader of its output pipe went away. Like
    ``KeyboardInterrupt``, no ``except Exception`` (a network library's retry loop, an
    ``except OSError``) takes it for an error of its own."""


@contextlib.contextmanager
def _until_reader_leaves(stream: Any) -> Iterator[None]:
    """While following, stop at once when whoever reads ``stream`` (a pipe or a socket)
    goes away, as ``tail -f`` does, even while the run prints nothing: a watcher thread
    polls it and interrupts the main thread (``SIGUSR1``), where :class:`_ReaderGone` is
    raised, again every 2 s until the main thread has left this block. Elsewhere (a
    terminal, a file) nothing is watched."""
    import select
    import signal
    import stat
    import threading

    try:
        fd = stream.fileno()
        kind = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        kind = 0
    if not (stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind)) or not hasattr(select, "poll") \
            or threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = [True]

    def interrupted(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _ReaderGone("the reader of the output went away")

    previous = signal.signal(signal.SIGUSR1, interrupted)
    stop_r, stop_w = os.pipe()
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        p = select.poll()
        p.register(fd, 0)  # errors and hang-ups only: a closed reader is POLLERR
        p.register(stop_r, select.POLLIN)
        while True:
            for f, ev in p.poll():
                if f == stop_r:
                    return
                if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    again = select.poll()
                    again.register(stop_r, select.POLLIN)
                    while armed[0]:
                        signal.pthread_kill(main, signal.SIGUSR1)
                        if again.poll(2000):
                            return
                    return

    watcher = threading.Thread(target=watch, name="chester-reader-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        try:
            armed[0] = False
        finally:  # also when the interruption lands right here
            armed[0] = False
            os.write(stop_w, b"x")
            watcher.join(5)
            os.close(stop_r)
            os.close(stop_w)
            signal.signal(signal.SIGUSR1, previous)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a sweep's unfinished runs (``PREFIX``, ``PREFIX@N``), one run (``PREFIX:N``,
    its name) or the runs ``--run`` names. Without any, the latest sweep: asked first on
    a terminal, refused when piped."""
    from chester.cli import present

    sweeps, runs = _resolve(args.exp_prefix)
    sw = sweeps[0]
    names = [r.name for r in runs] if runs is not None else (args.run or None)
    if args.run and runs is not None:
        raise UserError("give the run either as the argument or with --run, not both")
    if names is not None:
        known = {r.name for r in sw.rows()}
        for name in names:
            if name not in known:
                from chester.launcher.sweeps import open_store

                # a --run given as PREFIX:N, a token or a folder: as `logs` takes it
                row, _ = find_run(open_store(sw.config, create=False), name)
                if row.sweep_id not in {launch.id for launch in sw.launches()}:
                    raise UserError(f"run {row.name!r} is not in sweep {sw.ref!r}")
                names = [row.name if n == name else n for n in names]
    if args.exp_prefix is None and not args.run and not args.yes:
        active = [r for r in sw.refresh() if r.handle is not None and not r.state.terminal]
        if not active:
            print(f"{sw.ref}: nothing to cancel (every run has ended)")
            return 0
        what = f"sweep {sw.ref!r} ({present.count_line(active)}: " + \
            ", ".join(present.run_ref(sw.exp_prefix, r) for r in active[:6]) + \
            (", ..." if len(active) > 6 else "") + ")"
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UserError(f"name the sweep to cancel: chester cancel {sw.ref} (the latest, "
                            f"{what.split(' (', 1)[1][:-1]}); without a PREFIX, cancel asks "
                            "first on a terminal (or give -y)")
        answer = input(f"cancel {what}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing cancelled")
            return 0
    result = sw.cancel(names)
    rows = {r.name: r for r in sw.rows()}
    if not result:
        ended = [rows[n] for n in names or () if n in rows]
        if ended:
            print(f"{sw.ref}: nothing to cancel: " + ", ".join(
                f"{r.name} had already ended ({r.state.value})" for r in ended))
        else:
            print(f"{sw.ref}: nothing to cancel (every run has ended)")
        return 0
    stopped = [rows[n] for n, ok in result.items() if ok]
    already = [rows[n] for n, ok in result.items() if not ok]
    line = f"{sw.ref}: cancelled {len(stopped)} run{'s' if len(stopped) != 1 else ''}"
    if stopped:
        line += " (" + ", ".join(present.run_ref(sw.exp_prefix, r) for r in stopped) + ")"
    if already:
        line += f"; {len(already)} had already ended (" + ", ".join(
            f"{present.run_ref(sw.exp_prefix, r)} {r.state.value}" for r in already) + ")"
    print(line)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    sweeps, runs = _resolve(args.exp_prefix)
    sw = sweeps[0]
    rows = sw.refresh(only=runs) if runs is not None else sw.refresh()
    results = sw.pull(include=args.include, exclude=args.exclude, bare=args.bare,
                      rows=rows if runs is not None else None)
    done = [r for r in results if r.complete]
    what = runs[0].name if runs is not None else sw.ref
    if runs is not None and not results:
        print(f"{what}: nothing to pull yet ({rows[0].state.value}: runs are pulled once "
              "they end)")
        return 0
    here = [r for r in rows if r.handle is not None and not _remote(sw, r.backend)]
    files = sum(r.files for r in done)
    size = sum(r.bytes for r in done)
    if here and len(here) == len([r for r in rows if r.handle is not None]):
        folder = os.path.relpath(os.path.dirname(here[0].local_dir), sw.config.project_path)
        print(f"{what}: {len(done)} run{'s' if len(done) != 1 else ''} already here, in "
              f"{folder} (the {here[0].backend} backend writes them in place; nothing to "
              "transfer)")
    else:
        print(f"{what}: pulled {len(done)} runs, {files} files, {present_size(size)}")
    if len(done) < len(results):
        names = {r.token: r.name for r in sw.rows()}
        missing = [names.get(r.token, r.token) for r in results if not r.complete]
        print(f"{what}: {len(missing)} runs did not arrive (not marked pulled; "
              f"`chester pull` again to retry): {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _remote(sw: Any, backend_name: str) -> bool:
    """Whether the backend's runs live elsewhere (not written in place here)."""
    try:
        b = sw._backend_for(backend_name)
        return bool(sw.dispatcher.manager.get_backend(b.type).spec.capabilities.remote)
    except Exception:
        return True


def present_size(n: int) -> str:
    """``812 bytes``, ``3.4 MB``."""
    size = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{n} bytes" if n < 1000 else f"{size:.1f} {unit}"
    return f"{n} bytes"


def cmd_monitor(args: argparse.Namespace) -> int:
    from chester.launcher.monitor import monitor

    return monitor(args.exp_prefix, interval=args.interval, bare=args.bare,
                   timeout=args.timeout, once=args.once)


def cmd_launch(args: argparse.Namespace) -> int:
    import shlex

    from chester import attrs_code

    attrs_code.install()  # before the launch's classes are made
    from chester.launcher.launching import LaunchRequest, run_request
    from chester.target.command import Command, CommandError
    from chester.variants import overrides
    from chester.variants.naming import safe_component

    tokens = list(args.cmd)
    if tokens and tokens[0] == "--":
        tokens = tokens[1:]
    program, keys = overrides.parse_command(tokens)
    from_file = overrides.load_sweep_file(args.sweep) if args.sweep else []
    variants = overrides.combine(keys, from_file)
    prefix = args.prefix or safe_component(overrides.default_prefix(program))
    try:
        command = Command(program, args.style, run_args=not args.no_run_args,
                          texts=overrides.texts(keys, from_file, style=args.style))
    except CommandError as exc:
        raise UserError(str(exc)) from None
    sweep = run_request(LaunchRequest.of(
        command, variants, backend=args.backend, exp_prefix=prefix, dry_run=args.dry_run,
        resume=False if args.new else "auto", surface="cli"))
    for level, text in sweep.notices:  # reattached, a new launch, a dry run's warning
        print(f"{'warning: ' if level == 'warning' else ''}{text}",
              file=sys.stderr if level == "warning" else sys.stdout)
    if args.dry_run:
        return _show_dry_run(sweep, command, variants)
    if sweep.submitted:
        print(f"launched sweep {prefix!r}: {sweep.submitted} runs on backend "
              f"{sweep.backend.name!r}")
    if not args.wait:
        print(f"follow it:  chester status {shlex.quote(prefix)}  |  chester monitor "
              f"{shlex.quote(prefix)}  |  chester logs -f {shlex.quote(prefix)}:N")
        return 0
    from chester.launcher.monitor import watch

    return watch([sweep], label=prefix)


def _show_dry_run(sweep: Any, command: Any, variants: list[dict]) -> int:
    """What ``--dry-run`` prints: each run the launch would submit, with its command, then
    what the backend rendered. Nothing was recorded: the real launch numbers its runs as
    it finds the store then."""
    import shlex

    rows = sweep.rows()
    print(f"dry run: sweep {sweep.exp_prefix!r}, {len(rows)} runs on backend "
          f"{sweep.backend.name!r} (nothing submitted, nothing recorded)")
    for r in rows:
        print(f"  {r.name}: {shlex.join(command.build(variants[r.idx], r.remote_dir, r.name))}")
    prepared = getattr(sweep, "prepared", None)
    if prepared is not None:
        if prepared.summary:
            print(prepared.summary)
        for label, text in (prepared.scripts or {}).items():
            print(f"--- {label} ---\n{text}")
    return 0


def cmd_relaunch(args: argparse.Namespace) -> int:
    from chester.launcher.launching import relaunch

    sw, names = relaunch(args.exp_prefix, failed=args.failed)
    what = "lost, failed, timed-out or out-of-memory" if args.failed else "lost"
    if not names:
        print(f"{sw.exp_prefix}: no {what} runs to submit again")
        return 0
    print(f"{sw.exp_prefix}: submitted {len(names)} {what} runs again: {', '.join(names)}")
    return 0
