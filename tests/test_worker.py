"""The worker on its own: payload formats and a new attempt meeting the old one's worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import pytest

from chester import rundir as rd
from chester.launcher import write_run_folder


def record_result(variant, log_dir, exp_name):
    with open(os.path.join(log_dir, "result.json"), "w") as f:
        json.dump({"x": variant["x"], "name": exp_name, "t": time.time()}, f)


def _row(d: Path):
    """What write_run_folder reads of a job-store row."""
    return SimpleNamespace(id=1, name="1_w", token="tok", local_dir=str(d))


def _worker(d: Path, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, **{k: str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, "-m", "chester.worker", str(d)], env=e,
                          capture_output=True, text=True, timeout=120)


def test_both_payload_forms_run(tmp_path):
    new = tmp_path / "new"
    write_run_folder(_row(new), fn=record_result, variant={"x": "a'$(b)\n"},
                     project_dir=str(tmp_path), env={})
    assert _worker(new).returncode == 0
    assert json.loads((new / "result.json").read_text())["x"] == "a'$(b)\n"
    old = tmp_path / "old"  # one pickle holding both, as launchers before 0.3 wrote
    write_run_folder(_row(old), fn=record_result, variant={"x": 1},
                     project_dir=str(tmp_path), env={})
    (old / rd.PAYLOAD).write_bytes(cloudpickle.dumps({"fn": record_result, "variant": {"x": 2}}))
    assert _worker(old).returncode == 0
    assert json.loads((old / "result.json").read_text())["x"] == 2


def call_f(variant, log_dir, exp_name):
    with open(os.path.join(log_dir, "result.json"), "w") as f:
        json.dump({"f": variant["f"](2), "plain": variant["plain"]}, f)


def test_plain_and_rich_variants_reach_the_function(tmp_path):
    """Plain data is pickled plainly; a variant holding a function goes through cloudpickle."""
    from chester.launcher import payloads as launcher

    assert launcher._plain({"a": [1, 2.5, "x", None, (True, b"y")], "b": {"c": 1}})
    assert not launcher._plain({"a": lambda: 1}) and not launcher._plain({"a": {1, 2}})
    d = tmp_path / "rich"
    offset = 40
    write_run_folder(_row(d), fn=call_f, variant={"f": lambda x: x + offset, "plain": [1, "ü"]},
                     project_dir=str(tmp_path), env={})
    res = _worker(d)
    assert res.returncode == 0, res.stderr
    assert json.loads((d / "result.json").read_text()) == {"f": 42, "plain": [1, "ü"]}


def _earlier_attempt(d: Path, lingering_s: float) -> subprocess.Popen:
    """A process standing in for attempt 1's worker, still alive, recorded as running."""
    p = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({lingering_s})"],
                         start_new_session=True)
    for _ in range(100):
        if rd.proc_start_time(p.pid) is not None:
            break
        time.sleep(0.01)
    rd.write_json_atomic(d / rd.STATUS, {
        "token": "tok", "attempt": 1, "pid": p.pid, "pgid": p.pid,
        "start_ticks": rd.proc_start_time(p.pid), "state": "running", "ended_at": None})
    return p


def test_a_new_attempt_waits_for_the_old_worker_to_end(tmp_path):
    """A requeue can start attempt 2 while attempt 1's worker still records its end: the new
    worker waits for it, then runs (never beside it, never skipping the run)."""
    d = tmp_path / "run"
    write_run_folder(_row(d), fn=record_result, variant={"x": 1}, project_dir=str(tmp_path),
                     env={})
    old = _earlier_attempt(d, 2.0)
    res = _worker(d, CHESTER_ATTEMPT=2)
    ended = time.time()
    assert res.returncode == 0, res.stderr
    assert old.wait(timeout=5) == 0  # it ended on its own
    assert "is still ending; waiting for it" in res.stderr
    st = json.loads((d / rd.STATUS).read_text())
    assert st["state"] == "succeeded" and st["attempt"] == 2
    assert (d / rd.DONE).exists()
    assert json.loads((d / "result.json").read_text())["t"] <= ended


def test_a_lingering_old_worker_is_stopped(tmp_path, monkeypatch):
    d = tmp_path / "run"
    write_run_folder(_row(d), fn=record_result, variant={"x": 1}, project_dir=str(tmp_path),
                     env={})
    old = _earlier_attempt(d, 600)
    from chester import worker

    monkeypatch.setattr(worker, "PREVIOUS_ATTEMPT_GRACE_S", 0.5)
    monkeypatch.setenv("CHESTER_ATTEMPT", "2")
    try:
        assert worker.run(str(d)) == 0
        assert old.wait(timeout=10) != 0  # stopped by a signal
        assert json.loads((d / rd.STATUS).read_text())["attempt"] == 2
    finally:
        if old.poll() is None:
            old.kill()


def test_a_record_from_another_host_is_not_this_hosts_process(tmp_path):
    """On a shared filesystem the earlier attempt's pid belongs to another node: never
    waited for, never signalled."""
    d = tmp_path / "run"
    write_run_folder(_row(d), fn=record_result, variant={"x": 1}, project_dir=str(tmp_path),
                     env={})
    here = _earlier_attempt(d, 30)  # a live process whose pid the record names...
    try:
        st = json.loads((d / rd.STATUS).read_text())
        rd.write_json_atomic(d / rd.STATUS, {**st, "host": "some-other-node"})  # ...elsewhere
        res = _worker(d, CHESTER_ATTEMPT=2)
        assert res.returncode == 0 and "still ending" not in res.stderr, res.stderr
        assert json.loads((d / rd.STATUS).read_text())["state"] == "succeeded"
        assert here.poll() is None  # left alone
    finally:
        here.kill()


def test_the_same_attempt_twice_runs_once(tmp_path):
    d = tmp_path / "run"
    write_run_folder(_row(d), fn=record_result, variant={"x": 1}, project_dir=str(tmp_path),
                     env={})
    other = _earlier_attempt(d, 30)
    try:
        res = _worker(d, CHESTER_ATTEMPT=1)
        assert res.returncode == 0 and "already running" in res.stderr
        assert not (d / "result.json").exists()
        assert other.poll() is None  # left alone
    finally:
        other.kill()


def _spec_row(i: int, d: Path):
    return SimpleNamespace(id=i, name=d.name, token=f"tok{i}", local_dir=str(d),
                           remote_dir=str(d))


def test_worker_writes_its_folder_from_the_sweep_spec(tmp_path):
    """A launch with a sweep spec writes one file; each worker writes its own folder from
    it, the same files the launcher writes otherwise, and values arrive byte for byte."""
    from chester import sweepspec
    from chester.launcher import write_sweep_spec

    hostile = "q'\"$(touch /tmp/pwned)`id`;\nü\x00" + "x" * 100_000
    dirs = [tmp_path / "exp" / f"{i}_w" for i in (1, 2)]
    spec = tmp_path / "runs.spec"
    write_sweep_spec(spec, [_spec_row(i + 1, d) for i, d in enumerate(dirs)], fn=record_result,
                     variants=[{"x": hostile}, {"x": 2}], project_dir=str(tmp_path),
                     env={"A": "b c"})
    assert oct(spec.stat().st_mode & 0o777) == "0o600"
    assert sweepspec.runs_in(spec) == [str(d) for d in dirs]
    assert not dirs[0].exists()
    res = subprocess.run([sys.executable, "-m", "chester.worker", str(dirs[0]), "--spec",
                          str(spec)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads((dirs[0] / "result.json").read_text())["x"] == hostile
    assert json.loads((dirs[0] / rd.VARIANT_JSON).read_text()) == {"x": hostile,
                                                                     "exp_name": "1_w"}
    meta = json.loads((dirs[0] / rd.RUN_JSON).read_text())
    assert (meta["token"], meta["env"]) == ("tok1", {"A": "b c"})
    assert oct((dirs[0] / rd.PAYLOAD).stat().st_mode & 0o777) == "0o600"
    assert (dirs[0] / rd.DONE).exists() and not dirs[1].exists()
    # a folder already written is left as it is (a requeued attempt)
    (dirs[0] / rd.VARIANT_JSON).write_text("{}")
    assert sweepspec.materialize(spec, str(dirs[0])) is False
    assert (dirs[0] / rd.VARIANT_JSON).read_text() == "{}"
    # a run submitted again (new token, next attempt) gets its records written anew
    again = SimpleNamespace(**{**vars(_spec_row(1, dirs[0])), "token": "tok9", "attempt": 2})
    spec2 = tmp_path / "again.spec"
    write_sweep_spec(spec2, [again], fn=record_result, variants=[{"x": 3}],
                     project_dir=str(tmp_path), env={})
    assert sweepspec.materialize(spec2, str(dirs[0])) is True
    meta = json.loads((dirs[0] / rd.RUN_JSON).read_text())
    assert (meta["token"], meta["attempt"]) == ("tok9", 2)
    assert json.loads((dirs[0] / rd.VARIANT_JSON).read_text())["x"] == 3


def test_worker_with_a_spec_lacking_its_folder_says_so(tmp_path):
    from chester import sweepspec

    spec = tmp_path / "runs.spec"
    sweepspec.write(spec, b"", [(str(tmp_path / "a"), b"{}", b"{}", b"")])
    res = subprocess.run([sys.executable, "-m", "chester.worker", str(tmp_path / "b"),
                          "--spec", str(spec)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "holds no run in" in res.stderr and str(tmp_path / "b") in res.stderr
    (tmp_path / "cut.spec").write_bytes(spec.read_bytes()[:-3])
    with pytest.raises(sweepspec.SpecError, match="cut short"):
        sweepspec.read_entry(tmp_path / "cut.spec", str(tmp_path / "a"))
    (tmp_path / "junk.spec").write_bytes(b"not a spec\n")
    with pytest.raises(sweepspec.SpecError, match="not a chester sweep spec"):
        sweepspec.read_entry(tmp_path / "junk.spec", str(tmp_path / "a"))


def test_a_cancel_between_the_workers_check_and_its_start_record_is_seen(tmp_path,
                                                                         monkeypatch):
    """A cancel that marks the run after the worker looked for a marker, and reads no start
    record to stop yet: the worker looks again once its start record is written, so the
    run's code never starts (one side always sees the other)."""
    import signal

    from chester.target import worker

    d = tmp_path / "run"
    write_run_folder(_row(d), fn=record_result, variant={"x": 1}, project_dir=str(tmp_path),
                     env={})
    start = worker._record_start

    def start_then_cancelled(run_dir, meta, attempt):
        rec = start(run_dir, meta, attempt)
        rd.write_cancel(run_dir, "chester cancel", meta["token"])  # lands just now
        return rec

    monkeypatch.setattr(worker, "_record_start", start_then_cancelled)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        assert worker.run(str(d)) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert not (d / "result.json").exists()
    status = json.loads((d / rd.STATUS).read_text())
    assert status["state"] == "cancelled" and "before it started" in status["reason"]
