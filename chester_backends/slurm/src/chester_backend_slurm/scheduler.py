"""Asking SLURM about a sweep: one query per poll, merged with the workers' own records.

The status script runs on the machine with the SLURM client (login host or here): one
``sacct`` for every job of the sweep (``squeue -t all`` when accounting is disabled), then a
small Python reader that prints each run folder's records; both outputs come back in one
round trip.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from chester.plugin.records import RunStatus, State
from chester.remote import watcher
from chester.target import states
from chester_backend_slurm.cluster import (  # noqa: F401  (part of this module's names)
    _CLUSTER_PREFIX,
    EXIT_RECHUNK,
    cluster_check_lines,
    cluster_info_of,
    parse_cluster_info,
)

q = shlex.quote
SACCT_FIELDS = "JobID,State,ExitCode,Reason,Start,End,NodeList"
SQUEUE_FORMAT = "%i|%T|%r|%S|%e|%N"
MARK_SACCT = "@@CHESTER-SACCT"
MARK_SQUEUE = "@@CHESTER-SQUEUE"
MARK_RECORDS = "@@CHESTER-RECORDS"

MARK_ROWS = "@@CHESTER-ROWS"

#: ``12_[3-5,7%2]`` → ``12_3 12_4 12_5 12_7``; other ids as they are. Plain Python, run here
#: (:func:`_expand_ids`) and on the login host inside :data:`RECORD_READER`, one source.
_EXPAND_IDS = r"""
import re
def expand_ids(job_id):
    m = re.match(r"(\d+)_\[([^\]]+)\]$", job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out += ["%s_%d" % (base, i) for i in range(int(a), int(b) + 1)]
        elif part:
            out.append("%s_%s" % (base, part))
    return out
"""


def _compiled(source: str, name: str) -> Any:
    """The function ``name`` that ``source`` defines."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace[name]


_expand_ids: Callable[[str], list[str]] = _compiled(_EXPAND_IDS, "expand_ids")

#: The ``rd`` and ``tail`` helpers of the scripts sent to the login host: the watcher's
#: (:data:`chester.remote.watcher.READ_HELPERS`), one source for both.
READ_HELPERS = watcher.READ_HELPERS

#: Reads run folders' records and prints one JSON object by folder. Its stdin: one JSON line
#: per run (``[folder, scheduler output file, task id, key]``), then a ``@@CHESTER-ROWS``
#: line and the scheduler's answer of this poll (sacct/squeue lines). A run's key is its
#: scheduler line of the last poll (without the id; for a pending line, plus the identity of
#: its ``status.json``: one ``stat``, as sacct may say PENDING while the worker runs): when
#: it is the same now, the folder is not read (``{"same": true}``); a run without a key, or
#: without a line now, is read. Every answer carries the run's key of this poll. Plain
#: Python: the login host needs no chester for it, and it never looks at process ids (the
#: run lives on a compute node).
RECORD_READER = "import json, os, sys\n" + _EXPAND_IDS + READ_HELPERS + r"""runs, _, sched = ("\n" + sys.stdin.read()).partition("\n@@CHESTER-ROWS\n")
rows = {}
for line in sched.splitlines():
    parts = line.split("|")
    if len(parts) >= 3 and parts[0][:1].isdigit():
        for jid in expand_ids(parts[0]):
            rows[jid] = "|".join(parts[1:])
out = {}
for line in runs.splitlines():
    if not line:
        continue
    entry = json.loads(line) + [None, None]
    d, sched_out, rid, prev = entry[:4]
    key = rows.get(rid) if rid else None
    if key is None and rid and "_" in rid and rid.split("_", 1)[0] in rows:
        # the array's own line (sacct lists a task under its job id at first): not the
        # task's, so the task's own line, even with the same words, is a change
        key = "^" + rows[rid.split("_", 1)[0]]
    if key is not None and key.lstrip("^").startswith("PENDING"):
        # sacct lags: a pending line can stay while the worker runs and even ends (a
        # requeued job longest), so its record's identity (one stat) is part of the key
        try:
            s = os.stat(os.path.join(d, ".chester", "status.json"))
            key += "|@%d:%d:%d" % (s.st_ino, s.st_size, s.st_mtime_ns)
        except OSError:
            key += "|@-"
    if key is not None and key == prev:
        out[d] = {"same": True, "key": key}
        continue
    meta = rd(os.path.join(d, ".chester", "run.json"))
    st = rd(os.path.join(d, ".chester", "status.json"))
    ok = st is not None and st.get("state") == "succeeded"
    free = None
    if not ok:
        try:
            v = os.statvfs(d)
            free = v.f_bavail * v.f_frsize
        except OSError:
            pass
    out[d] = {"token": (meta or {}).get("token"), "attempt": (meta or {}).get("attempt"),
              "exists": meta is not None, "status": st,
              "done": os.path.exists(os.path.join(d, ".done")),
              "tail": None if ok else tail(os.path.join(d, "stderr.log")),
              "sched_tail": None if ok or not sched_out else tail(sched_out, 8, 4096),
              "free": free, "dir": d, "key": key,
              "cancel": (rd(os.path.join(d, ".chester", "cancel")) or {}).get("token")}
print(json.dumps(out))
"""

def status_script(job_ids: Sequence[str], start_date: str, run_dirs: Sequence[str],
                  python: str, *, accounting: bool = True, with_records: bool = True,
                  sched_outputs: Sequence[str | None] | None = None,
                  task_ids: Sequence[str | None] | None = None,
                  keys: Sequence[str | None] | None = None) -> str:
    """One scheduler query for every job, then the records of the run folders whose
    scheduler line changed.

    ``sched_outputs`` are the jobs' own output files (``#SBATCH --output``), one per run
    folder, where slurmstepd says why it killed a job. ``task_ids`` (``12_3``) and ``keys``
    (each run's scheduler line of the last poll, or ``None`` to read its records whatever
    the line says) decide which folders are read (:data:`RECORD_READER`); without them
    every folder is read.

    ``sacct`` when the cluster keeps accounting (falling back to ``squeue`` if it answers
    that accounting is disabled); ``squeue -t all`` alone when we know it does not.
    """
    ids = ",".join(job_ids)
    lines = ["sched="]
    if job_ids and not accounting:
        lines += [f"sched=$(echo {MARK_SQUEUE}; squeue -h -r -t all -j {q(ids)} "
                  f"-o {q(SQUEUE_FORMAT)} 2>&1 || true)"]
    elif job_ids:
        lines += [
            f"if out=$(sacct -X -P -n -j {q(ids)} --starttime={q(start_date)} "
            f"-o {SACCT_FIELDS} 2>&1); then",
            f"  sched=$(echo {MARK_SACCT}; printf '%s\\n' \"$out\")",
            "else",
            f"  sched=$(echo {MARK_SQUEUE}; squeue -h -r -t all -j {q(ids)} "
            f"-o {q(SQUEUE_FORMAT)} 2>&1 || true)",
            "fi",
        ]
    lines.append('[ -z "$sched" ] || printf \'%s\\n\' "$sched"')
    if with_records:
        n = len(run_dirs)
        outs = list(sched_outputs) if sched_outputs is not None else [None] * n
        tids = list(task_ids) if task_ids is not None else [None] * n
        prev = list(keys) if keys is not None else [None] * n
        lines.append(f"echo {MARK_RECORDS}")
        lines.append("{ cat <<'CHESTER_RUN_DIRS'")
        lines.extend(json.dumps([d, o, t, k]) for d, o, t, k in
                     zip(run_dirs, outs, tids, prev, strict=True))
        lines.append("CHESTER_RUN_DIRS")
        lines.append(f"echo {MARK_ROWS}; printf '%s\\n' \"$sched\"; }} | "
                     f"{q(python)} -c {q(RECORD_READER)}")
    return "\n".join(lines) + "\n"


@attrs.frozen
class JobRow:
    """One line of sacct/squeue for one task."""

    state: str
    exit_code: str | None = None
    reason: str | None = None
    node: str | None = None
    started: bool = True
    by: str | None = None  # "CANCELLED by <uid>": who cancelled


def parse_rows(text: str) -> dict[str, JobRow]:
    rows: dict[str, JobRow] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0] or not re.match(r"\d", parts[0]):
            continue
        words = parts[1].split() if parts[1] else ["UNKNOWN"]
        state = words[0]
        by = words[2] if len(words) == 3 and words[1] == "by" else None
        if len(parts) >= 7:  # sacct: JobID,State,ExitCode,Reason,Start,End,NodeList
            row = JobRow(state=state, exit_code=parts[2], reason=parts[3] or None,
                         node=parts[6] or None,
                         started=parts[4] not in ("", "None", "Unknown"), by=by)
        else:  # squeue: %i|%T|%r|%S|%e|%N
            row = JobRow(state=state, reason=parts[2] or None,
                         node=parts[5] if len(parts) > 5 and parts[5] else None)
        for jid in _expand_ids(parts[0]):
            rows[jid] = row
    return rows


def split_output(text: str) -> tuple[str | None, dict[str, JobRow], dict[str, Any]]:
    """(source: sacct|squeue|None, rows by task id, records by run folder)."""
    source = None
    sched: list[str] = []
    rec_text = ""
    section = None
    for line in text.splitlines():
        if line == MARK_SACCT:
            source, section = "sacct", "sched"
        elif line == MARK_SQUEUE:
            source, section = "squeue", "sched"
        elif line == MARK_RECORDS:
            section = "records"
        elif section == "sched":
            sched.append(line)
        elif section == "records":
            rec_text += line
    records = json.loads(rec_text) if rec_text.strip() else {}
    return source, parse_rows("\n".join(sched)), records


_TERMINAL_WORDS = {
    "FAILED": (State.FAILED, "failed"),
    "TIMEOUT": (State.TIMEOUT, "time limit reached"),
    "OUT_OF_MEMORY": (State.OOM, "out of memory"),
    "CANCELLED": (State.CANCELLED, "cancelled"),
    "NODE_FAIL": (State.FAILED, "node failure (NODE_FAIL)"),
    "BOOT_FAIL": (State.FAILED, "the node failed to boot (BOOT_FAIL)"),
    "DEADLINE": (State.TIMEOUT, "deadline reached (DEADLINE)"),
    "PREEMPTED": (State.PREEMPTED, "preempted"),
    "REVOKED": (State.CANCELLED, "revoked by a sibling cluster"),
    "SPECIAL_EXIT": (State.FAILED, "special exit"),
}
_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING",
            "STAGE_OUT", "RESIZING"}
_REQUEUED = {"REQUEUED", "REQUEUE_FED"}
#: states that stay "running" or "queued" in chester's words, with their own reason
_OWN_WORDS = {
    "SUSPENDED": "suspended by the scheduler (SUSPENDED): it holds its node and resumes later",
    "STOPPED": "stopped by a signal (STOPPED): it holds its node until continued",
    "REQUEUE_HOLD": "requeued and held (REQUEUE_HOLD): it starts again after "
                    "`scontrol release <job id>`",
}
#: pending reasons that never resolve by waiting, and what to change
NEVER_STARTS = {
    "PartitionTimeLimit": "time is above the partition's limit: lower `time` or change "
                          "`partition`",
    "QOSMaxWallDurationPerJobLimit": "time is above the QOS's limit: lower `time` or change "
                                     "`qos`",
    "AssocMaxWallDurationPerJobLimit": "time is above your association's limit: lower `time`",
    "InvalidAccount": "the account is not valid for you: check `account`",
    "InvalidQOS": "the QOS is not valid for you: check `qos`",
    "AssocGrpBillingMinutes": "the account's billing minutes are used up: use another "
                              "`account` or ask for more",
    "AssocGrpCPUMinutesLimit": "the account's CPU minutes are used up: use another `account`",
    "ReqNodeNotAvail": "a requested node is down, drained or reserved: change `exclude`/"
                       "`constraint` or wait for the admins",
    "PartitionConfig": "the request does not fit the partition (cores, memory or GPUs "
                       "per node): lower the resources or change `partition`",
}


def pending_words(reason: str | None) -> str | None:
    """A pending reason as shown: one that will never resolve says what to change."""
    if not reason:
        return reason
    key = reason.split(",")[0].split("(")[0].strip()
    fix = NEVER_STARTS.get(key)
    return f"{reason} (will not start: {fix})" if fix else reason


def _returncode(text: str | None) -> int | None:
    """sacct's ``code:signal`` as a process's exit status (negative: the signal)."""
    if not text:
        return None
    try:
        code, sig = (int(x) for x in text.split(":"))
    except ValueError:
        return None
    return -sig if sig else code


def _exit_code(text: str | None) -> int | None:
    return states.exit_code(_returncode(text))


def _status(v: Mapping[str, Any], common: Mapping[str, Any], tail: str | None,
            exit_code: int | None = None) -> RunStatus:
    """A RunStatus from a state of :mod:`chester.target.states`."""
    code = v.get("exit_code")
    return RunStatus(state=State(v["state"]), reason=v.get("reason"),
                     stderr_tail=None if v["state"] == states.SUCCEEDED else tail,
                     exit_code=exit_code if code is None else code, **common)


def merge(row: JobRow | None, rec: Mapping[str, Any] | None, *, token: str, remote_id: str,
          host: str | None, kind: str, source: str | None,
          depends: bool = False) -> RunStatus:
    """A run's state from the scheduler's view and the worker's records.

    The records decide by the one rule (:mod:`chester.target.states`): ``succeeded`` needs
    the worker's success record of this run and attempt, and ``.done``, whatever SLURM says;
    an end the worker recorded decides, except one a signal stopped (``terminated``), which
    SLURM's word explains (cancelled, time limit, preempted, requeued). SLURM's own
    knowledge (pending reasons, job states, node failures) decides where the records do not.
    One step per kind of SLURM state reads the two together (:class:`_Records` holds what
    the records say).
    """
    seen = _Records.of(rec, token=token, remote_id=remote_id, host=host)
    if row is None:
        return _not_in_scheduler(seen, source)
    s = row.state.rstrip("+")
    if s == "PENDING":
        return _pending(seen, row)
    if s == "REQUEUE_HOLD":
        return RunStatus(state=State.QUEUED, pending_reason=_OWN_WORDS[s], **seen.common)
    if s in _REQUEUED:
        attempt = int((seen.st or {}).get("attempt") or 1) + 1
        return RunStatus(state=State.REQUEUED, reason=f"requeued (attempt {attempt})",
                         **{**seen.common, "attempt": attempt})
    if s in _RUNNING:
        return _running(seen, s, kind)
    if s == "COMPLETED":
        return _completed(seen, row, kind)
    memory = states.memory_kill(seen.sched_tail)
    if s in ("FAILED", "CANCELLED", "OUT_OF_MEMORY") and not seen.worker_ok and memory:
        return _status(states.out_of_memory(memory, _exit_code(row.exit_code)), seen.common,
                       seen.tail)
    if s in _TERMINAL_WORDS:
        return _ended(seen, row, s, kind, depends)
    return RunStatus(state=State.QUEUED, pending_reason=f"SLURM state {s}", **seen.common)


@attrs.frozen(kw_only=True)
class _Records:
    """What a run's records say, read once for :func:`merge`'s steps: its status record of
    this run (``st``: None when there is none, or it is another run's), whether ``.done`` is
    there, what the login host read of the run folder and the fields every answer carries."""

    st: Mapping[str, Any] | None
    done: bool
    tail: str | None
    sched_tail: str
    #: what the login host read of the run folder (the end of stderr, its free bytes)
    found: dict[str, Any]
    common: dict[str, Any]
    worker_ok: bool
    worker_ended: bool
    #: the run folder holds the cancel marker naming this run (a pending task cancelled alone)
    cancel_marked: bool = False

    @classmethod
    def of(cls, rec: Mapping[str, Any] | None, *, token: str, remote_id: str,
           host: str | None) -> _Records:
        """Read the login host's record of a run by the one rule."""
        rec = rec or {}
        st = states.current({"token": token, "attempt": rec.get("attempt")}, rec.get("status")) \
            if rec.get("token") == token else None
        done = bool(rec.get("done"))
        tail = rec.get("tail")
        return cls(
            st=st, done=done, tail=tail, sched_tail=rec.get("sched_tail") or "",
            found={"tail": tail, "free_bytes": rec.get("free"), "run_dir": rec.get("dir") or ""},
            cancel_marked=rec.get("cancel") == token,
            common={"remote_id": remote_id, "host": (st or {}).get("host") or host,
                    "started_at": (st or {}).get("started_at"),
                    "ended_at": (st or {}).get("ended_at"), "attempt": (st or {}).get("attempt")},
            worker_ok=states.succeeded(st, done=done),
            worker_ended=st is not None and states.ended(st))

    def succeeded(self) -> RunStatus:
        """The worker's success, which decides whatever SLURM says."""
        return RunStatus(state=State.SUCCEEDED, exit_code=0, **self.common)

    def recorded(self, exit_code: int | None = None) -> RunStatus:
        """The end the worker recorded."""
        return _status(states.from_end(self.st or {}, done=self.done), self.common, self.tail,
                       exit_code)


def _not_in_scheduler(seen: _Records, source: str | None) -> RunStatus:
    """A job the scheduler does not know (yet: sacct lags; or no more: squeue forgets): the
    records decide; a signal's stop waits for sacct's word (it keeps every job), a run
    squeue forgot without a record of its end is lost (or failed on a full disk), and a run
    with no record at all is still queued."""
    if seen.worker_ok:
        return seen.succeeded()
    if seen.worker_ended and source != "squeue" and (seen.st or {}).get("state") == \
            states.TERMINATED:
        # stopped by a signal: only the scheduler can say why (cancel, time limit,
        # requeue, preemption), and sacct keeps every job, so wait for its word
        return RunStatus(state=State.RUNNING, reason="stopped by a signal; waiting for "
                         "the scheduler to say why", **seen.common)
    if seen.worker_ended:
        return seen.recorded()
    if seen.st is None and seen.cancel_marked:
        # a pending task cancelled alone leaves no sacct record: the marker chester_cancel
        # wrote for it says so (and its worker, were it to start, would not run it)
        return RunStatus(state=State.CANCELLED, reason=states.CANCELLED_BEFORE,
                         **seen.common)
    if source == "squeue" and seen.st is not None:
        full = states.disk_full(seen.tail, seen.found["free_bytes"], seen.found["run_dir"])
        if full:
            return _status({"state": states.FAILED, "reason": full}, seen.common, seen.tail)
        return RunStatus(state=State.LOST, reason="the job left the queue without a "
                         "record of its end", stderr_tail=seen.tail, **seen.common)
    return RunStatus(state=State.QUEUED, pending_reason="submitted", **seen.common)


def _pending(seen: _Records, row: JobRow) -> RunStatus:
    """sacct says PENDING. It lags the controller: a short run can start, and even end, while
    sacct still says PENDING. A success stays a success (the worker never runs a succeeded
    run again); a running worker is running; a run that ran before is requeued (its next
    attempt); else it is queued, with its pending reason in words."""
    st = seen.st
    if seen.worker_ok:
        return seen.succeeded()
    if st is not None and not seen.worker_ended and st.get("state") == "running":
        return RunStatus(state=State.RUNNING, **seen.common)
    if st is not None:  # it ran before: requeued
        attempt = int(st.get("attempt") or 1) + (1 if seen.worker_ended or st.get("state") ==
                                                 "running" else 0)
        return RunStatus(state=State.REQUEUED, pending_reason=row.reason,
                         reason=f"requeued (attempt {attempt})",
                         **{**seen.common, "attempt": attempt, "ended_at": None})
    return RunStatus(state=State.QUEUED, pending_reason=pending_words(row.reason),
                     **seen.common)


def _running(seen: _Records, s: str, kind: str) -> RunStatus:
    """A job SLURM runs: running (with SLURM's word for a suspended or stopped job). A step
    of a serial job is decided by its own records: ended as it recorded, or queued behind
    the step before it while it has none; a COMPLETING job's success is a success."""
    if kind == "serial":
        if seen.worker_ok:
            return seen.succeeded()
        if seen.worker_ended:
            return seen.recorded()
        if seen.st is None:
            return RunStatus(state=State.QUEUED, pending_reason="waiting for the step "
                             "before it", **seen.common)
    if s == "COMPLETING" and seen.worker_ok:
        return seen.succeeded()
    return RunStatus(state=State.RUNNING, reason=_OWN_WORDS.get(s), **seen.common)


def _completed(seen: _Records, row: JobRow, kind: str) -> RunStatus:
    """SLURM says COMPLETED: the worker's records decide. Without an end recorded, a step
    of a serial job never ran (an earlier step failed), a worker that started died, and one
    that never started says why (its setup's ``chester:`` line, a full disk) or failed with
    no success record."""
    if seen.worker_ok:
        return seen.succeeded()
    if seen.worker_ended:
        return seen.recorded()
    if kind == "serial" and seen.st is None:
        return RunStatus(state=State.FAILED, reason="not run: an earlier step failed",
                         **seen.common)
    if seen.st is not None:  # its worker started and its job ended: it died
        return _status(states.died(returncode=_returncode(row.exit_code), **seen.found),
                       seen.common, seen.tail)
    said = states.not_started(**seen.found)
    if said is not None:
        return _status(said, seen.common, seen.tail, _exit_code(row.exit_code))
    return RunStatus(state=State.FAILED, exit_code=_exit_code(row.exit_code),
                     reason="SLURM says COMPLETED but the worker wrote no success record",
                     stderr_tail=seen.tail, **seen.common)


def _ended(seen: _Records, row: JobRow, s: str, kind: str, depends: bool) -> RunStatus:
    """SLURM ended the job otherwise (failed, cancelled, timeout, node fail, ...): the run's
    own success decides, whatever became of its job after it; then an end the worker
    recorded, except a signal's stop, which SLURM's word explains; a failed job whose
    worker died or never started says why; else SLURM's word, with its reason."""
    if seen.worker_ok:
        return seen.succeeded()
    state, word = _TERMINAL_WORDS[s]
    if s == "CANCELLED":
        word = _cancel_words(seen, row, word, depends)
    if s == "FAILED" and kind == "serial" and seen.st is None:
        return RunStatus(state=State.FAILED, reason="not run: an earlier step failed",
                         **seen.common)
    if seen.worker_ended and (s == "FAILED" or (seen.st or {}).get("state") !=
                              states.TERMINATED):
        # the worker recorded how it ended; a signal's stop SLURM explains (below)
        return seen.recorded(_exit_code(row.exit_code))
    reason = word
    if s == "FAILED":
        v = states.not_started(**seen.found) if seen.st is None else \
            states.died(returncode=_returncode(row.exit_code), **seen.found)
        if v is not None:
            return _status(v, seen.common, seen.tail, _exit_code(row.exit_code))
        reason = f"job failed with exit code {row.exit_code}"
        if row.reason and row.reason != "None":
            reason += f" ({row.reason})"
    elif s == "TIMEOUT" and row.reason and row.reason != "None":
        reason = f"{word} ({row.reason})"
    return RunStatus(state=state, reason=reason, stderr_tail=seen.tail,
                     exit_code=_exit_code(row.exit_code), **seen.common)


def _cancel_words(seen: _Records, row: JobRow, word: str, depends: bool) -> str:
    """Why a job was cancelled, in words: a dependency that cannot be met, SLURM's reason,
    and who cancelled it (root: an administrator)."""
    # a dependent job whose worker never started, cancelled by no user: SLURM's own
    # cancel of a dependency that cannot be met (its accounting row may carry a start
    # time, the cancel's, and no reason, depending on when slurmdbd is read)
    never_ran = depends and seen.st is None and (not row.started or row.by is None)
    if never_ran or (row.reason or "").startswith("Dependency"):
        word = "cancelled: a run it depends on did not succeed (DependencyNeverSatisfied)"
    elif row.reason and row.reason != "None":
        word = f"cancelled ({row.reason})"
    if row.by and not word.startswith("cancelled:"):
        word += f" by uid {row.by}" + (" (root: an administrator)" if row.by == "0" else "")
    return word


@attrs.define
class Pacer:
    """When to ask the scheduler again: grows ×1.5 while nothing changes, halves (not back to
    the floor) on a change, doubles on errors, and stays below a third of MinJobAge (squeue
    forgets finished jobs). A busy sweep changes at every poll; resetting to the floor
    would poll a shared controller at its fastest for the whole sweep."""

    minimum: float = 30.0
    maximum: float = 300.0
    min_job_age: float | None = None
    interval: float = attrs.field(default=0.0)
    last_at: float = 0.0
    last_view: Any = None

    def __attrs_post_init__(self) -> None:
        self.interval = self.minimum

    @property
    def cap(self) -> float:
        cap = self.maximum
        if self.min_job_age:
            cap = min(cap, max(self.minimum, self.min_job_age / 3))
        return cap

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last_at >= self.interval

    def observed(self, view: Any, now: float | None = None) -> None:
        self.last_at = time.monotonic() if now is None else now
        if view == self.last_view:
            self.interval = min(self.interval * 1.5, self.cap)
        else:
            self.interval = max(self.minimum, min(self.interval / 2, self.cap))
        self.last_view = view

    def failed(self, now: float | None = None) -> None:
        self.last_at = time.monotonic() if now is None else now
        self.interval = min(max(self.interval, self.minimum) * 2, self.cap)

    def reset(self) -> None:
        self.interval = self.minimum
        self.last_at = 0.0


def view_of(statuses: Mapping[str, RunStatus]) -> tuple:
    return tuple(sorted((k, v.state.value, v.pending_reason or "") for k, v in statuses.items()))


def job_ids_of(remote_ids: Iterable[str]) -> list[str]:
    """The distinct job ids to ask about (``12_3`` → ``12``)."""
    out: list[str] = []
    for rid in remote_ids:
        jid = rid.split("_", 1)[0]
        if jid not in out:
            out.append(jid)
    return out
