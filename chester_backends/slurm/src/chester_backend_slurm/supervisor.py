"""One supervision cycle of a SLURM sweep, run by the sweep's supervisor job on a compute node.

This file is copied into the sweep's stage folder as ``supervise.py`` and run there with the
node's ``python3``: it imports the standard library only (not chester, not this package).
The supervisor job (``supervise.sbatch``, rendered by :func:`chester_backend_slurm.render.
supervise_script`) runs one cycle, and when the sweep still needs it requeues itself with a
begin time ``supervise_interval`` seconds on: one job id for the whole sweep, one submit slot,
none once the sweep is done. A cycle:

1. stops at once when ``supervise.stop`` exists (``chester cancel`` wrote it);
2. runs ``submit-rest.sh``, which submits the jobs a submit limit held back as far as they fit
   now (under the stage's submit lease, so a polling laptop and the supervisor never both
   submit one job);
3. asks the scheduler once for every task of the sweep (``squeue -r -t all``, finished ones
   included while SLURM remembers them: ``MinJobAge``);
4. queues again (``scontrol requeue``) each run that ended on a node failure, a preemption or
   with its worker killed before it recorded its end, up to ``max_retries`` times (and runs
   that failed, with ``retry_failed``); SLURM counts the attempt (``SLURM_RESTART_COUNT``), so
   the run's record and the laptop's store read attempt 2, 3, ...;
5. appends what it did to ``supervise.jsonl`` (the journal the laptop reads) and exits 75
   (run again) while anything is held back, queued or running, 0 when the sweep is over.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

CONFIG = "supervise.json"
JOURNAL = "supervise.jsonl"
STOP = "supervise.stop"
REST = "submit-rest.sh"
AGAIN = 75  # the job requeues itself for the next cycle
STATUS = ".chester/status.json"
CANCEL = ".chester/cancel"
#: SLURM job states of a task still in the queue
LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
        "RESV_DEL_HOLD", "SPECIAL_EXIT"}
#: ends that are the node's or the scheduler's doing, never the run's
NODE_ENDS = {"NODE_FAIL": "node_fail", "PREEMPTED": "preempted", "BOOT_FAIL": "node_fail"}


def journal(stage: str, event: str, **fields: Any) -> None:
    """One line of the journal: ``{"t": epoch seconds, "event": ..., ...}``."""
    line = json.dumps({"t": round(time.time(), 3), "event": event, **fields}, sort_keys=True)
    fd = os.open(os.path.join(stage, JOURNAL), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_journal(stage: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(stage, JOURNAL), encoding="utf-8") as f:
            return [json.loads(ln) for ln in f if ln.strip().startswith("{")]
    except (OSError, ValueError):
        return []


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _job_ids(stage: str, jobs: list[dict[str, Any]]) -> dict[int, str]:
    out = {}
    for j in jobs:
        try:
            with open(os.path.join(stage, f"job-{j['index']}.id"), encoding="utf-8") as f:
                jid = f.read().strip()
        except OSError:
            continue
        if jid:
            out[int(j["index"])] = jid
    return out


def _submit_held_back(stage: str) -> tuple[dict[int, str], list[int], int]:
    """Run ``submit-rest.sh``: (ids of the jobs submitted, jobs still waiting, exit status)."""
    # the jobs it submits must not inherit this job's SLURM_* (SLURM_RESTART_COUNT would be
    # read as their attempt); SLURM_CONF names the cluster and stays
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    res = subprocess.run(["bash", os.path.join(stage, REST)], capture_output=True, text=True,
                         timeout=600, cwd=stage, env=env)
    ids: dict[int, str] = {}
    waiting: list[int] = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "JOB" and parts[2]:
            ids[int(parts[1])] = parts[2]
        elif len(parts) >= 3 and parts[0] == "WAIT":
            waiting.append(int(parts[1]))
    if res.returncode != 0:
        journal(stage, "error", what="submit-rest.sh", stderr=res.stderr.strip()[-500:])
    return ids, waiting, res.returncode


def _task_states(ids: list[str]) -> dict[str, str]:
    """The one scheduler query of a cycle: every task of these jobs and its state."""
    if not ids:
        return {}
    res = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids),
                          "-o", "%i|%T"], capture_output=True, text=True, timeout=120)
    out = {}
    for line in res.stdout.splitlines():
        tid, _, state = line.strip().partition("|")
        if tid:
            out[tid] = state.strip()
    return out


def _retry_reason(state: str, run_dir: str, retry_failed: bool) -> str | None:
    """Why a run whose task ended in ``state`` is worth queuing again, or None."""
    if os.path.exists(os.path.join(run_dir, CANCEL)):
        return None
    if state in NODE_ENDS:
        return NODE_ENDS[state]
    if state not in ("FAILED", "OUT_OF_MEMORY", "TIMEOUT", "CANCELLED", "DEADLINE"):
        return None
    if state != "FAILED":
        return None  # a time limit, memory or a cancel is the run's own end
    rec = _read_json(os.path.join(run_dir, STATUS)) or {}
    if rec.get("ended_at") is None:
        return "lost"  # the worker was killed before it recorded its end (as a node failure does)
    if rec.get("state") == "failed" and retry_failed:
        return "failed"
    return None


def _cpu_s() -> float:
    """CPU seconds of this cycle so far: its own and its children's (squeue, sbatch, ...)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 3)


def cycle(stage: str) -> int:
    """One supervision cycle (see the module's docstring): ``AGAIN`` or 0."""
    t0 = time.time()
    cfg = _read_json(os.path.join(stage, CONFIG)) or {}
    me = os.environ.get("SLURM_JOB_ID", "")
    if os.path.exists(os.path.join(stage, STOP)):
        journal(stage, "stopped", by="chester cancel", job=me)
        return 0
    jobs: list[dict[str, Any]] = cfg.get("jobs") or []
    before = _job_ids(stage, jobs)
    # every job has its id: nothing to submit, and no scheduler call for it
    ids, waiting, rc = (before, [], 0) if len(before) == len(jobs) else \
        _submit_held_back(stage)
    calls = 0
    for k, jid in sorted(ids.items()):
        if k not in before:
            calls += 1
            journal(stage, "submitted", job=k, id=jid,
                    runs=len(next(j for j in jobs if int(j["index"]) == k)["run_dirs"]))
    calls += 1 if waiting else 0  # a refused sbatch
    states = _task_states(sorted(set(ids.values())))
    calls += 1 if ids else 0
    retried: dict[str, int] = {}
    for e in read_journal(stage):
        if e.get("event") == "requeued":
            retried[e["run"]] = retried.get(e["run"], 0) + 1
    given_up = {e.get("run") for e in read_journal(stage) if e.get("event") == "gave_up"}
    max_retries = int(cfg.get("max_retries") or 0)
    requeued = 0
    for j in jobs:
        jid = ids.get(int(j["index"])) or ""
        if not jid:
            continue
        for i, run_dir in enumerate(j["run_dirs"]):
            tid = f"{jid}_{i}" if j["kind"] == "array" else jid
            state = states.get(tid, "")
            if j["kind"] == "serial" or state in LIVE or not state:
                continue
            why = _retry_reason(state, run_dir, bool(cfg.get("retry_failed")))
            if why is None:
                continue
            n = retried.get(run_dir, 0)
            if n >= max_retries:
                if run_dir not in given_up:
                    journal(stage, "gave_up", run=run_dir, id=tid, why=why, retries=n)
                continue
            r = subprocess.run(["scontrol", "requeue", tid], capture_output=True, text=True,
                               timeout=60)
            calls += 1
            if r.returncode == 0:
                # SLURM holds a requeued job about two minutes; a retry starts at once (a few
                # seconds on: the node refuses a credential not newer than the requeue's)
                subprocess.run(["scontrol", "update", f"JobId={tid}", "StartTime=now+5"],
                               capture_output=True, timeout=60)
                calls += 1
                requeued += 1
                journal(stage, "requeued", run=run_dir, id=tid, why=why, attempt=n + 2)
            else:
                journal(stage, "error", what=f"scontrol requeue {tid}",
                        stderr=r.stderr.strip()[-300:])
    live = sum(1 for s in states.values() if s in LIVE)
    if rc != 0 and _failed_in_a_row(stage) + 1 >= MAX_FAILED_CYCLES:
        journal(stage, "done", job=me, why=f"{MAX_FAILED_CYCLES} cycles in a row failed")
        return 0
    if waiting or live or requeued or rc != 0:
        interval = float(cfg.get("interval") or 60)
        journal(stage, "cycle", job=me, waiting=len(waiting), live=live, calls=calls + 2,
                failed=rc != 0,
                cpu_s=_cpu_s(), wall_s=round(time.time() - t0, 3),
                next=round(time.time() + interval, 3))
        return AGAIN
    journal(stage, "done", job=me, calls=calls, cpu_s=_cpu_s(), wall_s=round(time.time() - t0, 3))
    return 0


#: Cycles in a row that fail before the supervisor gives up (it must not cost allocation
#: for ever on a cluster that refuses it): about ten minutes at the default interval.
MAX_FAILED_CYCLES = 10


def _failed_in_a_row(stage: str) -> int:
    """How many cycles in a row ended in an error, up to now."""
    n = 0
    for e in reversed(read_journal(stage)):
        if (e.get("event") == "error" and e.get("what") == "cycle") or \
                (e.get("event") == "cycle" and e.get("failed")):
            n += 1
        elif e.get("event") in ("cycle", "done", "stopped", "submitted", "requeued"):
            break
    return n


def main(argv: list[str]) -> int:
    stage = os.path.abspath(argv[1] if len(argv) > 1 else ".")
    try:
        return cycle(stage)
    except Exception as exc:  # the chain goes on: the next cycle may see a healthy scheduler
        journal(stage, "error", what="cycle", error=f"{type(exc).__name__}: {exc}")
        if _failed_in_a_row(stage) >= MAX_FAILED_CYCLES:
            journal(stage, "done", why=f"{MAX_FAILED_CYCLES} cycles in a row failed")
            return 0
        return AGAIN


if __name__ == "__main__":
    sys.exit(main(sys.argv))
