"""Seeing a run's end while a laptop waits, without asking the scheduler more often.

While :meth:`chester.Sweep.wait` waits, a small watcher runs where the run folders are (a
process here for a direct cluster, one command over the open SSH connection to the login
host otherwise). About once a second it ``stat``\\ s each unfinished run's status record
(plain ``stat``: inotify does not see writes made by other nodes of a shared file system)
and, when one changes to an end, prints the run's records as one JSON line. The worker's own
end record decides a succeeded or failed run (:func:`scheduler.merge` without a scheduler
line), so the wait applies it at once; ``sacct`` keeps its own polite interval for what only
the scheduler knows. The watcher lives only as long as the wait: it exits when its stdin
closes (the wait ended, Ctrl-C, the waiting process killed: its end of the pipe closes), when
every run it was given has ended, or after a hard lifetime.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chester.plugin.records import RunHandle, RunStatus
from chester_backend_slurm import scheduler

#: how long a watcher lives at most (seconds); the wait starts another when it ends early
LIFETIME = 3600.0
#: how often it looks at the records (seconds)
TICK = 1.0

#: The watcher. argv: lifetime, tick, a marker (so a test can find it). stdin: one JSON line,
#: ``[[folder, token, id file or null], ...]``, then nothing until the wait ends (EOF); a
#: record of another token (a folder reused) is no end of this run, and the folder is watched
#: on. The id file is the stage's ``job-<i>.id`` of a run a submit limit held back at launch:
#: whoever submitted its job later (a poll, the supervisor) wrote its job id there, and the
#: end line carries it as ``job``. stdout: one JSON line per run that ended, ``[key,
#: records]`` (records as :data:`scheduler.RECORD_READER` reads them). Plain Python: the
#: login host needs no chester for it; its ``rd`` and ``tail`` are
#: :data:`scheduler.READ_HELPERS`, as the record reader's are.
WATCHER = r"""
import json, os, select, sys, time
lifetime, tick = float(sys.argv[1]), float(sys.argv[2])""" + scheduler.READ_HELPERS + r"""def ident(p):
    try:
        s = os.stat(p)
    except OSError:
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns)
ENDS = ("succeeded", "failed", "cancelled", "timeout", "oom", "lost")  # final ones only
stdin = sys.stdin.buffer
line = stdin.readline()
if not line:
    sys.exit(0)
todo = {e[0]: [e[1], None, e[2] if len(e) > 2 else None] for e in json.loads(line)}
deadline = time.monotonic() + lifetime
while todo and time.monotonic() < deadline:
    for d in list(todo):
        k, last, idf = todo[d]
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
        meta = rd(os.path.join(d, ".chester", "run.json")) or {}
        ok = st.get("state") == "succeeded"
        rec = {"token": meta.get("token"), "attempt": meta.get("attempt"), "exists": True,
               "status": st, "done": now[1], "dir": d, "free": None, "sched_tail": None,
               "tail": None if ok else tail(os.path.join(d, "stderr.log"))}
        if idf:
            try:
                with open(idf, encoding="utf-8") as f:
                    rec["job"] = f.read().strip().split(";")[0] or None
            except OSError:
                rec["job"] = None
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


def command(python: str, lifetime: float, tick: float, marker: str) -> str:
    """The shell command that starts the watcher (``marker``: a word of its command line)."""
    return (f"exec {shlex.quote(python)} -c {shlex.quote(WATCHER)} {float(lifetime)!r} "
            f"{float(tick)!r} {shlex.quote(marker)}")


def id_file(h: RunHandle) -> str | None:
    """The stage's ``job-<i>.id`` of a run a submit limit held back at launch (no job id in
    its handle), where its job id is written once its job is submitted."""
    if h.remote_id or h.get("deferred") is None or not h.get("stage"):
        return None
    return f"{h.get('stage')}/job-{h.get('deferred')}.id"


def remote_id_of(h: RunHandle, rec: Mapping[str, Any]) -> str | None:
    """The run's job id: its handle's, or for a run submitted after launch, the one its
    stage's id file held when its end was seen (``<job>_<task>`` for an array task)."""
    if h.remote_id:
        return h.remote_id
    job = rec.get("job")
    if not job:
        return None
    return f"{job}_{h.get('task')}" if h.get("kind") == "array" else str(job)


def final_status(h: RunHandle, rec: dict[str, Any]) -> RunStatus | None:
    """A run's final status from its records alone, or None when they do not decide it
    (a stop by a signal waits for the scheduler's word; a supervised run's failure may be
    retried by its supervisor). A run submitted after launch whose job id is not known yet
    is left to the next poll, which records that id with its state."""
    rid = remote_id_of(h, rec)
    if rid is None:
        return None
    st = scheduler.merge(None, rec, token=h.token, remote_id=rid, host=h.host,
                         kind=h.get("kind") or "array", source="sacct")
    if not st.state.terminal:
        return None
    if h.get("supervisor") and st.state.value != "succeeded":
        return None
    return st


class Watch:
    """One watcher process for the runs ``handles`` of one backend, read by a thread that
    hands each final status to ``sink(token, status)``. :meth:`close` ends it (closing its
    stdin); so does the end of this process."""

    def __init__(self, ex: Any, handles: Sequence[RunHandle], python: str,
                 sink: Callable[[str, RunStatus], None], *, lifetime: float = LIFETIME,
                 tick: float = TICK):
        self.ex = ex
        self.marker = f"chester-watch-{uuid.uuid4().hex[:12]}"
        self._handles = {h.token: h for h in handles}
        self._sink = sink
        self.proc: subprocess.Popen[bytes] = ex.popen(command(python, lifetime, tick,
                                                              self.marker))
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps([[h.remote_dir, h.token, id_file(h)] for h in handles])
                               + "\n").encode())
        self.proc.stdin.flush()
        self._thread = threading.Thread(target=self._read, name="chester-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                token, rec = json.loads(line)
            except ValueError:
                continue
            h = self._handles.get(token)
            st = final_status(h, rec) if h is not None else None
            if st is not None:
                self._sink(token, st)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

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


__all__ = ["LIFETIME", "TICK", "WATCHER", "Watch", "command", "final_status", "id_file",
           "remote_id_of"]
