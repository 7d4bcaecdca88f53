"""Launching again, at once, after a loss: every variant runs once (local backend, real
processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from .helpers import make_project, run_chester

RACE = textwrap.dedent("""
    import os, sys, time
    import chester
    from chester import store

    # widen the window between "is there such a sweep?" and "make it"
    _find = store.Store.find_resumable
    def slow_find(self, *a, **kw):
        found = _find(self, *a, **kw)
        time.sleep(0.3)
        return found
    store.Store.find_resumable = slow_find

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "ran.txt"), "a") as f:
            f.write("x\\n")

    go = float(sys.argv[1])
    time.sleep(max(0.0, go - time.time()))
    chester.launch(train, [{"i": i} for i in range(3)], exp_prefix="race")
""")


@pytest.fixture
def project(tmp_path, monkeypatch):
    p = make_project(tmp_path / "proj", "backends:\n  local:\n    type: local\n    max_parallel: 2\n")
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    return p


def _status(project, prefix, *extra):
    r = run_chester(["status", "--json", *extra, prefix], cwd=project)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_two_launchers_of_one_sweep_at_once_make_one_sweep(project):
    import time

    (project / "race.py").write_text(RACE)
    go = str(time.time() + 2.0)
    procs = [subprocess.Popen([sys.executable, "race.py", go], cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    sweeps = _status(project, "race", "--all", "--no-refresh")
    sweeps = sweeps if isinstance(sweeps, list) else [sweeps]
    assert len(sweeps) == 1, [s["sweep_id"] for s in sweeps]
    r = run_chester(["monitor", "race", "--interval", "0.2", "--timeout", "60"], cwd=project)
    assert r.returncode == 0, (r.stdout, r.stderr)
    ran = list((project / "data" / "train" / "race").glob("*/ran.txt"))
    assert len(ran) == 3 and all(f.read_text() == "x\n" for f in ran)


LOSSY = textwrap.dedent("""
    import os, sys, time
    import chester

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "ran.txt"), "a") as f:
            f.write(f"{os.environ.get('CHESTER_ATTEMPT', '')}{variant['i']}\\n")
        flaky = os.path.join(log_dir, "flaky-once")
        if variant.get("flaky") and not os.path.exists(flaky):
            open(flaky, "w").close()
            raise RuntimeError("flaky")
        time.sleep(variant["sleep"])

    resume = sys.argv[1] if len(sys.argv) > 1 else "auto"
    chester.launch(train, [{"i": 0, "sleep": 2}, {"i": 1, "sleep": 0, "flaky": True},
                           {"i": 2, "sleep": 0}, {"i": 3, "sleep": 0}],
                   exp_prefix="lossy", resume=resume)
""")


def _lose_the_queue(project):
    """Launch 4 runs one at a time and SIGKILL the host's queue runner while the first runs."""
    import signal
    import time

    (project / "lossy.py").write_text(LOSSY)
    (project / "chester.yaml").write_text("backends:\n  local:\n    type: local\n"
                                          "    max_parallel: 1\n")
    r = subprocess.run([sys.executable, "lossy.py"], cwd=project, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first = project / "data" / "train" / "lossy" / "1_lossy_i_0_sleep_2"
    deadline = time.monotonic() + 30
    while not (first / ".chester" / "status.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner = json.loads((first / ".chester" / "queued.json").read_text())["runner_pid"]
    os.kill(runner, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        st = _status(project, "lossy")
        if st["runs"][0]["state"] == "succeeded":
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    assert [r["state"] for r in st["runs"]] == ["succeeded", "lost", "lost", "lost"], st
    return st


def _ran(project):
    return {d.name: d.joinpath("ran.txt").read_text().split()
            for d in sorted((project / "data" / "train" / "lossy").iterdir())
            if d.joinpath("ran.txt").exists()}


def test_relaunch_submits_lost_runs_again_and_leaves_succeeded_ones(project):
    _lose_the_queue(project)
    # running the launch again as it was does nothing: those runs were submitted
    r = subprocess.run([sys.executable, "lossy.py"], cwd=project, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [x["state"] for x in _status(project, "lossy")["runs"]][1:] == ["lost"] * 3
    r = run_chester(["relaunch", "lossy"], cwd=project)
    assert r.returncode == 0, r.stderr
    assert "submitted 3 lost runs again" in r.stdout
    m = run_chester(["monitor", "lossy", "--interval", "0.2", "--timeout", "60"], cwd=project)
    st = _status(project, "lossy")
    assert [x["state"] for x in st["runs"]] == ["succeeded", "failed", "succeeded",
                                                "succeeded"], (st, m.stdout, m.stderr)
    assert [x["attempt"] for x in st["runs"]] == [1, 2, 2, 2]
    ran = _ran(project)
    assert [len(v) for v in ran.values()] == [1, 1, 1, 1], ran
    # failed runs only on request
    r = run_chester(["relaunch", "lossy"], cwd=project)
    assert r.returncode == 0 and "no lost runs" in r.stdout
    r = run_chester(["relaunch", "lossy", "--failed"], cwd=project)
    assert r.returncode == 0 and "submitted 1 " in r.stdout, r.stdout
    m = run_chester(["monitor", "lossy", "--interval", "0.2", "--timeout", "60"], cwd=project)
    assert m.returncode == 0, (m.stdout, m.stderr)
    st = _status(project, "lossy")
    assert [x["state"] for x in st["runs"]] == ["succeeded"] * 4
    assert [len(v) for v in _ran(project).values()] == [1, 2, 1, 1]


def test_launch_with_resume_retry_submits_lost_runs_again(project):
    _lose_the_queue(project)
    r = subprocess.run([sys.executable, "lossy.py", "retry-failed"], cwd=project,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = run_chester(["monitor", "lossy", "--interval", "0.2", "--timeout", "60"], cwd=project)
    st = _status(project, "lossy")
    assert [x["state"] for x in st["runs"]] == ["succeeded", "failed", "succeeded",
                                                "succeeded"], (st, m.stdout)
    r = subprocess.run([sys.executable, "lossy.py", "retry-failed"], cwd=project,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = run_chester(["monitor", "lossy", "--interval", "0.2", "--timeout", "60"], cwd=project)
    assert m.returncode == 0, (m.stdout, m.stderr)
    assert [len(v) for v in _ran(project).values()] == [1, 2, 1, 1]
    assert len(json.loads(run_chester(["status", "--all", "--json", "lossy"],
                                      cwd=project).stdout)) == 1


def test_ctrl_c_ends_logs_follow_quietly(project):
    import select
    import signal

    (project / "talk.py").write_text(textwrap.dedent("""
        import time, chester
        def train(v, d, n):
            for i in range(100):
                print("tick", i, flush=True)
                time.sleep(0.2)
        chester.launch(train, [{}], exp_prefix="talk")
    """))
    subprocess.run([sys.executable, "talk.py"], cwd=project, check=True, capture_output=True)
    name = _status(project, "talk")["runs"][0]["name"]
    p = subprocess.Popen([sys.executable, "-m", "chester.cli", "logs", "-f", name], cwd=project,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ctrl-C once it follows: it has printed the run's first line
    assert select.select([p.stdout], [], [], 30)[0], "chester logs -f printed nothing"
    first = p.stdout.readline()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "tick 0" in first + out and err == ""
    run_chester(["cancel", "talk"], cwd=project)


def test_a_function_from_a_module_beside_a_script_in_a_subfolder_runs(project):
    scripts = project / "scripts"
    scripts.mkdir()
    (scripts / "helpers.py").write_text(textwrap.dedent("""
        import os

        SCALE = 3

        class Cfg:
            def __init__(self, lr):
                self.lr = lr

        def train(variant, log_dir, exp_name):
            with open(os.path.join(log_dir, "out.txt"), "w") as f:
                f.write(str(variant["cfg"].lr * SCALE))
    """))
    (scripts / "go.py").write_text(textwrap.dedent("""
        import chester
        from helpers import Cfg, train
        chester.launch(train, [{"cfg": Cfg(2)}], exp_prefix="beside")
    """))
    r = subprocess.run([sys.executable, "scripts/go.py"], cwd=project, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = run_chester(["monitor", "beside", "--interval", "0.2", "--timeout", "60"], cwd=project)
    st = _status(project, "beside")
    assert st["runs"][0]["state"] == "succeeded", (st, m.stdout)
    out = next((project / "data" / "train" / "beside").glob("*/out.txt"))
    assert out.read_text() == "6"
