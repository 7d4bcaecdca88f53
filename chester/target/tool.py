"""``python -m chester.target``: look at and act on run folders where they run.

``status DIR...`` prints one JSON object with every run's state (one call for a whole
sweep, so a remote backend needs one round trip); ``cancel DIR...`` stops runs;
``tail [-f] DIR stdout|stderr`` prints (and follows) a run's output. Folder lists may also
come one a line on standard input (``-``). Runs on the target: imports nothing heavy.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chester.target import rundir as rd
from chester.target import states

ORPHAN_GRACE_S = 5.0


def probe(run_dir: Path, *, kill_orphans: bool = True) -> dict[str, Any]:
    """One run's state from its records, markers and processes, by the one rule
    (:mod:`chester.target.states`). PIDs count only with their start time. A run that
    succeeded but left processes of its group behind has them stopped (TERM, 5 s, KILL)."""
    run_dir = Path(run_dir)
    meta = rd.read_json(run_dir / rd.RUN_JSON) or {}
    status = rd.read_json(run_dir / rd.STATUS)
    st = states.current(meta, status)
    out: dict[str, Any] = {"state": "queued", "reason": None, "exit_code": None,
                           "attempt": meta.get("attempt")}
    if st is not None:
        out.update(attempt=st.get("attempt"), host=st.get("host"),
                   started_at=st.get("started_at"), ended_at=st.get("ended_at"),
                   pid=st.get("pid"))
    alive = st is not None and rd.pid_alive(st.get("pid"), st.get("start_ticks"))
    ex = rd.read_json(run_dir / rd.EXIT)
    q = rd.read_json(run_dir / rd.QUEUED)
    if q and q.get("token") not in (None, meta.get("token")):
        q = None  # an earlier run's queue runner (the folder's run was submitted again)
    # the queue runner of this run is alive: it records how the worker ended as it ends
    runner_alive = bool(q) and q.get("token") == meta.get("token") and \
        rd.pid_alive(q.get("runner_pid"), q.get("runner_ticks"))
    done = (run_dir / rd.DONE).exists()
    # stderr tells why a run did not succeed: not read for one that runs or succeeded
    tail = None if (alive and not states.ended(st)) or states.succeeded(st, done=done) else \
        rd.tail(run_dir / rd.STDERR)
    v = states.decide(meta, status, done=done,
                      cancel=rd.cancelled(run_dir, meta.get("token")), alive=alive,
                      exit_record=ex, exit_pending=runner_alive, tail=tail,
                      free_bytes=rd.free_bytes(run_dir), run_dir=str(run_dir))
    if v is None:  # never started, and nothing says it will not: the queue says why
        if q and rd.pid_alive(q.get("runner_pid"), q.get("runner_ticks")):
            return {**out, "state": "queued", "pending_reason": "waiting for a free slot"}
        if not q:
            return {**out, "state": "queued", "pending_reason": "not yet picked up"}
        # the runner may have just started the worker: look again before calling it lost
        if states.current(meta, rd.read_json(run_dir / rd.STATUS)) is not None:
            return probe(run_dir, kill_orphans=kill_orphans)
        v = states.runner_stopped(tail=tail, free_bytes=rd.free_bytes(run_dir),
                                  run_dir=str(run_dir))
    v.pop("stopped", None)
    out.update(v)
    if v["state"] == states.SUCCEEDED and st is not None:
        pgid = st.get("pgid")
        if kill_orphans and pgid and pgid == st.get("pid") and rd.group_alive(pgid):
            rd.kill_group(pgid, ORPHAN_GRACE_S)
            out["orphans_killed"] = True
        return out
    if v["state"] == states.CANCELLED and (run_dir / rd.CANCEL).exists():
        # who cancelled it and when, from the marker
        marker = rd.read_cancel(run_dir)
        out.update(reason=rd.cancel_reason(marker, started=st is not None),
                   **rd.cancel_fields(marker))
    if v["state"] == states.CANCELLED and st is not None and kill_orphans:
        pgid = st.get("pgid")
        if pgid and pgid == st.get("pid") and rd.group_alive(pgid):
            rd.kill_group(pgid, ORPHAN_GRACE_S)
    if v["state"] not in (states.QUEUED, states.RUNNING) and st is not None or \
            v["state"] == states.FAILED:
        out["stderr_tail"] = tail
    return out


#: Below this many free bytes, a run that died without a record is put down to a full disk.
DISK_FULL_BYTES = states.DISK_FULL_BYTES


def cancel(run_dir: Path, grace_s: float = ORPHAN_GRACE_S, by: str = rd.CANCELLED_BY) -> bool:
    """Mark the run cancelled (the marker says ``by`` whom and when) and kill its process
    group (TERM, then KILL)."""
    run_dir = Path(run_dir)
    if not (run_dir / rd.RUN_JSON).exists():
        return False
    before = probe(run_dir, kill_orphans=False)
    if before["state"] not in (states.QUEUED, states.RUNNING):
        return False
    rd.write_cancel(run_dir, by, (rd.read_json(run_dir / rd.RUN_JSON) or {}).get("token"))
    st = rd.read_json(run_dir / rd.STATUS)
    if st and st.get("pgid") and rd.pid_alive(st.get("pid"), st.get("start_ticks")):
        rd.kill_group(int(st["pgid"]), grace_s)
    return True


def cancel_many(run_dirs: list[Path], grace_s: float = ORPHAN_GRACE_S,
                by: str = rd.CANCELLED_BY) -> dict[str, bool]:
    """Cancel many runs: mark all first (so none starts), then kill in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(run_dirs)))) as ex:
        results = list(ex.map(lambda d: cancel(d, grace_s, by), run_dirs))
    return {str(d): r for d, r in zip(run_dirs, results, strict=False)}


def _reader_gone(out: Any) -> bool:
    """True when ``out`` is a pipe or socket whose reader has gone (the client of a
    ``tail -f`` over SSH was stopped): the follower then stops too."""
    try:
        import select

        fd = out.fileno()
        p = select.poll()
        p.register(fd, select.POLLERR | select.POLLHUP)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def follow(run_dir: Path, stream: str, out: Any, *, follow: bool, poll_s: float = 0.2,
           start: int = 0, active: Callable[[], bool] | None = None) -> None:
    """Write a run's stdout or stderr to ``out`` from byte ``start``; with ``follow``, until
    the run ends (or whoever reads ``out`` goes away). Bytes are written as they are when
    ``out`` has a binary buffer (``sys.stdout``), else decoded as UTF-8. ``active`` says
    whether the run may still write (by default: :func:`probe` reads it queued or
    running; a scheduler that knows its own queue passes its own)."""
    path = Path(run_dir) / (rd.STDOUT if stream == "stdout" else rd.STDERR)
    raw = getattr(out, "buffer", None)
    pos = max(0, int(start))

    def emit(data: bytes) -> None:
        if raw is not None:
            out.flush()
            raw.write(data)
            raw.flush()
        else:
            out.write(data.decode("utf-8", "replace"))
            out.flush()

    def read() -> bytes:
        nonlocal pos
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            return b""
        return chunk

    while True:
        chunk = read()
        if chunk:
            emit(chunk)
        if not follow:
            return
        if not chunk:
            if not (active() if active is not None else
                    probe(Path(run_dir), kill_orphans=False)["state"] in ("queued", "running")):
                rest = read()  # one last read after the end
                if rest:
                    emit(rest)
                return
            if _reader_gone(out):
                return
        time.sleep(poll_s)


def _dirs(args: list[str]) -> list[Path]:
    if args == ["-"]:
        return [Path(line) for line in sys.stdin.read().splitlines() if line]
    return [Path(a) for a in args]


STATUS_FIELDS = """\
output: one JSON object on one line, keyed by each run folder as given:
  {"DIR": {"state": ..., "reason": ..., "exit_code": ..., "attempt": ..., ...}, ...}
  state          queued | running | succeeded | failed | cancelled | oom | lost
                 (the rule: chester.target.states, docs/architecture.md)
  reason         why it failed, was cancelled or is lost (null otherwise)
  pending_reason why a queued run waits (queued only)
  exit_code      the worker's exit status, once it ended
  signal         the signal that killed a worker that recorded no end
  attempt        the run's attempt number (from its run record)
  host, pid, started_at, ended_at   from the worker's start record, once it started
  cancelled_by, cancelled_at        from the cancel marker (cancelled runs)
  stderr_tail    the last lines of stderr.log, for runs that did not succeed
  orphans_killed true when processes the run left behind were stopped
exit status: 0 (the states are in the output), 2 (usage)"""


def _parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m chester.target",
        description="Look at and act on run folders where they run (chester's target-side "
                    "tool; from the shipped runtime: python chester-<digest>.pyz target ...). "
                    "Imports nothing beyond the standard library.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{status,cancel,tail}")
    fmt = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("status", help="every run's state, in one call", formatter_class=fmt,
                       description="Print the state of each run folder, read from its records "
                                   "(.chester/run.json, .chester/status.json, .done, the queue "
                                   "owner) and its processes (pid with start time). A run that "
                                   "wrote .done but left processes behind has them stopped.",
                       epilog=STATUS_FIELDS)
    s.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run folders, or - to read them one a line from standard input")
    c = sub.add_parser("cancel", help="cancel runs", formatter_class=fmt,
                       description="Mark each run cancelled (a queued run never starts; the "
                                   ".chester/cancel marker records who and when) and stop a "
                                   "running one's whole process group (TERM, 5 s, KILL).",
                       epilog="output: one JSON object on one line, {\"DIR\": true|false}: true "
                              "when the run was live and is now cancelled\n"
                              "exit status: 0, 2 (usage)")
    c.add_argument("--by", default=rd.CANCELLED_BY, metavar="WHO",
                   help=f"who cancels, as the marker and the run's state say it "
                        f"(default: {rd.CANCELLED_BY})")
    c.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, or -")
    t = sub.add_parser("tail", help="print (and follow) a run's output", formatter_class=fmt,
                       description="Print stdout.log or stderr.log of a run folder from its "
                                   "start; with -f keep printing until the run ends (its "
                                   "state, as `status` reads it, is no longer queued or "
                                   "running).",
                       epilog="output: the log's bytes, as they are\nexit status: 0, 2 (usage)")
    t.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    t.add_argument("--from", dest="start", type=int, default=0, metavar="BYTES",
                   help="start at this byte of the log (a follower that reconnects)")
    t.add_argument("dir", metavar="DIR", help="the run folder")
    t.add_argument("stream", nargs="?", default="stdout", choices=("stdout", "stderr"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = _parser().parse_args(argv)
    except SystemExit as exc:  # --help: 0, a usage error: 2
        return int(exc.code or 0)
    if a.cmd == "status":
        print(json.dumps({str(d): probe(d) for d in _dirs(a.dirs)}))
    elif a.cmd == "cancel":
        print(json.dumps(cancel_many(_dirs(a.dirs), by=a.by)))
    else:
        follow(Path(a.dir), a.stream, sys.stdout, follow=a.follow, start=a.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
