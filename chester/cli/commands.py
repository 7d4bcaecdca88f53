"""The ``chester`` subcommands (imported only when one runs)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from chester.cli import emit_json, emit_table
from chester.plugin.errors import UserError


def cmd_plugins(args: argparse.Namespace) -> int:
    from chester.plugin.manager import get_plugin_manager

    if args.plugins_command == "new":
        from pathlib import Path

        from chester.plugin.scaffold import new_plugin

        root = new_plugin(args.name, Path(args.dir))
        print(f"wrote {root}\nnext: pip install -e '{root}[test]' && chester plugins list && "
              f"pytest {root}/tests")
        return 0
    if args.plugins_command != "list":
        raise UserError("usage: chester plugins list [--json] [--verbose] | plugins new NAME")
    mgr = get_plugin_manager()
    backends = mgr.backends()  # also fills each record's backends
    conflicts = mgr.conflicts()
    records = sorted(mgr.records.values(), key=lambda r: r.name)
    if args.json:
        emit_json([r.to_json() for r in records])
        return 0
    rows = []
    for r in records:
        status = r.status if r.status != "error" else f"error: {r.error}"
        rows.append([r.name, r.distribution, r.version, status, ", ".join(r.backends),
                     ", ".join(h.replace("chester_", "") for h in r.hooks)])
    emit_table("chester plugins", ["Name", "Distribution", "Version", "Status", "Backends",
                                   "Hooks"], rows)
    for name, entries in conflicts.items():
        owners = " and ".join(e.distribution or e.plugin_name for e in entries)
        print(f"conflict: backend {name!r} is claimed by {owners}", file=sys.stderr)
    if args.verbose:
        import attrs

        for name, entry in sorted(backends.items()):
            print(f"\n{name}: {entry.spec.summary}  [{entry.distribution}]")
            caps = attrs.asdict(entry.spec.capabilities)
            print("  capabilities: " + ", ".join(
                k if v is True else f"{k}={v}" for k, v in caps.items() if v is not False))
            for f in attrs.fields(entry.spec.options_cls):
                default = "" if f.default is attrs.NOTHING else f" (default: {f.default!r})"
                print(f"  {f.name}: {f.metadata.get('help', '')}{default}")
    return 0


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


def _ago(t: float | None) -> str:
    if not t:
        return ""
    s = time.time() - t
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def status_table(rows: list[Any], *, several: bool, launches: bool,
                 width: int | None = None) -> tuple[list[str], list[list[Any]], list[str]]:
    """Columns, rows and the lines printed under the table of ``chester status``.

    On a terminal narrower than 120 columns the reasons go under the table, one line a run,
    so run names and states keep their width; piped output keeps every column."""
    import shutil

    if width is None:
        width = shutil.get_terminal_size((200, 24)).columns if sys.stdout.isatty() else 10**6
    inline = width >= 120
    columns = ["Id", "Run", *(["Launch"] if launches else []), *(["Backend"] if several else []),
               "State", *(["Reason"] if inline else []), "Exit", "Host", "Remote id", "Pulled"]
    table, notes = [], []
    for r in rows:
        why = r.reason or r.pending_reason or ""
        table.append([r.id, r.name, *([r.sweep_id] if launches else []),
                      *([r.backend] if several else []), r.state.value,
                      *([why[:120]] if inline else []), r.exit_code, r.host or "",
                      r.remote_id or "", "yes" if r.pulled_at else ""])
        if why and not inline:
            notes.append(f"{r.name}: {why[:300]}")
    return columns, table, notes


def cmd_status(args: argparse.Namespace) -> int:
    from chester.launcher.sweeps import id_ranges

    sweeps = _sweeps(args.exp_prefix, args.all)
    out_json = []
    for sw in sweeps:
        rows = sw.rows() if args.no_refresh else sw.refresh()
        launches = [launch.id for launch in sw.launches()]
        backends = sorted({r.backend for r in rows} or {sw.row.backend})
        if args.json:
            out_json.append({
                "sweep": sw.exp_prefix, "ref": sw.ref, "sweep_id": sw.id,
                "sweep_ids": launches, "backend": backends[0] if len(backends) == 1 else None,
                "backends": backends,
                "runs": [{"id": r.id, "number": r.number, "name": r.name, "sweep_id": r.sweep_id,
                          "backend": r.backend, "state": r.state.value, "reason": r.reason,
                          "pending_reason": r.pending_reason, "exit_code": r.exit_code,
                          "host": r.host, "remote_id": r.remote_id, "attempt": r.attempt,
                          "log_dir": r.local_dir, "stderr_tail": r.stderr_tail,
                          "pulled": bool(r.pulled_at)} for r in rows]})
            continue
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs"
        several = len(backends) > 1
        columns, table, notes = status_table(rows, several=several,
                                             launches=len(launches) > 1)
        what = (f"launch{'es' if len(launches) > 1 else ''} {id_ranges(launches)}"
                if sw.experiment else f"launch {sw.id}")
        emit_table(f"{sw.ref} ({what}, backend{'s' if several else ''} {', '.join(backends)}): "
                   f"{summary}", columns, table,
                   keep=("Id", "Run", "State"), whole=("Run", "Launch", "State"),
                   wrap=("Reason",))
        for line in notes:
            print(line)
        if sys.stdout.isatty() and len(rows) > 1:
            print(f"{len(rows)} runs: {summary}")
        for r in rows:
            if r.state.terminal and r.state.value != "succeeded" and r.stderr_tail:
                tail = "\n".join(r.stderr_tail.splitlines()[-5:])
                print(f"--- {r.name}: last lines of stderr ---\n{tail}")
    if args.json:
        emit_json(out_json if args.all else out_json[0])
    return 0


def cmd_sweeps(args: argparse.Namespace) -> int:
    """Every sweep (exp_prefix) of the project: launches, backends, counts by state, age."""
    from chester.config import get_config
    from chester.launcher.sweeps import open_store

    cfg = get_config()
    store = open_store(cfg, create=False)
    by_prefix: dict[str, list[Any]] = {}
    for row in store.sweeps():
        by_prefix.setdefault(row.exp_prefix, []).append(row)
    out = []
    for prefix, launches in by_prefix.items():
        counts: dict[str, int] = {}
        runs = 0
        for launch in launches:
            for r in store.runs(launch.id):
                runs += 1
                counts[r.state.value] = counts.get(r.state.value, 0) + 1
        out.append({"sweep": prefix, "launches": [s.id for s in launches],
                    "backends": sorted({s.backend for s in launches}), "runs": runs,
                    "states": dict(sorted(counts.items())),
                    "last_launch": max(s.created for s in launches)})
    out.sort(key=lambda d: d["last_launch"])
    if args.json:
        emit_json(out)
        return 0
    if not out:
        print(f"no sweeps in the job store {cfg.store_path}")
        return 0
    emit_table(f"{len(out)} sweeps in {cfg.store_path}",
               ["Sweep", "Launches", "Backends", "Runs", "States", "Last launch"],
               [[d["sweep"], len(d["launches"]), ", ".join(d["backends"]), d["runs"],
                 ", ".join(f"{n} {s}" for s, n in d["states"].items()),
                 _ago(d["last_launch"])] for d in out],
               whole=("Sweep",), wrap=("States",))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from chester.config import get_config
    from chester.launcher.sweeps import open_store
    from chester.plugin.dispatch import Dispatcher

    cfg = get_config()
    store = open_store(cfg, create=False)
    rows = store.find_runs(args.run)
    if not rows:
        raise UserError(f"no run {args.run!r} in the job store {cfg.store_path}")
    row = rows[-1]
    if row.handle is None:
        raise UserError(f"run {row.name!r} was never submitted")
    disp = Dispatcher()
    backend = cfg.backend(row.backend, disp.manager)
    try:
        with _until_reader_leaves(sys.stdout) if args.follow else contextlib.nullcontext():
            disp.call("chester_logs", backend, handle=row.handle, follow=args.follow,
                      stream="stderr" if args.stderr else "stdout", out=sys.stdout)
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
    return 0


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
    sw = _sweeps(args.exp_prefix)[0]
    result = sw.cancel(args.run or None)
    if not result:
        print(f"{sw.ref}: nothing to cancel")
        return 0
    stopped = sum(1 for v in result.values() if v)
    print(f"{sw.ref}: cancelled {stopped} of {len(result)} unfinished runs")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    sw = _sweeps(args.exp_prefix)[0]
    sw.refresh()
    results = sw.pull(include=args.include, exclude=args.exclude, bare=args.bare)
    done = [r for r in results if r.complete]
    files = sum(r.files for r in done)
    size = sum(r.bytes for r in done)
    print(f"{sw.ref}: pulled {len(done)} runs, {files} files, {size} bytes")
    if len(done) < len(results):
        names = {r.token: r.name for r in sw.rows()}
        missing = [names.get(r.token, r.token) for r in results if not r.complete]
        print(f"{sw.ref}: {len(missing)} runs did not arrive (not marked pulled; "
              f"`chester pull` again to retry): {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from chester.launcher.monitor import monitor

    return monitor(args.exp_prefix, interval=args.interval, bare=args.bare,
                   timeout=args.timeout, once=args.once)


def cmd_launch(args: argparse.Namespace) -> int:
    import shlex

    from chester.launcher.launching import launch
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
    sweep = launch(command, variants, backend=args.backend, exp_prefix=prefix,
                   dry_run=args.dry_run, resume="incomplete")
    if args.dry_run:
        rows = sweep.rows()
        print(f"dry run: sweep {prefix!r}, {len(rows)} runs on backend {sweep.backend.name!r} "
              "(nothing submitted)")
        for r in rows:
            print(f"  {r.name}: {shlex.join(command.build(variants[r.idx], r.remote_dir, r.name))}")
        prepared = getattr(sweep, "prepared", None)
        if prepared is not None:
            if prepared.summary:
                print(prepared.summary)
            for label, text in (prepared.scripts or {}).items():
                print(f"--- {label} ---\n{text}")
        return 0
    print(f"launched sweep {prefix!r}: {len(variants)} runs on backend "
          f"{sweep.backend.name!r}")
    if not args.wait:
        print(f"follow it:  chester status {shlex.quote(prefix)}  |  chester monitor "
              f"{shlex.quote(prefix)}  |  chester logs -f RUN")
        return 0
    states = sweep.wait(pull=True)
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st.value] = counts.get(st.value, 0) + 1
    print(f"{prefix}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    bad = [r for r in sweep.rows() if r.state.value != "succeeded"]
    for r in bad:
        print(f"  {r.name}: {r.state.value} {r.reason or ''}".rstrip())
    return 1 if bad else 0


def cmd_relaunch(args: argparse.Namespace) -> int:
    from chester.launcher.launching import relaunch

    sw, names = relaunch(args.exp_prefix, failed=args.failed)
    what = "lost, failed, timed-out or out-of-memory" if args.failed else "lost"
    if not names:
        print(f"{sw.exp_prefix}: no {what} runs to submit again")
        return 0
    print(f"{sw.exp_prefix}: submitted {len(names)} {what} runs again: {', '.join(names)}")
    return 0
