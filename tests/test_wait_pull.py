"""``pulled`` means the files are home; waiting ends when nothing is left to wait for."""

from __future__ import annotations

import shutil
import time

import pytest

from chester.launcher import launch

from .helpers import run_chester


def _noop(variant, log_dir, exp_name):
    return None


def _sleepy(variant, log_dir, exp_name):
    time.sleep(variant["sleep"])


@pytest.fixture
def env(local_env):
    return local_env


def test_a_run_whose_files_are_gone_is_not_called_pulled(env):
    sweep = launch(_noop, [{"i": i} for i in range(3)], exp_prefix="gone", config=env.config)
    sweep.wait(pull=False, timeout=60, poll_interval=0.2, progress=False)
    shutil.rmtree(sweep.runs[1].log_dir)
    r = run_chester(["pull", "gone"], cwd=env.project)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "gone: 2 runs already here" in r.stdout
    assert "1 runs did not arrive" in r.stderr and sweep.runs[1].name in r.stderr
    assert [run.pulled for run in sweep.runs] == [True, False, True]
    # waiting retries it a few polls, then returns with the run still unpulled
    t0 = time.monotonic()
    states = sweep.wait(pull=True, timeout=30, poll_interval=0.1, progress=False)
    assert time.monotonic() - t0 < 10 and len(states) == 3
    assert [run.pulled for run in sweep.runs] == [True, False, True]
    m = run_chester(["monitor", "gone", "--interval", "0.1"], cwd=env.project)
    assert m.returncode == 1 and "1 not pulled" in m.stdout, (m.stdout, m.stderr)


def test_monitor_ends_on_runs_never_submitted(env):
    from chester.store import Store

    # a launch that stopped after recording its runs, before submitting any
    Store(env.config.store_path).create_sweep(
        exp_prefix="dry", backend="local", batch_dir=env.project / "data" / "train" / "dry",
        fingerprint="f", runs=[{"suffix": "a"}, {"suffix": "b"}])
    r = run_chester(["monitor", "dry", "--interval", "0.1"], cwd=env.project, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "nothing to monitor" in r.stdout
    r = run_chester(["monitor", "--interval", "0.1"], cwd=env.project, timeout=30)
    assert r.returncode == 0 and "nothing to monitor" in r.stdout
    from chester.sweeps import sweep as reattach

    t0 = time.monotonic()
    states = reattach("dry", config=env.config).wait(timeout=5, poll_interval=0.1,
                                                     progress=False)
    assert time.monotonic() - t0 < 3
    assert [s.value for s in states.values()] == ["pending", "pending"]


def test_monitor_timeout_is_one_line(env):
    launch(_sleepy, [{"sleep": 30}], exp_prefix="slow", config=env.config)
    r = run_chester(["monitor", "slow", "--interval", "0.1", "--timeout", "1"], cwd=env.project)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "not finished after 1s" in r.stderr
    assert "Traceback" not in r.stderr
    run_chester(["cancel", "slow"], cwd=env.project)
