"""The end watcher: while a wait waits, the end of a run reaches it from the run's own end
record (a ``stat`` a second where the folders are), not at the next scheduler poll; and the
watcher lives no longer than the wait. On the real test SLURM, directly and through the
login host; records are written by other processes, as a compute node writes them."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from chester_backend_slurm import scheduler, watcher
from chester_backend_slurm.executor import open_executor
from chester_backend_slurm.options import SlurmOptions
from chester_backend_slurm.plugin import SlurmBackend

from chester.launcher import launch
from chester.plugin.records import RunHandle
from chester.plugin.testing import dispatcher_with, fn_sleep
from chester.testing import ConformanceEnv
from chester.types import State

from .conftest import slurm_config

#: writes a run's records as its worker does (argv: folder, token, state)
WRITER = textwrap.dedent("""
    import json, os, sys, time
    d, token, state = sys.argv[1:4]
    os.makedirs(os.path.join(d, ".chester"), exist_ok=True)
    def put(name, data):
        tmp = os.path.join(d, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, os.path.join(d, name))
    put(".chester/run.json", {"token": token, "attempt": 1})
    t = time.time()
    put(".chester/status.json", {"token": token, "attempt": 1, "state": state, "host": "n1",
                                 "started_at": t - 1, "ended_at": t,
                                 "exit_code": 0 if state == "succeeded" else 3})
    if state == "succeeded":
        open(os.path.join(d, ".done"), "w").close()
""")


def _handles(root, n):
    return [RunHandle(run_id=i, token=f"tok{i}", backend="slurm", local_dir=str(root / f"r{i}"),
                      remote_dir=str(root / f"r{i}"), remote_id=f"7_{i}")
            for i in range(n)]


def _options(login_host=None):
    if login_host is None:
        return SlurmOptions()
    return SlurmOptions(host=login_host.alias, ssh_config=login_host.ssh_config)


@pytest.fixture(params=["direct", "login host"])
def where(request):
    return None if request.param == "direct" else request.getfixturevalue("login_host")


def test_ends_written_by_another_process_reach_the_sink(tmp_path, where):
    got: queue.Queue = queue.Queue()
    hs = _handles(tmp_path, 4)
    w = watcher.Watch(open_executor("slurm", _options(where)), hs, sys.executable,
                      lambda t, st: got.put((t, st)), tick=0.2)
    try:
        # a running record is no end, nor another run's end in a reused folder: nothing is
        # sent for them
        subprocess.run([sys.executable, "-c", WRITER, hs[2].remote_dir, "tok2", "running"],
                       check=True)
        subprocess.run([sys.executable, "-c", WRITER, hs[3].remote_dir, "old", "failed"],
                       check=True)
        for h, state in ((hs[0], "succeeded"), (hs[1], "failed")):
            subprocess.run([sys.executable, "-c", WRITER, h.remote_dir, h.token, state],
                           check=True)
        ends = dict(got.get(timeout=20) for _ in range(2))
        assert ends["tok0"].state == State.SUCCEEDED and ends["tok0"].host == "n1"
        assert ends["tok1"].state == State.FAILED and ends["tok1"].exit_code == 3
        assert got.empty() and w.alive
        # the reused folder's own run ends later: that end is sent
        subprocess.run([sys.executable, "-c", WRITER, hs[3].remote_dir, "tok3", "succeeded"],
                       check=True)
        token, st = got.get(timeout=20)
        assert token == "tok3" and st.state == State.SUCCEEDED
    finally:
        w.close()
    assert w.proc.returncode == 0  # it ended with its stdin


def test_a_run_submitted_after_launch_ends_with_the_job_id_its_stage_holds(tmp_path, where):
    """A run a submit limit held back has no job id in its handle; whoever submitted its job
    later (a poll, the supervisor) wrote the id to the stage's job-<i>.id: its end carries
    that id. One whose id file is not there yet is left to the next poll."""
    got: queue.Queue = queue.Queue()
    stage = tmp_path / "stage"
    stage.mkdir()
    hs = [RunHandle(run_id=i, token=f"tok{i}", backend="slurm", local_dir=str(tmp_path / f"r{i}"),
                    remote_dir=str(tmp_path / f"r{i}"), remote_id=None,
                    extra=(("stage", str(stage)), ("deferred", str(k)), ("kind", kind),
                           ("task", str(task))))
          for i, (k, kind, task) in enumerate(((1, "array", 2), (2, "single", 0), (3, "array", 0)))]
    (stage / "job-1.id").write_text("41\n")
    (stage / "job-2.id").write_text("42;othercluster\n")
    w = watcher.Watch(open_executor("slurm", _options(where)), hs, sys.executable,
                      lambda t, st: got.put((t, st)), tick=0.2)
    try:
        for h in hs:
            subprocess.run([sys.executable, "-c", WRITER, h.remote_dir, h.token, "succeeded"],
                           check=True)
        ends = dict(got.get(timeout=20) for _ in range(2))
        assert {t: st.remote_id for t, st in ends.items()} == {"tok0": "41_2", "tok1": "42"}
        time.sleep(1)
        assert got.empty()  # tok2: no id yet, no status without one
    finally:
        w.close()
    assert watcher.remote_id_of(hs[2], {"job": None}) is None


def test_a_records_of_another_run_or_a_signal_stop_are_not_final(tmp_path):
    h = _handles(tmp_path, 1)[0]
    rec = {"token": "other", "attempt": 1, "status": {"token": "other", "state": "failed"},
           "done": False}
    assert watcher.final_status(h, rec) is None
    st = {"token": h.token, "attempt": 1, "state": "terminated", "ended_at": 1.0}
    assert watcher.final_status(h, {"token": h.token, "status": st}) is None
    st = {"token": h.token, "attempt": 1, "state": "failed", "ended_at": 1.0}
    supervised = RunHandle(**{**h.to_dict(), "extra": (("supervisor", "9"),)})
    assert watcher.final_status(h, {"token": h.token, "status": st}).state == State.FAILED
    assert watcher.final_status(supervised, {"token": h.token, "status": st}) is None


def test_the_watcher_ends_at_its_lifetime(tmp_path):
    w = watcher.Watch(open_executor("slurm", SlurmOptions()), _handles(tmp_path, 1),
                      sys.executable, lambda t, st: None, lifetime=0.5, tick=0.1)
    try:
        assert w.proc.wait(timeout=10) == 0  # its stdin still open
    finally:
        w.close()


#: a waiting process: starts a watcher and prints its marker, then waits for ever
WAITER = textwrap.dedent("""
    import json, sys, time
    from chester_backend_slurm import watcher
    from chester_backend_slurm.executor import open_executor
    from chester_backend_slurm.options import SlurmOptions
    from chester.plugin.records import RunHandle
    opts, folder = json.loads(sys.argv[1]), sys.argv[2]
    h = RunHandle(run_id=0, token="t", backend="slurm", local_dir=folder, remote_dir=folder)
    w = watcher.Watch(open_executor("slurm", SlurmOptions(**opts)), [h], sys.executable,
                      lambda t, st: None)
    print(w.marker, flush=True)
    time.sleep(3600)
""")


def test_killing_the_waiting_process_ends_its_watcher(tmp_path, where):
    opts = {} if where is None else {"host": where.alias, "ssh_config": str(where.ssh_config)}
    p = subprocess.Popen([sys.executable, "-c", WAITER, json.dumps(opts),
                          str(tmp_path / "r0")], stdout=subprocess.PIPE, text=True)
    marker = p.stdout.readline().strip()
    ex = open_executor("slurm", _options(where))  # where the watcher runs: look there
    try:
        def running() -> bool:
            res = ex.run_script(f"pgrep -f {marker} || true\n", timeout=30)
            return bool(res.stdout.strip())

        assert marker
        deadline = time.monotonic() + 15
        while not running():  # the command may still be on its way to the login host
            assert time.monotonic() < deadline, "the watcher never started"
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 15
        while running():
            assert time.monotonic() < deadline, "the watcher outlived its waiting process"
            time.sleep(0.2)
    finally:
        ex.close()
        if p.poll() is None:
            p.kill()
            p.wait()


class _CountingSlurm(SlurmBackend):
    """The slurm backend, counting its status queries (each one sacct)."""

    def __init__(self, queries: list[float]):
        super().__init__()
        self.queries = queries

    def open_executor(self, backend):
        return _Counting(super().open_executor(backend), self.queries)


class _Counting:
    def __init__(self, ex, queries):
        self._ex, self._queries = ex, queries

    def run_script(self, script, **kw):
        if scheduler.MARK_RECORDS in script:
            self._queries.append(time.monotonic())
        return self._ex.run_script(script, **kw)

    def __getattr__(self, name):
        return getattr(self._ex, name)


def test_a_wait_with_the_default_poll_sees_the_end_from_the_records(
        tmp_path, slurm_local, where):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    queries: list[float] = []
    kw = {} if where is None else {"host": where, "remote_dir": str(tmp_path / "remote")}
    config = slurm_config(scheduler_env=slurm_local.env, **kw)
    del config["backends"]["slurm"]["poll_interval"]  # the default: 30 s at the least
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=config)
    sweep = launch(fn_sleep, [{"sleep": 1}, {"sleep": 2}], backend="slurm",
                   exp_prefix="watch", config=env.config,
                   dispatcher=dispatcher_with(_CountingSlurm(queries)))
    states = sweep.wait(timeout=120, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, states
    # one query when the wait started; the ends came from the records, not a second one
    assert len(queries) == 1, queries
    for r in sweep.runs:
        row = sweep.store.run(r.id)
        assert row.host and row.ended_at and row.pulled_at, row
