"""Supervision on the real test SLURM: the launching process is SIGKILLed right after its
first submit and no chester process runs on the "laptop" until the sweep is over; the
sweep's supervisor job (a chain of one job id that requeues itself, see
``chester_backend_slurm.supervisor``) submits the runs a ``MaxSubmitJobsPerUser`` limit held
back as room frees, and queues again a run whose worker was SIGKILLed (as a node failure
kills it) under ``max_retries``. ``chester status`` run afterwards reads every run as
succeeded, the killed one at attempt 2, and the journal says what was submitted when.

The supervision interval is 5 s here (the default is 60 s: one scheduler query a minute).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chester_testinfra.slurm import SlurmCluster, limited_cluster

from chester.testing import ConformanceEnv

LIMIT = 10  # the QOS's MaxSubmitJobsPerUser; each array task counts
CHESTER = [sys.executable, "-m", "chester.cli"]

LAUNCH = textwrap.dedent('''
    import os, sys, time
    import chester

    def fn(variant, log_dir, exp_name):
        import os, time
        import chester
        with open(os.path.join(log_dir, "attempts.txt"), "a") as f:
            f.write(f"{chester.attempt()}\\n")
        if variant["die"] and chester.attempt() == 1:
            os.kill(os.getpid(), 9)  # the worker dies with no end recorded, as on a lost node
        if variant["ckpt"] and chester.attempt() == 1:
            chester.requeue()  # a checkpoint requeue: SLURM queues it again, not a retry
        time.sleep(variant["sleep"])

    if __name__ == "__main__":
        n, die, ckpt = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        chester.launch(fn, [{"i": i, "die": i == die, "ckpt": i == ckpt, "sleep": 1}
                            for i in range(n)], backend="slurm", exp_prefix="sup")
        print("SUBMITTED", flush=True)
        time.sleep(3600)  # a laptop that would wait: it is killed here
''')


@pytest.fixture(scope="module")
def slurm_limit10(tmp_path_factory) -> Iterator[SlurmCluster]:
    """A cluster whose user may have at most LIMIT jobs queued."""
    with limited_cluster(tmp_path_factory.mktemp("slurm-sup"), LIMIT) as cluster:
        yield cluster


def _in_a_job(pid: str) -> bool:
    """Whether ``pid`` descends from a ``slurmstepd`` (a job's process, on a "node")."""
    while pid not in ("0", "1"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith("slurmstepd"):
            return True
        pid = stat[stat.rindex(")") + 2:].split()[1]
    return False


def _laptop_processes(project: Path) -> list[str]:
    """Processes of this project that are not SLURM jobs: what would run on the laptop
    (this machine is both here; a job's processes descend from slurmstepd)."""
    mark = str(project).encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if (mark in cmd or mark in env) and not _in_a_job(pid):
            found.append(f"{pid}: " + cmd.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _journal(project: Path) -> list[dict]:
    files = list(project.glob(".chester/slurm/*/supervise.jsonl"))
    if not files:
        return []
    return [json.loads(ln) for ln in files[0].read_text().splitlines() if ln.strip()]


def _run_unattended(tmp_path: Path, cluster: SlurmCluster, n: int, die: int,
                    timeout: float, ckpt: int = -1) -> tuple[ConformanceEnv, list[dict]]:
    """Launch ``n`` runs from a process SIGKILLed right after its submit (run ``die``'s
    worker is killed on its first attempt, run ``ckpt`` asks for a checkpoint requeue on
    its first), then wait, with no process of the project outside SLURM jobs, for the
    supervisor's journal to say the sweep is over."""
    env = ConformanceEnv.create(tmp_path, backend="slurm", config={"backends": {"slurm": {
        "type": "slurm", "scheduler_env": dict(cluster.env), "max_array_size": 3,
        "supervise_interval": 5, "max_retries": 1}}})
    (env.project / "launch_sweep.py").write_text(LAUNCH)
    launcher = subprocess.Popen([sys.executable, "launch_sweep.py", str(n), str(die),
                                 str(ckpt)],
                                cwd=env.project, stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline()
        assert line.strip() == "SUBMITTED", line
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    # the killed launcher's submit shell may finish its current command (a `sed`): give it
    # a few seconds to go; from then on nothing of the project runs on the laptop
    settle = time.monotonic() + 10
    while _laptop_processes(env.project) and time.monotonic() < settle:
        time.sleep(0.2)
    deadline = time.monotonic() + timeout
    while not any(e["event"] in ("done", "stopped") for e in _journal(env.project)):
        assert not _laptop_processes(env.project), _laptop_processes(env.project)
        assert time.monotonic() < deadline, _journal(env.project)
        time.sleep(0.5)
    return env, _journal(env.project)


@pytest.mark.timeout(600)
def test_a_sweep_held_back_by_a_submit_limit_finishes_without_the_laptop(tmp_path,
                                                                         slurm_limit10):
    n, die = 30, 4
    env, journal = _run_unattended(tmp_path, slurm_limit10, n, die, timeout=480)
    # the held-back jobs were submitted by the supervisor, one cycle after another as room
    # freed: 30 runs in arrays of 3 are 10 jobs, of which 3 fit beside the supervisor at first
    submitted = [e for e in journal if e["event"] == "submitted"]
    assert sorted(e["job"] for e in submitted) == list(range(3, 10)), journal
    times = [e["t"] for e in journal if e["event"] in ("submitted", "cycle")]
    assert times == sorted(times)
    assert len({round(e["t"]) for e in submitted}) > 1  # not all at once: as room freed
    (requeued,) = [e for e in journal if e["event"] == "requeued"]
    assert requeued["why"] == "lost" and requeued["attempt"] == 2
    assert journal[-1]["event"] == "done"
    # the supervisor is gone; nothing of the sweep is left in the queue
    q = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True,
                       env=slurm_limit10.environ()).stdout.split()
    assert not [j for j in q if j.startswith("sup-") or "supervise" in j], q
    # the laptop comes back: `chester status` reads every run succeeded, the retried one at
    # attempt 2, each other run ran once
    st = subprocess.run([*CHESTER, "status", "sup", "--json"], cwd=env.project,
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stderr
    runs = json.loads(st.stdout)["runs"]
    assert len(runs) == n and {r["state"] for r in runs} == {"succeeded"}, runs
    for i, r in enumerate(runs):
        assert (r.get("attempt") or 1) == (2 if i == die else 1), r
    # the store's record is as if the laptop had polled all along: each run the supervisor
    # submitted has its submit in its history at the journal's time, the retried run its
    # requeue
    import chester

    sw = chester.sweep("sup", config=env.config)
    rows = sw.rows()
    by_id = {e["id"]: e for e in submitted}
    for row in rows[9:]:
        job = (row.remote_id or "").split("_")[0]
        hist = sw.store.history(row.id)
        assert (by_id[job]["t"], "queued", f"submitted by the supervisor as job {job}") in hist
    hist = sw.store.history(rows[die].id)
    assert (requeued["t"], "requeued",
            "requeued by the supervisor after lost (attempt 2)") in hist, hist
    assert rows[die].attempt == 2
    # what supervision cost: CPU seconds of its cycles, scheduler calls
    cycles = [e for e in journal if e["event"] in ("cycle", "done")]
    assert all(e["cpu_s"] > 0 and e["wall_s"] > 0 for e in cycles)
    idle = [e["calls"] for e in cycles if e["event"] == "cycle" and not e["waiting"]]
    print(f"supervision: {len(cycles)} cycles over {journal[-1]['t'] - journal[0]['t']:.0f} s, "
          f"{sum(e['cpu_s'] for e in cycles):.2f} CPU-s, "
          f"{sum(e['wall_s'] for e in cycles):.2f} s in cycles, "
          f"{sum(e['calls'] for e in cycles)} scheduler calls (cycles with nothing to submit: "
          f"{idle})")
    for d in sorted(env.project.glob("data/**/attempts.txt")):
        text = d.read_text()
        assert text in ("1\n", "1\n2\n"), (d, text)
    assert sum(1 for d in env.project.glob("data/**/attempts.txt")) == n


@pytest.mark.parametrize("via", ["login-host", "here"])
def test_cancel_stops_the_supervisor(tmp_path, slurm_limit10, login_host, via):
    """Runs held back: the launch leaves a supervisor pending; `chester status` says how it
    is (the journal is read through the login host); `chester cancel` of the sweep stops it
    (``supervise.stop``, its job gone)."""
    where = {"host": login_host.alias, "ssh_config": login_host.ssh_config,
             "remote_dir": str(tmp_path / "remote")} if via == "login-host" else {}
    env = ConformanceEnv.create(tmp_path, backend="slurm", config={"backends": {"slurm": {
        "type": "slurm", "scheduler_env": dict(slurm_limit10.env), "max_array_size": 3,
        "supervise_interval": 300, **where}}})
    slurm_limit10.wait_idle(120)
    import cloudpickle

    import chester

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    sweep = chester.launch(_sleeper, [{"i": i} for i in range(12)], backend="slurm",
                           exp_prefix="supc", config=env.config)
    root = tmp_path / "remote" if via == "login-host" else env.project
    (stage,) = root.glob(".chester/slurm/*")
    sup = (stage / "supervise.id").read_text().strip()
    st = subprocess.run([*CHESTER, "status", "supc", "--json"], cwd=env.project,
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stderr
    reasons = [r.get("pending_reason") or "" for r in json.loads(st.stdout)["runs"]]
    assert any(x.startswith("waiting to submit: QOSMaxSubmitJobPerUserLimit; supervisor ")
               for x in reasons), reasons
    cancel = subprocess.run([*CHESTER, "cancel", "supc"], cwd=env.project,
                            capture_output=True, text=True, timeout=120)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert (stage / "supervise.stop").exists()
    q = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                       env=slurm_limit10.environ()).stdout.split()
    assert sup not in q, q
    assert {r.state.value for r in sweep.rows()} <= {"cancelled", "queued", "running"}
    slurm_limit10.wait_idle(120)


def _sleeper(variant, log_dir, exp_name):
    import time as _time

    _time.sleep(60)
