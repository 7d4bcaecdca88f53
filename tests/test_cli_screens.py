"""The commands' screens as a researcher sees them: at 80×24 on a terminal, at 200
columns, with NO_COLOR, and piped. A 12-run sweep with 4 failures, 3 cancels and one
20,000-line run: every failure named with its reason, `status` on one screen, `logs` of a
failure ending with its traceback, a cancelled run's output without chester's traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from .helpers import CHESTER, make_project, run_chester
from .terminal import Screen, run_on_terminal

FAIL = (2, 5, 8, 11)
CANCEL = (3, 6, 9)
LOUD = 12

JOB = textwrap.dedent(f"""
    import argparse, signal, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--i", type=int)
    p.add_argument("--log_dir")
    p.add_argument("--exp_name")
    i = p.parse_args().i
    if i in {FAIL!r}:
        raise ValueError(f"loss diverged at step {{i * 100}}")
    if i in {CANCEL!r}:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
        try:
            print("training", flush=True)
            time.sleep(600)
        finally:
            print("cleanup: saved a checkpoint", file=sys.stderr, flush=True)
    if i == {LOUD}:
        for k in range(20000):
            print(f"step {{k}} loss {{1 / (k + 1):.6f}}")
    print("done", i)
""")

#: a colour (foreground or background, 16, 256 or true colour) in an SGR sequence
_COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;\d+)*m")


@pytest.fixture
def project(tmp_path):
    p = make_project(tmp_path / "proj", "backends:\n  local: {type: local, max_parallel: 4}\n")
    (p / "job.py").write_text(JOB)
    return p


def _env(tmp_path: Path) -> dict[str, str]:
    return {"CHESTER_SLOTS_DIR": str(tmp_path / "slots")}


def _status(project: Path, ref: str, env: dict[str, str]) -> dict:
    r = run_chester(["status", ref, "--json"], cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _clean(screen: Screen) -> None:
    """No traceback, and no line longer than the terminal (so none wrapped mid-word)."""
    assert "Traceback" not in screen.raw, screen.text
    assert screen.too_wide() == [], screen.too_wide()


def test_a_12_run_sweep_at_80x24(project, tmp_path):
    env = _env(tmp_path)
    waited: dict[str, Screen] = {}

    def launch() -> None:
        waited["screen"] = run_on_terminal(
            ["launch", "--wait", "--style", "argparse", "-p", "big", "--", "python", "job.py",
             "i=range(1,13)"], project, env=env, timeout=240)

    t = threading.Thread(target=launch)
    t.start()
    try:
        # cancel each long run once it runs (it prints "training" first)
        deadline = time.monotonic() + 180
        todo = set(CANCEL)
        while todo:
            assert time.monotonic() < deadline, "the long runs did not start"
            try:
                runs = _status(project, "big", env)["runs"]
            except AssertionError:  # the launch has not recorded the sweep yet
                time.sleep(0.2)
                continue
            for run in runs:
                out = Path(run["log_dir"]) / "stdout.log"
                if run["number"] in todo and run["state"] == "running" and out.exists() \
                        and "training" in out.read_text():
                    c = run_chester(["cancel", f"big:{run['number']}"], cwd=project, env=env)
                    assert c.returncode == 0, c.stderr
                    assert c.stdout.strip() == f"big: cancelled 1 run (big:{run['number']})"
                    todo.discard(run["number"])
            time.sleep(0.2)
    finally:
        if todo:  # the test failed: stop what it started
            run_chester(["cancel", "big", "-y"], cwd=project, env=env)
        t.join(240)
    screen = waited["screen"]
    assert screen.returncode == 1, screen.text  # runs failed
    _clean(screen)
    runs = {r["number"]: r for r in _status(project, "big", env)["runs"]}
    assert sorted(n for n, r in runs.items() if r["state"] == "failed") == list(FAIL)
    assert sorted(n for n, r in runs.items() if r["state"] == "cancelled") == list(CANCEL)
    # the summary screen: every failed run's name and reason, and who cancelled the others
    shown = "\n".join(screen.display)
    for n in FAIL:
        assert f"big:{n}" in shown and runs[n]["name"] in shown, shown
        assert f"ValueError: loss diverged at step {n * 100}" in shown, shown
    assert "3 cancelled by chester cancel at " in shown and "big:3 big:6 big:9" in shown
    assert "chester logs big:2" in shown

    # status fits on one 80x24 screen: names and reasons visible, the title on one line
    st = run_on_terminal(["status", "big"], project, env=env)
    assert st.returncode == 0 and st.fits(), st.text
    _clean(st)
    assert st.display[0].startswith("big · 12 runs on local")
    for r in runs.values():
        assert r["name"] in st.text, st.text
    for n in FAIL:
        assert f"ValueError: loss diverged at step {n * 100}" in st.text
    assert re.search(r"^ +4 failed$", st.text, re.M) and re.search(r"^ +5 succeeded$",
                                                                     st.text, re.M)
    # at 200 columns, with NO_COLOR: the same, more columns, no colour
    wide = run_on_terminal(["status", "big"], project, env={**env, "NO_COLOR": "1"}, cols=200)
    assert wide.fits() and "Host" in wide.text and not _COLOUR.search(wide.raw)
    _clean(wide)
    assert _COLOUR.search(st.raw)  # colour, where it is not turned off

    # logs of a failed run: its output, then the stderr tail ending with the traceback
    logs = run_on_terminal(["logs", "big:2"], project, env=env)
    last = [line for line in logs.display if line.strip()]
    assert last[-1] == "ValueError: loss diverged at step 200", logs.text
    assert "Traceback (most recent call last):" in logs.text and "job.py" in logs.text
    assert "chester.target" not in logs.text
    # only the run's own lines (its traceback's long paths) may be wider than the terminal
    assert all(line.lstrip().startswith('File "') for line in logs.too_wide()), logs.text

    # a cancelled run: the run's cleanup output, chester's one line, no traceback
    err = (Path(runs[3]["log_dir"]) / "stderr.log").read_text()
    assert "Traceback" not in err and "Terminated" not in err, err
    assert "cleanup: saved a checkpoint" in err
    assert err.strip().splitlines()[-1].startswith("chester: cancelled by chester cancel at ")
    assert runs[3]["reason"].startswith("cancelled by chester cancel at ")

    # the 20,000-line run: all of it through logs, piped
    loud = run_chester(["logs", f"big:{LOUD}"], cwd=project, env=env)
    lines = loud.stdout.splitlines()
    assert len(lines) == 20001 and lines[-1] == f"done {LOUD}" and loud.stderr == ""

    # piped status: pure tab-separated values, the reasons in their column
    piped = run_chester(["status", "big"], cwd=project, env=env)
    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert rows[0][:8] == ["sweep", "number", "run", "launch", "backend", "attempt", "state",
                           "reason"]
    assert len(rows) == 13 and {len(r) for r in rows} == {len(rows[0])}
    assert rows[2][6:8] == ["failed", "ValueError: loss diverged at step 200"]


def test_a_piped_wait_says_how_it_goes(project, tmp_path):
    """Not on a terminal: a plain progress line at the start (then at most every 10 s),
    and the summary naming the failure."""
    env = _env(tmp_path)
    r = run_chester(["launch", "--wait", "--style", "argparse", "-p", "pip",
                     "--", "python", "job.py", "i=1,2"], cwd=project, env=env,
                    timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    progress = [line for line in lines if " elapsed" in line]
    assert progress and re.match(r"^pip@\d+: \d/2 ended \(.*\), \d+s elapsed$", progress[0])
    assert "Traceback" not in r.stdout + r.stderr and "\x1b" not in r.stdout
    summary = lines[lines.index(next(x for x in lines if x.startswith("pip: ")))]
    assert summary.startswith("pip: 1 failed, 1 succeeded in ")
    assert any("pip:2" in x and "ValueError: loss diverged at step 200" in x for x in lines)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"}


def _launch(project, env, prefix: str, values: str) -> None:
    """``chester launch -p PREFIX -- python job.py VALUES`` (not waiting); it must succeed."""
    r = run_chester(["launch", "--style", "argparse", "-p", prefix, "--", "python", "job.py",
                     values], cwd=project, env=env, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_bare_cancel_asks_on_a_terminal_and_refuses_when_piped(project, tmp_path):
    env = _env(tmp_path)
    _launch(project, env, "ask", "i=3,6")
    piped = run_chester(["cancel"], cwd=project, env=env)
    assert piped.returncode == 2 and piped.stderr.count("\n") == 1, piped.stderr
    assert "chester cancel ask" in piped.stderr and "2 " in piped.stderr
    assert {x["state"] for x in _status(project, "ask", env)["runs"]} <= {"queued", "running"}
    no = run_on_terminal(["cancel"], project, env=env, answer="n\r")
    assert "cancel sweep 'ask' (" in no.text and "ask:1, ask:2" in no.text, no.text
    assert "nothing cancelled" in no.text
    assert {x["state"] for x in _status(project, "ask", env)["runs"]} <= {"queued", "running"}
    yes = run_on_terminal(["cancel"], project, env=env, answer="y\r")
    assert yes.returncode == 0 and "ask: cancelled 2 runs (ask:1, ask:2)" in yes.text, yes.text
    assert {x["state"] for x in _status(project, "ask", env)["runs"]} == {"cancelled"}
    again = run_chester(["cancel", "ask:1"], cwd=project, env=env)
    assert again.stdout.strip() == "ask: nothing to cancel: 1_ask_i_3 had already ended " \
                                   "(cancelled)", again.stdout


def test_sweeps_shows_states_as_they_are_now(project, tmp_path):
    """`chester sweeps` asks the backends about unfinished runs: runs that ended since the
    last look read as ended, not queued."""
    env = _env(tmp_path)
    _launch(project, env, "fresh", "i=1,4")
    folder = project / "data" / "train" / "fresh"
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*/.done"))) < 2:  # both ended; the store has not looked
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)  # let the workers' ends settle (they wrote .done before exiting)
    stale = json.loads(run_chester(["sweeps", "--json", "--no-refresh"], cwd=project,
                                   env=env).stdout)
    assert stale[0]["states"] == {"queued": 2} and stale[0]["stale"] is True
    out = json.loads(run_chester(["sweeps", "--json"], cwd=project, env=env).stdout)
    assert out[0]["states"] == {"succeeded": 2} and out[0]["stale"] is False
    table = run_chester(["sweeps"], cwd=project, env=env).stdout
    assert table.splitlines()[0].startswith("Sweep\tLaunches")  # piped: no title line
    assert "\t2 succeeded\t" in table


def test_the_smaller_things(project, tmp_path):
    """A State prints as its value; a traceback of the launching script's function names
    the script; config hides the refused keys; plugins --verbose says a default once."""
    env = _env(tmp_path)
    (project / "go.py").write_text(textwrap.dedent("""
        import chester

        def train(variant, log_dir, exp_name):
            if variant["i"]:
                raise RuntimeError("boom")

        sweep = chester.launch(train, [{"i": 0}, {"i": 1}], exp_prefix="small")
        print(sweep.wait(progress=False, timeout=120))
    """))
    r = subprocess.run([sys.executable, "go.py"], cwd=project, capture_output=True, text=True,
                       timeout=180, env={**_base_env(), **env})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{'1_small_i_0': 'succeeded', '2_small_i_1': 'failed'}"
    logs = run_chester(["logs", "small:2", "--stderr"], cwd=project, env=env)
    assert f'File "{project / "go.py"}", line 6, in train' in logs.stdout, logs.stdout
    assert "<dynamic-code>" not in logs.stdout and "chester/target" not in logs.stdout
    cfg = run_chester(["config"], cwd=project, env=env).stdout
    # refused legacy keys are not listed (remote_log_dir is accepted, where it says where runs go)
    assert "gpu_state_dir" not in cfg and "log_dir" in cfg
    plugins = run_chester(["plugins", "list", "--verbose"], cwd=project, env=env).stdout
    assert not [line for line in plugins.splitlines() if line.count("default") > 1]
    assert "max_parallel: runs at once (default: GPUs if any, else cores)" in plugins
    status = run_chester(["status", "small:2"], cwd=project, env=env).stdout
    assert "state:         failed" in status and "RuntimeError: boom" in status
    wrong = run_chester(["logs", "2_smal_i_1"], cwd=project, env=env)
    assert wrong.returncode == 2 and "nearest: 2_small_i_1" in wrong.stderr
    typo = run_chester(["stauts"], cwd=project, env=env)
    assert typo.returncode == 2 and "did you mean 'status'?" in typo.stderr


def test_ctrl_c_says_the_runs_go_on(project, tmp_path):
    env = _env(tmp_path)
    _launch(project, env, "bye", "i=3")
    import signal

    p = subprocess.Popen([*CHESTER, "monitor", "bye"], cwd=project, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**_base_env(), **env})
    try:
        first = p.stdout.readline()  # piped: a progress line at once
        assert first.startswith("bye: 0/1 ended ("), first
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        run_chester(["cancel", "bye"], cwd=project, env=env)
    assert p.returncode == 130
    assert err.strip() == "chester: stopped waiting; the runs go on without this command. " \
                          "Watch them: chester status bye  |  chester monitor bye", err
