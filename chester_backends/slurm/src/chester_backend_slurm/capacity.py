"""What a pool (``type: pool``) asks of a SLURM cluster before it places runs there: the
room the user's submit limit leaves (the association's ``MaxSubmitJobs`` and its QOS's
``MaxSubmitJobsPerUser``, less the user's jobs queued; each array task counts) and when a
run would start (``sbatch --test-only``, the scheduler's own estimate). One round trip."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from chester.plugin.records import Capacity, Spend

#: a start estimate this close to now is "starts now"
NOW_SLACK_S = 5.0


def script(sbatch_lines: Sequence[str], qos: str | None) -> str:
    """Bash that prints ``ENFORCE`` (AccountingStorageEnforce), ``QUEUED n``, ``ASSOC
    maxsubmit|qos|defaultqos`` lines, ``QOS
    name|maxsubmitpu`` lines, ``START epoch`` (empty: no estimate), ``NOW epoch`` and the
    test's own last line (``TEST ...``)."""
    body = "\n".join(["#!/bin/bash", *sbatch_lines, "true"])
    return "\n".join([
        'u=$(id -un)',
        'echo "ENFORCE $(scontrol show config 2>/dev/null | '
        'sed -n "s/^AccountingStorageEnforce *= *//p")"',
        'echo "QUEUED $(squeue -h -r -u "$u" -o %i 2>/dev/null | wc -l)"',
        'sacctmgr -n -P show assoc where user="$u" format=maxsubmit,qos,defaultqos '
        '2>/dev/null | sed "s/^/ASSOC /"',
        'sacctmgr -n -P show qos format=name,maxsubmitpu 2>/dev/null | sed "s/^/QOS /"',
        f"out=$(sbatch --test-only {('--qos=' + shlex.quote(qos)) if qos else ''} "
        f"2>&1 <<'CHESTER_TEST_ONLY'\n{body}\nCHESTER_TEST_ONLY\n)",
        't=$(printf "%s\\n" "$out" | sed -n "s/.* to start at \\([0-9T:-]*\\).*/\\1/p" '
        '| head -n 1)',
        'echo "START $( [ -n "$t" ] && date -d "$t" +%s )"',
        'echo "NOW $(date +%s)"',
        'echo "TEST $(printf "%s" "$out" | tail -n 1)"',
    ]) + "\n"


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse(stdout: str, qos: str | None, reserved: int = 0) -> Capacity:
    """The capacity the script's output says: ``room`` from the tightest submit limit (None
    without one, or without accounting); ``free`` = that room when the test job would start
    now (one run, with no limit), else nothing and ``wait_s`` until the estimate."""
    queued = 0
    assoc: list[tuple[int | None, list[str], str]] = []
    qos_limits: dict[str, int | None] = {}
    start = now = None
    test = ""
    enforced = False
    for line in stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "ENFORCE":  # limits count only where the cluster enforces them
            enforced = "limits" in rest or "safe" in rest
        elif tag == "QUEUED":
            queued = _int(rest) or 0
        elif tag == "ASSOC":
            cells = rest.split("|")
            if len(cells) >= 3:
                assoc.append((_int(cells[0]), [q for q in cells[1].split(",") if q],
                              cells[2].strip()))
        elif tag == "QOS":
            name, _, limit = rest.partition("|")
            qos_limits[name.strip()] = _int(limit)
        elif tag == "START":
            start = _int(rest)
        elif tag == "NOW":
            now = _int(rest)
        elif tag == "TEST":
            test = rest.strip()
    limits: list[int] = []
    for max_submit, qoses, default in assoc:
        if max_submit is not None:
            limits.append(max_submit)
        used = qos or default or (qoses[0] if qoses else "")
        if qos_limits.get(used) is not None:
            limits.append(int(qos_limits[used] or 0))
    # ``reserved``: slots the submit itself takes besides the runs (a supervisor job)
    room = max(0, min(limits) - queued - reserved) if limits and enforced else None
    if start is None or now is None:
        return Capacity(free=0, room=room, wait_s=None, charges_su=True,
                        note=f"no start estimate ({test or 'sbatch --test-only said nothing'})")
    wait = max(0.0, float(start - now))
    starts_now = wait <= NOW_SLACK_S
    free = (room if room is not None else 1) if starts_now else 0
    lim = f"room for {room} of the submit limit" if room is not None else "no submit limit"
    return Capacity(free=free, room=room, wait_s=0.0 if starts_now else wait, charges_su=True,
                    note=f"{lim}; a run would start in {int(wait)} s")


def spend_script(job_ids: Sequence[str], start_date: str) -> str:
    """Bash that prints each job's (task's) ``JobID|ElapsedRaw|AllocTRES`` from sacct."""
    ids = ",".join(sorted(set(job_ids)))
    return (f"sacct -X -n -P -o JobID,ElapsedRaw,AllocTRES -j {shlex.quote(ids)} "
            f"--starttime={shlex.quote(start_date)} 2>/dev/null\n")


def parse_spend(stdout: str, task_ids: Sequence[str]) -> Spend:
    """Service units of these tasks: each one's ``billing`` TRES x its elapsed hours (a
    cluster without ``billing`` in its TRES counts the CPUs, as SLURM does by default)."""
    wanted = set(task_ids)
    su = 0.0
    for line in stdout.splitlines():
        cells = line.split("|")
        if len(cells) < 3 or cells[0] not in wanted:
            continue
        tres = dict(p.partition("=")[::2] for p in cells[2].split(",") if "=" in p)
        try:
            weight = float(tres.get("billing") or tres.get("cpu") or 0)
            su += weight * float(cells[1] or 0) / 3600
        except ValueError:
            continue
    return Spend(su=su)
