"""Cluster etiquette on the shared filesystem, on the real test SLURM through the login host:
a status poll reads the records of only the runs whose scheduler line changed since the
last poll (plus runs not seen yet, running runs whose worker record was not there yet, and
pending runs whose record changed: sacct lags), not every run's every poll. The reads are counted in what the status script brings back
over the transport."""

from __future__ import annotations

import json
import sys

from chester_backend_slurm import scheduler
from chester_backend_slurm.plugin import SlurmBackend

from chester.launcher import launch
from chester.plugin.testing import dispatcher_with
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 150


def fn_sleep(variant, log_dir, exp_name):
    import time as _time

    _time.sleep(variant["sleep"])


class _RecordingSlurm(SlurmBackend):
    """The slurm backend, keeping the output of every status script it runs."""

    def __init__(self, outputs: list[str]):
        super().__init__()
        self.outputs = outputs

    def open_executor(self, backend):
        return _Recording(super().open_executor(backend), self.outputs)


class _Recording:
    """The backend's executor, keeping the output of every status script it runs."""

    def __init__(self, ex, outputs: list[str]):
        self._ex, self._outputs = ex, outputs

    def run_script(self, script, **kw):
        res = self._ex.run_script(script, **kw)
        if scheduler.MARK_RECORDS in script:
            self._outputs.append(res.stdout)
        return res

    def __getattr__(self, name):
        return getattr(self._ex, name)


def _lines(stdout: str) -> dict[str, str]:
    """This poll's scheduler line (without the id) of every task id."""
    out: dict[str, str] = {}
    section = stdout.split(scheduler.MARK_RECORDS, 1)[0]
    for line in section.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0][:1].isdigit():
            continue
        for jid in scheduler._expand_ids(parts[0]):
            out[jid] = "|".join(parts[1:])
    return out


def test_a_poll_reads_only_the_records_of_runs_whose_line_changed(
        tmp_path, slurm_local, login_host, make_config):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    outputs: list[str] = []
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        host=login_host, remote_dir=str(tmp_path / "remote"), poll_interval=0.3))
    sleeps = [2, 3, 12, 12, 12, 12]  # a plateau where nothing changes
    sweep = launch(fn_sleep, [{"sleep": t} for t in sleeps], backend="slurm",
                   exp_prefix="reads", config=env.config,
                   dispatcher=dispatcher_with(_RecordingSlurm(outputs)))
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, states
    handles = {sweep.store.run(r.id).handle.remote_dir: sweep.store.run(r.id).remote_id
               for r in sweep.runs}
    polls = [(_lines(o), json.loads(o.split(scheduler.MARK_RECORDS, 1)[1].strip() or "{}"))
             for o in outputs]
    assert len(polls) >= 4, len(polls)
    reads_per_poll = []
    last_line: dict[str, str | None] = {}
    last_record: dict[str, dict] = {}
    for p, (lines, records) in enumerate(polls):
        read = {d for d, rec in records.items() if not rec.get("same")}
        skipped = {d for d, rec in records.items() if rec.get("same")}
        reads_per_poll.append(len(read))
        for d in records:
            rid = handles[d]  # a pending array is listed by its job id alone
            parent = lines.get(rid.split("_", 1)[0])
            now = lines.get(rid, None if parent is None else "^" + parent)
            if p == 0 or d not in last_line:
                assert d in read  # not seen yet: read
            elif now is None or now != last_line[d]:
                assert d in read, (p, d, now, last_line[d])  # changed: read
            elif d in read:
                # same line yet read: its worker's record was missing at the last read, or
                # the line is pending (sacct lags) and the record changed since
                before = last_record[d].get("status") or {}
                assert before.get("started_at") is None or (
                    now.lstrip("^").startswith("PENDING")
                    and records[d]["status"] != before), (p, d)
            if d in skipped:
                assert now is not None and now == last_line[d]
            last_line[d] = now
            if d in read:
                last_record[d] = records[d]
    total = sum(reads_per_poll)
    print(f"{len(polls)} polls of {len(sleeps)} runs: {total} record reads "
          f"(every run every poll: {sum(len(r) for _, r in polls)}); per poll {reads_per_poll}")
    assert any(n == 0 for n in reads_per_poll[1:])  # polls where nothing changed read nothing
    assert total < sum(len(r) for _, r in polls)
    for r in sweep.runs:  # what the records said still arrived: host and start of each run
        row = sweep.store.run(r.id)
        assert row.started_at and row.host, (row.name, row.started_at, row.host)
