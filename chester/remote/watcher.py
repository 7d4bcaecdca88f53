"""Seeing a run's end while a laptop waits, without asking the target more often.

While :meth:`chester.Sweep.wait` waits, a small watcher runs where the run folders are (a
process here, or one command over the open SSH connection to the host that holds them).
About once a second it ``stat``\\ s each unfinished run's status record (plain ``stat``:
inotify does not see writes made by other nodes of a shared file system) and, when one
changes to an end, prints the run's records as one JSON line. The backend turns those
records into the run's final status (its ``final_status``: the SLURM merge rule, or the one
records-to-state rule of :mod:`chester.target.states` for the hosted backends), and the
wait records it at once; the polls keep their own interval for what only they know. The
watcher lives only as long as the wait: it exits when its stdin closes (the wait ended,
Ctrl-C, the waiting process killed: its end of the pipe closes), when every run it was
given has ended, or after a hard lifetime.

Its cost where it runs: one Python process per waiting laptop, and one ``stat`` of one
file per unfinished run per second (two for a run whose record says it succeeded, until its
``.done`` is there).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chester.plugin.records import RunHandle, RunStatus
from chester.target import rundir, states

#: how long a watcher lives at most (seconds); the wait starts another when it ends early
LIFETIME = 3600.0
#: how often it looks at the records (seconds)
TICK = 1.0

#: A record's JSON (``rd``: None when it is missing or cut short) and a log's last ``n``
#: lines from its last ``size`` bytes (``tail``: None when it is missing or empty). Plain
#: Python (it needs ``json`` imported) for the scripts sent to a host: the watcher
#: (:data:`WATCHER`) and the SLURM backend's record reader, one source.
READ_HELPERS = r"""
def rd(p):
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except Exception:
        return None
def tail(p, n=20, size=8192):
    try:
        with open(p, "rb") as f:
            f.seek(0, 2); end = f.tell(); f.seek(max(0, end - size)); data = f.read()
    except OSError:
        return None
    text = data.decode("utf-8", "replace").rstrip("\n")
    return "\n".join(text.splitlines()[-n:]) or None
"""

#: the end words a watcher reports by default: the final ones (a stop by a signal,
#: ``terminated``, waits for whoever knows why)
FINAL_WORDS: tuple[str, ...] = states.FINAL

#: The watcher. argv: lifetime, tick, the end words it reports (comma-separated), the records
#: it adds to an end (paths under the run folder, comma-separated), ``1`` when the runs'
#: processes live on this host (a run whose process group outlives its worker for more than
#: half a second is not reported: the status poll, which stops such leftovers, sees its end),
#: else ``0``, and a marker (so a test can find it). stdin: one JSON line, ``[[folder, token, note file or null], ...]``, then nothing
#: until the wait ends (EOF); a record of another token (a folder reused) is no end of this
#: run, and the folder is watched on. The note file is read when the run's end is seen, its
#: text the end line's ``note`` (the SLURM stage's ``job-<i>.id`` of a run submitted after
#: launch). stdout: one JSON line per run that ended, ``[token, records]``: ``token`` and
#: ``attempt`` of ``run.json``, ``status`` (``status.json``), ``done`` (``.done`` is there),
#: ``dir``, ``tail`` (the end of ``stderr.log``, for a run that did not succeed) and
#: ``files`` (each added record's JSON; ``{}`` for one that is there but no JSON, None for
#: one that is not there). Plain Python: the host needs no chester for it; its ``rd`` and
#: ``tail`` are :data:`READ_HELPERS`.
WATCHER = r"""
import json, os, select, sys, time
lifetime, tick = float(sys.argv[1]), float(sys.argv[2])
ENDS = tuple(w for w in sys.argv[3].split(",") if w)
READS = tuple(p for p in sys.argv[4].split(",") if p)
GROUPS = sys.argv[5] == '1'""" + READ_HELPERS + r"""def ident(p):
    try:
        s = os.stat(p)
    except OSError:
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns)
def group_gone(st, wait=0.5):
    # the run's own process group (its worker leads it) has left this host; the worker
    # itself records its end just before it exits, so it is given a moment
    g = st.get("pgid")
    if not g or g != st.get("pid"):
        return True
    end = time.monotonic() + wait
    while True:
        try:
            os.killpg(int(g), 0)
        except ProcessLookupError:
            return True
        except Exception:
            pass
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)
stdin = sys.stdin.buffer
line = stdin.readline()
if not line:
    sys.exit(0)
todo = {e[0]: [e[1], None, e[2] if len(e) > 2 else None] for e in json.loads(line)}
deadline = time.monotonic() + lifetime
while todo and time.monotonic() < deadline:
    for d in list(todo):
        k, last, note = todo[d]
        status = os.path.join(d, ".chester", "status.json")
        now = (ident(status), os.path.exists(os.path.join(d, ".done")))
        if now[0] is None or now == last:
            continue
        todo[d][1] = now
        st = rd(status)
        if not isinstance(st, dict) or st.get("state") not in ENDS or st.get("ended_at") is None:
            continue
        if st.get("token") not in (None, k):  # another run's record (a folder reused)
            continue
        if st.get("state") == "succeeded" and not now[1]:
            todo[d][1] = None  # .done follows the record: look again
            continue
        if GROUPS and not group_gone(st):
            todo[d][1] = None  # processes of the run live on: a poll stops them
            continue
        meta = rd(os.path.join(d, ".chester", "run.json")) or {}
        ok = st.get("state") == "succeeded"
        rec = {"token": meta.get("token"), "attempt": meta.get("attempt"), "exists": True,
               "status": st, "done": now[1], "dir": d, "free": None, "sched_tail": None,
               "tail": None if ok else tail(os.path.join(d, "stderr.log"))}
        if READS:
            files = rec["files"] = {}
            for p in READS:
                v = rd(os.path.join(d, p))
                files[p] = v if v is not None else ({} if os.path.lexists(os.path.join(d, p))
                                                    else None)
        if note:
            try:
                with open(note, encoding="utf-8") as f:
                    rec["note"] = f.read().strip() or None
            except OSError:
                rec["note"] = None
        try:
            sys.stdout.write(json.dumps([k, rec]) + "\n")
            sys.stdout.flush()
        except OSError:
            sys.exit(0)
        del todo[d]
    ready, _, _ = select.select([stdin], [], [], max(0.0, min(tick, deadline - time.monotonic())))
    if ready and not os.read(stdin.fileno(), 4096):
        break
"""


def argv(python: str, lifetime: float, tick: float, marker: str, *,
         ends: Sequence[str] = FINAL_WORDS, reads: Sequence[str] = (),
         groups: bool = False) -> list[str]:
    """The watcher's argv (``marker``: a word of its command line; ``ends``: the end words
    it reports; ``reads``: records under each run folder it adds to an end; ``groups``: the
    runs' processes live where the watcher runs, see :data:`WATCHER`)."""
    return [python, "-c", WATCHER, repr(float(lifetime)), repr(float(tick)), ",".join(ends),
            ",".join(reads), "1" if groups else "0", marker]


def command(python: str, lifetime: float, tick: float, marker: str, *,
            ends: Sequence[str] = FINAL_WORDS, reads: Sequence[str] = (),
            groups: bool = False) -> str:
    """The shell command that starts the watcher (:func:`argv`)."""
    return "exec " + shlex.join(argv(python, lifetime, tick, marker, ends=ends, reads=reads,
                                     groups=groups))


#: the end words a hosted backend's watcher reports: the final ones, and a stop by a signal
#: (``failed``, or ``cancelled`` under a cancel marker, by the rule)
HOSTED_ENDS: tuple[str, ...] = (*states.FINAL, states.TERMINATED)
#: the records a hosted backend's final status reads beside the status record
HOSTED_READS: tuple[str, ...] = (rundir.CANCEL,)


def hosted_final_status(h: RunHandle, rec: Mapping[str, Any]) -> RunStatus | None:
    """A hosted (ssh, autobot) run's final status from the records a watcher sent, by the
    one rule (:mod:`chester.target.states`) as the host's tool applies it to a run whose end
    is recorded; None when they do not end this run (another run's records, an earlier
    attempt's, an end that is not final)."""
    meta = {"token": rec.get("token"), "attempt": rec.get("attempt")}
    if meta["token"] not in (None, h.token):  # the folder holds another run now
        return None
    st = states.current({**meta, "token": h.token}, rec.get("status"))
    if st is None or not states.ended(st):
        return None
    marker = (rec.get("files") or {}).get(rundir.CANCEL)
    owner = marker.get("token") if isinstance(marker, dict) else None
    cancel = marker is not None and (not owner or owner == h.token)
    v = states.from_end(st, done=bool(rec.get("done")), cancel=cancel)
    if v["state"] not in states.FINAL:
        return None
    out: dict[str, Any] = {"state": v["state"], "reason": v.get("reason"),
                           "exit_code": v.get("exit_code"), "attempt": st.get("attempt"),
                           "host": st.get("host"), "started_at": st.get("started_at"),
                           "ended_at": st.get("ended_at")}
    if v["state"] == states.CANCELLED and cancel:
        out["reason"] = rundir.cancel_reason(marker if isinstance(marker, dict) else {})
    if v["state"] != states.SUCCEEDED:
        out["stderr_tail"] = rec.get("tail")
    return RunStatus.from_probe(out)


class Watch:
    """One watcher process for the runs ``handles`` of one backend, started with ``ex``
    (anything with ``popen(command)`` and ``close()``: a local executor, an SSH transport),
    read by a thread that hands each final status (``final_status(handle, records)``, None
    for records that do not end the run) to ``sink(token, status)``. ``wrap`` turns the
    watcher's argv into the one to run (a backend's setup before it); ``note_file`` names
    a run's note file; ``ends``, ``reads`` and ``groups`` are :func:`argv`'s. :meth:`close` ends it (closing its stdin);
    so does the end of this process."""

    def __init__(self, ex: Any, handles: Sequence[RunHandle], python: str,
                 sink: Callable[[str, RunStatus], None],
                 final_status: Callable[[RunHandle, dict[str, Any]], RunStatus | None], *,
                 lifetime: float = LIFETIME, tick: float = TICK,
                 ends: Sequence[str] = FINAL_WORDS, reads: Sequence[str] = (),
                 groups: bool = False, wrap: Callable[[list[str]], list[str]] | None = None,
                 note_file: Callable[[RunHandle], str | None] | None = None):
        self.ex = ex
        import uuid  # here: a launch imports this module and never watches

        self.marker = f"chester-watch-{uuid.uuid4().hex[:12]}"
        self._handles = {h.token: h for h in handles}
        self._sink = sink
        self._final = final_status
        args = argv(python, lifetime, tick, self.marker, ends=ends, reads=reads,
                    groups=groups)
        cmd = "exec " + shlex.join(wrap(args) if wrap is not None else args)
        self.proc: subprocess.Popen[bytes] = ex.popen(cmd)
        assert self.proc.stdin is not None
        runs = [[h.remote_dir, h.token, note_file(h) if note_file is not None else None]
                for h in handles]
        self.proc.stdin.write((json.dumps(runs) + "\n").encode())
        self.proc.stdin.flush()
        self._thread = threading.Thread(target=self._read, name="chester-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                token, rec = json.loads(line)
            except ValueError:
                continue  # a word of a setup line, not the watcher's
            h = self._handles.get(token)
            st = self._final(h, rec) if h is not None and isinstance(rec, dict) else None
            if st is not None:
                self._sink(token, st)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def failed(self) -> bool:
        """The watcher's process ended with an error (it could not run where the runs are:
        no such Python there, say); known once it has ended."""
        return self.proc.returncode not in (None, 0)

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)
        self.ex.close()


__all__ = ["FINAL_WORDS", "HOSTED_ENDS", "HOSTED_READS", "LIFETIME", "READ_HELPERS", "TICK",
           "WATCHER", "Watch", "argv", "command", "hosted_final_status"]
