"""The local backend end to end, driven the way a researcher drives it: scripts and the CLI."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chester.rundir import pid_alive
from chester.testing import HOSTILE_VALUES

from .helpers import CHESTER, SEED_EXAMPLE, make_project, run_chester, run_seed_example

LAUNCHER = """
import json, os, sys, time
import chester

def train(variant, log_dir, exp_name):
    with open(os.path.join(log_dir, "invocations.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    if variant.get("fail"):
        raise RuntimeError("loss went to NaN at step " + str(variant["i"]))
    time.sleep(variant.get("sleep", 0))
    with open(os.path.join(log_dir, "out.json"), "w") as f:
        json.dump(dict(variant), f)

variants = json.loads(sys.argv[1])
prefix = sys.argv[2] if len(sys.argv) > 2 else "e2e"
sweep = chester.launch(train, variants, exp_prefix=prefix)
print("LAUNCHED", len(sweep.runs), flush=True)
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    p = make_project(tmp_path / "proj", "backends:\n  local:\n    type: local\n    max_parallel: 2\n")
    (p / "launch.py").write_text(LAUNCHER)
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    return p


def _launch(project, variants, prefix="e2e", timeout=60):
    return subprocess.run([sys.executable, "launch.py", json.dumps(variants), prefix],
                          cwd=project, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ})


def _status(project, prefix=None):
    r = run_chester(["status", "--json", *([prefix] if prefix else [])], cwd=project)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait_status(project, prefix, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        st = _status(project, prefix)
        if all(r["state"] in ("succeeded", "failed", "cancelled", "lost") for r in st["runs"]):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.3)


def test_launcher_exits_and_a_new_shell_sees_the_runs_finish(project):
    r = _launch(project, [{"i": i, "sleep": 2} for i in range(4)])
    assert r.returncode == 0, r.stderr
    assert "LAUNCHED 4" in r.stdout
    first = _status(project, "e2e")
    assert any(run["state"] in ("queued", "running") for run in first["runs"]), first
    final = _wait_status(project, "e2e")
    assert [run["state"] for run in final["runs"]] == ["succeeded"] * 4
    for run in final["runs"]:
        out = json.loads((Path(run["log_dir"]) / "out.json").read_text())
        assert out["i"] == int(run["name"].split("_")[0]) - 1
    # the table form, piped: tab-separated values, a run a line
    table = run_chester(["status", "e2e"], cwd=project)
    assert [line.split("\t")[6] for line in table.stdout.splitlines()[1:]] == ["succeeded"] * 4


def test_a_run_that_raises_is_failed_with_the_exception(project):
    assert _launch(project, [{"i": 0}, {"i": 7, "fail": True}], "fails").returncode == 0
    st = _wait_status(project, "fails")
    states = {r["name"]: r for r in st["runs"]}
    bad = [r for r in st["runs"] if r["state"] == "failed"]
    assert len(bad) == 1 and len(states) == 2
    assert "RuntimeError: loss went to NaN at step 7" in bad[0]["reason"]
    assert "loss went to NaN" in bad[0]["stderr_tail"]
    table = run_chester(["status", "fails"], cwd=project)
    assert "\tfailed\tRuntimeError: loss went to NaN at step 7\t" in table.stdout
    logs = run_chester(["logs", bad[0]["name"], "--stderr"], cwd=project)
    assert "Traceback" in logs.stdout and "RuntimeError" in logs.stdout
    # its stdout, then the last lines of its stderr (on stderr): the traceback at the end
    logs = run_chester(["logs", "fails:2"], cwd=project)
    assert logs.returncode == 0 and "Traceback" not in logs.stdout
    assert logs.stderr.rstrip().endswith("RuntimeError: loss went to NaN at step 7")


def test_cancel_leaves_no_process_behind(project):
    (project / "sleeper.py").write_text(textwrap.dedent("""
        import json, os, subprocess, sys, time
        import chester

        def train(variant, log_dir, exp_name):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            grandchild_src = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); print(p.pid, flush=True); time.sleep(300)"
            g = subprocess.Popen([sys.executable, "-c", grandchild_src], stdout=subprocess.PIPE, text=True)
            gpid = int(g.stdout.readline())
            with open(os.path.join(log_dir, "pids.json"), "w") as f:
                json.dump([os.getpid(), child.pid, g.pid, gpid], f)
            time.sleep(300)

        chester.launch(train, [{"i": 0}, {"i": 1}, {"i": 2}], exp_prefix="cancelme")
    """))
    r = subprocess.run([sys.executable, "sleeper.py"], cwd=project, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    batch = project / "data" / "train" / "cancelme"
    deadline = time.monotonic() + 30
    while len(list(batch.glob("*/pids.json"))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(0.3)
    pids = [pid for f in batch.glob("*/pids.json") for pid in json.loads(f.read_text())]
    assert all(pid_alive(p) for p in pids)
    c = run_chester(["cancel", "cancelme"], cwd=project)
    assert c.returncode == 0 and "cancelled 3 runs" in c.stdout, (c.stdout, c.stderr)
    st = _wait_status(project, "cancelme", timeout=30)
    assert [r["state"] for r in st["runs"]] == ["cancelled"] * 3
    for p in pids:
        assert not pid_alive(p), f"process {p} survived cancel"
    # the queued third run never started
    third = next(r for r in st["runs"] if r["name"].startswith("3_"))
    assert not (Path(third["log_dir"]) / "pids.json").exists()


@pytest.mark.parametrize("delay", [0.05, 0.25, 0.4, 0.6, 0.9])
def test_launcher_killed_at_any_point_then_rerun_runs_each_variant_once(project, delay):
    variants = [{"i": i} for i in range(12)]
    p = subprocess.Popen([sys.executable, "launch.py", json.dumps(variants), "crash"],
                         cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = _launch(project, variants, "crash")
    assert r.returncode == 0, r.stderr
    st = _wait_status(project, "crash")
    done = {}
    for run in st["runs"]:
        assert run["state"] == "succeeded", run
        d = Path(run["log_dir"])
        assert (d / "invocations.txt").read_text().count("\n") == 1, run["name"]
        done[json.loads((d / "out.json").read_text())["i"]] = run["name"]
    assert sorted(done) == list(range(12))
    # and no run folder outside the store ran anything
    all_dirs = list((project / "data" / "train" / "crash").glob("*/invocations.txt"))
    assert len(all_dirs) == 12


def test_two_launchers_at_once_do_not_collide(project):
    procs = [subprocess.Popen([sys.executable, "launch.py", json.dumps([{"i": i, "who": w}
                                                                     for i in range(5)]), "both"],
                              cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for w in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    r = run_chester(["status", "--all", "--json", "both"], cwd=project)
    sweeps = json.loads(r.stdout)
    assert len(sweeps) == 2
    names = [run["name"] for s in sweeps for run in s["runs"]]
    assert len(set(names)) == 10
    numbers = sorted(int(n.split("_")[0]) for n in names)
    assert numbers == list(range(1, 11))
    deadline = time.monotonic() + 60
    while True:
        sweeps = json.loads(run_chester(["status", "--all", "--json", "both"], cwd=project).stdout)
        if all(run["state"] == "succeeded" for s in sweeps for run in s["runs"]):
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_run_experiment_lite_hostile_values_and_blocking_default(project):
    (project / "seed.py").write_text(textwrap.dedent("""
        import json, os, sys
        from chester.run_exp import run_experiment_lite, VariantGenerator
        from chester.testing import HOSTILE_VALUES

        def train(variant, log_dir, exp_name):
            with open(os.path.join(log_dir, "got.json"), "w") as f:
                json.dump({k: variant[k] for k in HOSTILE_VALUES}, f)

        vg = VariantGenerator()
        for k, v in HOSTILE_VALUES.items():
            vg.add(k, [v])
        vg.add("seed", [1, 2])
        for v in vg.variants():
            run_experiment_lite(stub_method_call=train, variant=v, variations=vg.variations(),
                                exp_prefix="seedapi", mode="local")
            # the seed's default wait_subprocess=True: the run is over when the call returns
            print("DONE", len(os.listdir(os.path.join("data", "train", "seedapi"))), flush=True)
    """))
    r = subprocess.run([sys.executable, "seed.py"], cwd=project, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    st = _status(project, "seedapi")  # the sweep: every launch under the prefix
    assert [run["state"] for run in st["runs"]] == ["succeeded"] * 2
    st_all = json.loads(run_chester(["status", "--all", "--json", "seedapi"], cwd=project).stdout)
    runs = [run for s in st_all for run in s["runs"]]
    assert len(runs) == 2 and all(run["state"] == "succeeded" for run in runs)
    for run in runs:
        got = json.loads((Path(run["log_dir"]) / "got.json").read_text())
        assert got == HOSTILE_VALUES
    assert not Path("/tmp/chester-pwned").exists()


def test_the_seed_example_shows_all_its_runs_under_its_prefix(project):
    st = run_seed_example(project, "local")
    # each call ran its variant and waited, as the seed did: four launches of one run
    assert len(st["sweep_ids"]) == 4
    first = _status(project, f"my_experiment@{st['sweep_ids'][0]}")
    assert [run["name"] for run in first["runs"]] == ["1_my_experiment"]
    assert first["ref"] == f"my_experiment@{st['sweep_ids'][0]}"
    table = run_chester(["status", "my_experiment"], cwd=project).stdout
    rows = [line.split("\t") for line in table.splitlines()]
    assert [(r[1], r[3], r[6]) for r in rows[1:]] == [
        (str(n), str(sid), "succeeded") for n, sid in zip(range(1, 5), st["sweep_ids"],
                                                         strict=True)]
    # the runs are already home: auto_pull starts no monitor for this machine
    assert not (project / ".chester" / "monitor").exists()
    assert "nothing to monitor" in run_chester(["monitor", "my_experiment"], cwd=project).stdout


def test_a_launch_failing_when_the_script_ends_says_why_in_one_line(project):
    (project / "chester.yaml").write_text("backends:\n  box:\n    type: ssh\n    host: h\n"
                                          "    remote_dir: /r\n    max_paralel: 2\n")
    (project / "seed.py").write_text(SEED_EXAMPLE.replace("mode='local'", "mode='box'"))
    r = subprocess.run([sys.executable, "seed.py"], cwd=project, capture_output=True,
                       text=True, timeout=60)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("chester: error: ") and "backends.box.max_paralel" in r.stderr


def test_a_prefix_names_every_launch_and_prefix_at_n_one(project):
    assert _launch(project, [{"i": 0, "sleep": 60}, {"i": 1, "sleep": 60}], "exp").returncode == 0
    assert _launch(project, [{"i": 2, "sleep": 60}], "exp").returncode == 0
    st = _status(project, "exp")
    first, second = st["sweep_ids"]
    assert [r["number"] for r in st["runs"]] == [1, 2, 3]
    assert [r["sweep_id"] for r in st["runs"]] == [first, first, second]
    assert [r["name"] for r in _status(project, f"exp@{second}")["runs"]] == ["3_exp"]
    # running the first launch again reattaches to it: nothing new is submitted
    again = _launch(project, [{"i": 0, "sleep": 60}, {"i": 1, "sleep": 60}], "exp")
    assert again.returncode == 0 and "LAUNCHED 2" in again.stdout
    assert _status(project, "exp")["sweep_ids"] == [first, second]
    # one launch, then the rest of the sweep
    c = run_chester(["cancel", f"exp@{second}"], cwd=project)
    assert c.stdout.strip() == f"exp@{second}: cancelled 1 run (exp:3)", c.stderr
    c = run_chester(["cancel", "exp"], cwd=project)
    assert c.stdout.strip() == "exp: cancelled 2 runs (exp:1, exp:2)", c.stderr
    st = _wait_status(project, "exp", timeout=30)
    assert [r["state"] for r in st["runs"]] == ["cancelled"] * 3
    per_launch = json.loads(run_chester(["status", "--all", "--json", "exp"], cwd=project).stdout)
    assert [len(s["runs"]) for s in per_launch] == [2, 1]
    for ref, message in ((f"exp@{second + 5}", f"sweep 'exp' has no launch {second + 5}; "
                          f"its launches are {first}-{second}"),
                         ("nosuch@1", "no sweep named 'nosuch'"),
                         ("nosuch", "no sweep named 'nosuch'")):
        for cmd in ("status", "pull", "cancel", "monitor"):
            r = run_chester([cmd, ref], cwd=project)
            assert r.returncode == 2 and r.stderr.count("\n") == 1, (cmd, r.stderr)
            assert message in r.stderr, (cmd, r.stderr)


def test_logs_follow_streams_until_the_run_ends(project):
    (project / "talk.py").write_text(textwrap.dedent("""
        import time, chester
        def train(v, d, n):
            for i in range(5):
                print("tick", i, flush=True)
                time.sleep(0.3)
        chester.launch(train, [{}], exp_prefix="talk")
    """))
    subprocess.run([sys.executable, "talk.py"], cwd=project, check=True, capture_output=True)
    name = _status(project, "talk")["runs"][0]["name"]
    r = run_chester(["logs", "-f", name], cwd=project, timeout=60)
    assert r.returncode == 0
    assert [line for line in r.stdout.splitlines() if line.startswith("tick")] == \
        [f"tick {i}" for i in range(5)]


def _line_on(pipe, timeout: float) -> str:
    """The next line a child writes on ``pipe``, waiting at most ``timeout`` seconds."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(pipe, selectors.EVENT_READ)
        assert sel.select(timeout), f"no line in {timeout} s"
    return pipe.readline()


def test_logs_follow_says_it_waits_for_a_queued_run_and_how_it_ended(project, tmp_path):
    """``chester logs -f`` on a run still queued behind another (one slot) says on stderr
    that it waits, streams the run's output on stdout once it starts, and ends with the
    run's final state on stderr. The first run holds the slot until the follower has said
    that it waits."""
    (project / "chester.yaml").write_text("backends:\n  local:\n    type: local\n"
                                          "    max_parallel: 1\n")
    (project / "queued.py").write_text(textwrap.dedent("""
        import os, sys, time, chester
        def train(v, d, n):
            deadline = time.time() + 60  # the first run holds the slot until the gate opens
            while v["i"] == 0 and not os.path.exists(v["gate"]) and time.time() < deadline:
                time.sleep(0.05)
            for k in range(3):
                print("run", v["i"], "line", k, flush=True)
        chester.launch(train, [{"i": i, "gate": sys.argv[1]} for i in range(2)],
                       exp_prefix="slot")
    """))
    gate = tmp_path / "gate"
    subprocess.run([sys.executable, "queued.py", str(gate)], cwd=project, check=True,
                   capture_output=True, timeout=60)
    runs = _status(project, "slot")["runs"]
    second = runs[1]["name"]
    assert runs[1]["state"] == "queued", runs
    env = dict(os.environ)
    env.pop("CHESTER_CONFIG_PATH", None)
    follower = subprocess.Popen([*CHESTER, "logs", "-f", second], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = _line_on(follower.stderr, 60)
        assert waiting.startswith(f"chester: {second} (slot:2) has not started (queued"), \
            waiting
        assert "its output follows when it does" in waiting, waiting
        assert follower.poll() is None
        gate.touch()
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
        gate.touch()
    assert follower.returncode == 0, err
    assert out.splitlines() == [f"run 1 line {k}" for k in range(3)], out
    assert err.splitlines()[-1] == f"chester: {second} (slot:2) succeeded", err
    assert [r["state"] for r in _wait_status(project, "slot")["runs"]] == ["succeeded"] * 2


def test_cli_user_errors_are_one_line_exit_2(project, tmp_path):
    r = run_chester(["logs", "no-such-run"], cwd=project)
    assert r.returncode == 2 and "no job store" in r.stderr  # and none was made
    assert not (project / ".chester").exists()
    from chester.store import Store

    Store(project / ".chester" / "jobs.db").close()
    r = run_chester(["logs", "no-such-run"], cwd=project)
    assert r.returncode == 2 and "no run 'no-such-run'" in r.stderr
    empty = make_project(tmp_path / "empty")
    r = run_chester(["status"], cwd=empty)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no job store" in r.stderr
    r = run_chester(["--version"], cwd=empty)
    assert r.stdout.startswith("chester 0.") and "local-" in r.stdout


def test_monitor_waits_for_every_unfinished_sweep(project):
    assert _launch(project, [{"i": i, "sleep": 1} for i in range(3)], "mon-a").returncode == 0
    assert _launch(project, [{"i": 9, "fail": True}], "mon-b").returncode == 0
    r = run_chester(["monitor", "--interval", "0.3"], cwd=project, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)  # one run failed
    assert "mon-a: 3 succeeded" in r.stdout and "mon-b: 1 failed" in r.stdout
    again = run_chester(["monitor"], cwd=project)
    assert again.returncode == 0 and "nothing to monitor" in again.stdout
    import subprocess as sp

    seed_form = sp.run([sys.executable, "-m", "chester.auto_pull", "--once"], cwd=project,
                       capture_output=True, text=True)
    assert seed_form.returncode == 0 and "nothing to monitor" in seed_form.stdout


def test_help_lists_the_commands(project):
    r = run_chester(["--help"], cwd=project)
    for cmd in ("plugins", "config", "status", "logs", "cancel", "pull", "monitor", "relaunch"):
        assert cmd in r.stdout
    r = run_chester(["status", "--help"], cwd=project)
    assert "--json" in r.stdout
