"""Launching again, at once, after a loss: every variant runs once (local backend, real
processes)."""

from __future__ import annotations

import json
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
