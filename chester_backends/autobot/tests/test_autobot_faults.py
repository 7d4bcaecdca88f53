"""The autobot backend under faults and load, on the test lab: a node killed mid-sweep, the
scheduler SIGKILLed mid-sweep, two projects' sweeps at once on the same nodes, a 20-run
sweep of hostile values; cancel of queued runs."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest
from chester_testinfra import wait_until
from chester_testinfra.gpulab import gpu_intervals, make_project, overlaps

from chester.dispatch import Dispatcher
from chester.errors import ConnectError
from chester.launcher import launch
from chester.testing import HOSTILE_VALUES, fn_hostile

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_count(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    with open(_o.path.join(log_dir, "invocations.txt"), "a") as f:
        f.write(f"{_o.getpid()}\n")
    _t.sleep(float(variant.get("sleep", 0)))


def fast() -> Dispatcher:
    return Dispatcher(sleep=lambda s: time.sleep(min(s, 0.5)))



def _status_files(remote):
    return [json.loads(p.read_text()) for p in remote.rglob(".chester/status.json")]


def _lock_is_free(path) -> bool:
    """No scheduler holds its lock file (a loop holds it as long as it runs)."""
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_node_is_skipped_and_its_run_reported_lost(tmp_path, gpu_lab):
    lab = gpu_lab
    n1, n2 = lab.nodes
    lab.free_gpus(n1, 1)
    lab.free_gpus(n2, 1)
    project, cfg, remote = make_project(tmp_path, lab, lost_after=6, node_timeout=5)
    sweep = launch(fn_count, [{"i": i, "sleep": 6} for i in range(3)], backend="lab",
                   exp_prefix="nodedown", config=cfg, dispatcher=fast())
    recs = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(_status_files(remote)), 30)
    on2 = next(r for r in recs if r["host"] == "chost2")
    # the node dies: its sshd and sessions, and the run's processes
    lab.hosts.kill_sshd(n2)
    os.killpg(on2["pgid"], signal.SIGKILL)
    try:
        states = sweep.wait(timeout=90, poll_interval=0.3, pull=True, progress=False)
    finally:
        lab.hosts.heal()
    rows = {r.name: r for r in sweep.store.runs(sweep.id)}
    lost = [r for r in rows.values() if r.state.value == "lost"]
    assert len(lost) == 1, {n: (r.state, r.reason) for n, r in rows.items()}
    assert "node chost2 unreachable" in lost[0].reason
    assert sorted(s.value for s in states.values()) == ["lost", "succeeded", "succeeded"]
    # the third run went to the live node, after the first run there ended
    hosts = sorted(r["host"] for r in _status_files(remote))
    assert hosts == ["chost1", "chost1", "chost2"], hosts


def test_scheduler_killed_mid_sweep_loses_nothing_and_starts_nothing_twice(tmp_path, gpu_lab):
    lab = gpu_lab
    for n in lab.nodes:
        lab.free_gpus(n, 2)
    project, cfg, remote = make_project(tmp_path, lab)
    root = remote / ".chester" / "autobot"
    a = launch(fn_count, [{"i": i, "sleep": 1.5} for i in range(8)], backend="lab",
               exp_prefix="kill-a", config=cfg, dispatcher=fast())
    wait_until(lambda: len(_status_files(remote)) >= 2, 30)
    pid = int((root / "scheduler.lock").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _pid_alive(pid), 10)
    # the runs it started end meanwhile; nothing places the rest
    wait_until(lambda: all(s.get("ended_at") for s in _status_files(remote)), 30)
    # a status call starts the scheduler again
    a.status()
    pid2 = wait_until(lambda: (lambda t: int(t) if t and int(t) != pid else None)(
        (root / "scheduler.lock").read_text()), 10)
    assert _pid_alive(pid2)
    wait_until(lambda: len(_status_files(remote)) >= 5, 30)
    os.kill(pid2, signal.SIGKILL)
    wait_until(lambda: not _pid_alive(pid2), 10)
    # ... and so does the next submit
    b = launch(fn_count, [{"i": i, "sleep": 0.5} for i in range(4)], backend="lab",
               exp_prefix="kill-b", config=cfg, dispatcher=fast())
    for sweep in (a, b):
        states = sweep.wait(timeout=120, poll_interval=0.3, pull=True, progress=False)
        assert {s.value for s in states.values()} == {"succeeded"}, states
        for run in sweep.runs:
            assert (run.log_dir / "invocations.txt").read_text().count("\n") == 1, run.name
    assert not overlaps(gpu_intervals(remote))


def test_two_projects_at_once_never_share_a_gpu(tmp_path, gpu_lab):
    lab = gpu_lab
    leases = tmp_path / "shared" / "leases"
    sweeps = {}
    remotes = []
    errors = []

    def go(tag):
        try:
            project, cfg, remote = make_project(tmp_path / tag, lab, lease_dir=str(leases))
            remotes.append(remote)
            sweep = launch(fn_count, [{"i": i, "sleep": 1} for i in range(12)],
                           backend="lab", exp_prefix=f"two-{tag}", config=cfg,
                           dispatcher=fast())
            states = sweep.wait(timeout=180, poll_interval=0.3, pull=True, progress=False)
            sweeps[tag] = (states, [(r.name, r.log_dir) for r in sweep.runs])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(sweeps) == 2
    for states, runs in sweeps.values():
        assert {s.value for s in states.values()} == {"succeeded"}, states
        for name, log_dir in runs:
            assert (log_dir / "invocations.txt").read_text().count("\n") == 1, name
    both = [iv for r in remotes for iv in gpu_intervals(r)]
    assert len(both) == 24
    assert not overlaps(both), overlaps(both)


def test_twenty_hostile_runs_arrive_exactly_one_gpu_each(tmp_path, gpu_lab):
    lab = gpu_lab
    pwned = "/tmp/chester-pwned"
    if os.path.exists(pwned):
        os.unlink(pwned)
    project, cfg, remote = make_project(tmp_path, lab)
    variants = [dict(HOSTILE_VALUES, i=i) for i in range(20)]
    sweep = launch(fn_hostile, variants, backend="lab", exp_prefix="hostile", config=cfg,
                   dispatcher=fast(), env={"CHESTER_HOSTILE": HOSTILE_VALUES["subshell"]})
    states = sweep.wait(timeout=180, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    for run, v in zip(sweep.runs, variants, strict=True):
        got = json.loads((run.log_dir / "hostile.json").read_text())
        assert got["values"] == v
    assert not os.path.exists(pwned)
    ivs = gpu_intervals(remote)
    assert len(ivs) == 20 and not overlaps(ivs)


def test_cancel_removes_queued_runs(tmp_path, gpu_lab):
    lab = gpu_lab
    for n in lab.nodes:
        lab.set_gpus(n, [{"used": 10000, "procs": [77]}])
    project, cfg, remote = make_project(tmp_path, lab)
    sweep = launch(fn_count, [{"i": i} for i in range(3)], backend="lab",
                   exp_prefix="cq", config=cfg, dispatcher=fast())
    wait_until(lambda: all(s.value == "queued" for s in sweep.status().values()), 20)
    assert sweep.cancel() == {r.name: True for r in sweep.runs}
    states = sweep.wait(timeout=30, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"cancelled"}
    root = remote / ".chester" / "autobot"
    assert not [p for p in (root / "queue").iterdir() if p.suffix == ".json"]
    for n in lab.nodes:  # the GPUs free up: nothing starts
        lab.free_gpus(n, 2)
    # until the scheduler has left, having found the queue empty: then nothing can start
    wait_until(lambda: _lock_is_free(root / "scheduler.lock"), 30)
    assert not _status_files(remote)
    assert not any((run.log_dir / "invocations.txt").exists() for run in sweep.runs)


@pytest.fixture(autouse=True)
def _no_leftovers(gpu_lab):
    yield
    gpu_lab.hosts.heal()


def test_a_login_host_outage_mid_sweep_is_ridden_out(tmp_path, gpu_lab):
    """The login host's sshd dies (connections drop, new ones are refused) and comes back:
    a status call in between fails, after its retries, with one line naming the backend and
    the login host; the scheduler on the login host goes on placing runs meanwhile; every run
    runs once."""
    lab = gpu_lab
    project, cfg, remote = make_project(tmp_path, lab)
    sweep = launch(fn_count, [{"i": i, "sleep": 1} for i in range(12)], backend="lab",
                   exp_prefix="outage", config=cfg, dispatcher=fast())
    wait_until(lambda: len(_status_files(remote)) >= 1, 30)
    lab.login.kill_sshd()
    try:
        before = len(_status_files(remote))
        with pytest.raises(ConnectError) as ei:
            sweep.dispatcher.call("chester_status", sweep.backend,
                                  handles=[r.handle for r in sweep.runs])
        assert "lab" in str(ei.value) and "\n" not in str(ei.value)
        wait_until(lambda: len(_status_files(remote)) > before, 30)  # placing goes on
    finally:
        lab.login.start_sshd()
    states = sweep.wait(timeout=120, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    for run in sweep.runs:
        assert (run.log_dir / "invocations.txt").read_text().count("\n") == 1, run.name
    assert not overlaps(gpu_intervals(remote))
