"""The one rule from a run's records to its state (docs/architecture.md, "States").

Every reader of run records calls these functions: the target tool (local, ssh), the SLURM
backend's reader, the autobot scheduler, the EC2 agent and the EC2 plugin. They are pure:
they take what the reader read (the records as dicts, ``.done`` and the cancel marker as
booleans, the end of ``stderr.log``, the free bytes of the run folder's file system, the
worker process's exit status) and return the state as a dict (``state``, ``reason``,
``exit_code``; plus ``signal`` when a signal ended it, ``stopped`` when the worker recorded
that a signal stopped it). No file is read here, so the launcher and the target call the
same functions with what each of them read.

Standard library only: this module travels in the runtime zip, and the EC2 agent may
import it with an older Python than chester's (3.8 and later).
"""

from __future__ import annotations

import re
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:  # nothing of typing is imported on the target
    from collections.abc import Mapping
    from typing import Any

    Record = Mapping[str, Any]
    Verdict = dict[str, Any]

# The state words (the values of chester.plugin.records.State; this module imports no attrs).
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
OOM = "oom"
PREEMPTED = "preempted"
REQUEUED = "requeued"
LOST = "lost"

#: what the worker records when a signal stopped it: failed, unless a scheduler says why
TERMINATED = "terminated"
#: end words that name their own cause: a cancel marker does not turn them into cancelled
OWN_CAUSE = (TIMEOUT, OOM, LOST, PREEMPTED)
#: end words a record may carry and that are states as they are
END_WORDS = (FAILED, CANCELLED) + OWN_CAUSE
#: records that end a run for good: nothing starts it again
FINAL = (SUCCEEDED, FAILED, CANCELLED, TIMEOUT, OOM, LOST)

#: Below this many free bytes, a run that died without a record is put down to a full disk.
DISK_FULL_BYTES = 1 << 20
NO_SPACE = ("No space left on device", "Disk quota exceeded")
#: What a kernel or slurmstepd says when it kills a job for its memory: the cgroup OOM killer
#: ("Detected 1 oom_kill event") or the accounting poller under
#: ``JobAcctGatherParams=OverMemoryKill`` ("Exceeded job memory limit").
MEMORY_KILL = re.compile(r"oom[-_]kill event|exceeded (job |step )?memory limit", re.I)
#: the prefix of the line a job's setup prints when it fails (a module that did not load, a
#: missing environment, a failing prepare command): the rest of the line is the reason
SETUP_PREFIX = "chester: "

NO_DONE = "the worker recorded success but .done is missing"
CANCELLED_REASON = "cancelled"
CANCELLED_BEFORE = "cancelled before it started"
RUNNER_STOPPED = "the queue runner stopped before starting this run"


def _int(value: Any, default: int = 1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def current(meta: Record | None, record: Record | None) -> Record | None:
    """``record`` (the worker's ``status.json``, or the runner's ``exit.json``) when it is
    of this run: its token is the run's (``meta``: ``run.json``) and its attempt the run's
    current one or later (a requeued SLURM job counts its attempts in the record). None
    otherwise: a record of another run (a folder reused) or of an earlier attempt is as
    good as none."""
    if not record:
        return None
    meta = meta or {}
    token = meta.get("token")
    if token and record.get("token") != token:
        return None
    if _int(record.get("attempt")) < _int(meta.get("attempt")):
        return None
    return record


def ended(record: Record | None) -> bool:
    """True when the worker's record says the run ended."""
    return record is not None and record.get("ended_at") is not None


def succeeded(record: Record | None, *, done: bool) -> bool:
    """True when the run succeeded: an end of this run recorded as ``succeeded``, and
    ``.done``. Neither alone is a success."""
    return ended(record) and record is not None and record.get("state") == SUCCEEDED \
        and bool(done)


def from_end(record: Record, *, done: bool, cancel: bool = False) -> Verdict:
    """The state an end record (of this run: :func:`current`) gives.

    ``succeeded`` needs ``.done`` too; a cancel marker turns any other end into
    ``cancelled`` except one that names its own cause (timeout, oom, lost, preempted); an
    end the worker recorded as ``terminated`` (a signal stopped it) is ``failed`` with
    ``stopped: True``, which a scheduler that knows why (a cancel, the time limit, a
    preemption, a requeue) may override."""
    word = record.get("state") or FAILED
    code = record.get("exit_code")
    if word == SUCCEEDED and done:
        return {"state": SUCCEEDED, "reason": None, "exit_code": 0 if code is None else code}
    if cancel and word not in OWN_CAUSE:
        return {"state": CANCELLED, "reason": CANCELLED_REASON, "exit_code": code}
    if word == SUCCEEDED:
        return {"state": FAILED, "reason": NO_DONE, "exit_code": code}
    out = {"state": word if word in END_WORDS else FAILED, "reason": record.get("reason"),
           "exit_code": code}
    if word == TERMINATED:
        out["stopped"] = True
    return out


def disk_full(tail: str | None, free_bytes: int | None, run_dir: str = "") -> str | None:
    """"no space left on the file system of DIR ..." when the run's stderr says so or its
    file system has less than :data:`DISK_FULL_BYTES` free, else None."""
    said = next((line.strip() for line in reversed((tail or "").splitlines())
                 if any(m in line for m in NO_SPACE)), None)
    if said is None and (free_bytes is None or free_bytes >= DISK_FULL_BYTES):
        return None
    where = "no space left on the file system of %s" % (run_dir or "the run folder")
    if free_bytes is not None:
        where += " (%d KiB free)" % (free_bytes // 1024)
    return "%s: %s" % (where, said) if said else where


def memory_kill(text: str | None) -> str | None:
    """The last line of ``text`` that says a job was killed for its memory, else None."""
    return next((line.strip() for line in reversed((text or "").splitlines())
                 if MEMORY_KILL.search(line)), None)


def out_of_memory(line: str, exit_code: int | None = None) -> Verdict:
    """The state of a run killed for its memory (``line``: what said so)."""
    return {"state": OOM, "reason": "out of memory: %s" % line, "exit_code": exit_code}


def setup_failure(tail: str | None) -> str | None:
    """What the last ``chester: ...`` line of stderr says: a job's setup that failed before
    the worker started (a module that did not load, a missing environment, a failing
    prepare command). None when there is none."""
    for line in reversed((tail or "").splitlines()):
        if line.startswith(SETUP_PREFIX):
            return line[len(SETUP_PREFIX):].strip()
    return None


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number that names no signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal %d" % number


def exit_code(returncode: int | None) -> int | None:
    """A process's exit status as a shell tells it: 128+N for a signal N (``returncode``
    -N), else the code itself."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


def _exit(returncode: int, before: str) -> Verdict:
    """Failed with a process's exit status (negative: the signal that killed it)."""
    if returncode < 0:
        n = -returncode
        return {"state": FAILED, "exit_code": 128 + n, "signal": n,
                "reason": "the run's process was killed by %s (%d) %s"
                          % (signal_name(n), n, before)}
    return {"state": FAILED, "exit_code": returncode,
            "reason": "the run's process exited with code %d %s" % (returncode, before)}


def died(*, returncode: int | None = None, tail: str | None = None,
         free_bytes: int | None = None, run_dir: str = "", host: str | None = None,
         exit_pending: bool = False) -> Verdict:
    """The state of a run whose worker recorded its start but not its end, and whose
    process is gone: a full file system, else a memory kill its stderr tells of, else its
    exit status (``returncode``, negative for a signal, as whoever started the worker saw
    it), else that it died without a word. ``exit_pending``: whoever started the worker is
    alive and about to record its exit status (the run reads ``running`` until it did,
    unless the disk is full: then it never will)."""
    full = disk_full(tail, free_bytes, run_dir)
    if full:
        return {"state": FAILED, "reason": full, "exit_code": returncode}
    if exit_pending and returncode is None:
        return {"state": RUNNING, "reason": None, "exit_code": None}
    line = memory_kill(tail)
    if line:
        return out_of_memory(line, exit_code(returncode))
    if returncode is not None:
        if returncode < 0:
            return _exit(returncode, "before it recorded an end")
        return _exit(returncode, "without recording an end (os._exit in the run?)")
    on = " on %s" % host if host else ""
    return {"state": FAILED, "exit_code": None,
            "reason": "the run's process died%s without recording an exit (killed?)" % on}


def not_started(*, returncode: int | None = None, tail: str | None = None,
                free_bytes: int | None = None, run_dir: str = "") -> Verdict | None:
    """The state of a run whose worker never recorded its start, once the process that was
    to run it ended: a full file system, else the setup's ``chester:`` line, else (when
    ``returncode`` is known) its exit status. None when none of that is known (the
    reader's own words then say why)."""
    full = disk_full(tail, free_bytes, run_dir)
    if full:
        return {"state": FAILED, "reason": full, "exit_code": returncode}
    said = setup_failure(tail)
    if said:
        return {"state": FAILED, "reason": said, "exit_code": returncode}
    if returncode is None:
        return None
    if returncode < 0:
        return _exit(returncode, "before it recorded a start")
    return {"state": FAILED, "exit_code": returncode,
            "reason": "the worker exited with code %d before it recorded a start (see the "
                      "run's stderr)" % returncode}


def missing(where: str = "the target") -> Verdict:
    """The state of a run whose folder (its ``run.json``) is not there."""
    return {"state": LOST, "reason": "run folder missing on %s" % where, "exit_code": None}


def cancelled(*, started: bool, exit_code: int | None = None) -> Verdict:
    """The state of a cancelled run that did not end otherwise."""
    return {"state": CANCELLED, "reason": CANCELLED_REASON if started else CANCELLED_BEFORE,
            "exit_code": exit_code}


def runner_stopped(*, tail: str | None = None, free_bytes: int | None = None,
                   run_dir: str = "") -> Verdict:
    """The state of a run whose queue runner is gone before it started the worker."""
    full = disk_full(tail, free_bytes, run_dir)
    return {"state": LOST, "exit_code": None,
            "reason": RUNNER_STOPPED + (": %s" % full if full else "")}


def returncode_of(meta: Record | None, exit_record: Record | None) -> int | None:
    """The worker process's exit status from an exit record (``exit.json``) of this run,
    else None."""
    rec = current(meta, exit_record)
    code = None if rec is None else rec.get("returncode")
    if isinstance(code, bool) or not isinstance(code, int):
        return None  # none, or not a number: no exit status known
    return code


def decide(meta: Record | None, status: Record | None, *, done: bool, cancel: bool,
           alive: bool, exit_record: Record | None = None, exit_pending: bool = False,
           tail: str | None = None, free_bytes: int | None = None,
           run_dir: str = "") -> Verdict | None:
    """The whole rule, for a reader that sees the worker's process (``alive``: the pid of
    the worker's record, with its start time, is running). ``meta`` is ``run.json``,
    ``status`` the worker's ``status.json``, ``exit_record`` the ``exit.json`` of whoever
    started the worker. None when the worker never started and nothing says it will not:
    the reader's queue then says whether it waits or is lost."""
    if not meta:
        return missing()
    st = current(meta, status)
    returncode = returncode_of(meta, exit_record)
    if st is None:
        if cancel:
            return cancelled(started=False)
        if returncode is None:
            return None
        return not_started(returncode=returncode, tail=tail, free_bytes=free_bytes,
                           run_dir=run_dir)
    if ended(st):
        return from_end(st, done=done, cancel=cancel)
    if alive:
        return {"state": RUNNING, "reason": None, "exit_code": None}
    if cancel:
        return cancelled(started=True, exit_code=st.get("exit_code"))
    return died(returncode=returncode, tail=tail, free_bytes=free_bytes, run_dir=run_dir,
                exit_pending=exit_pending)
