"""A worker forked from the queue runner is what a new interpreter would be when the run's
code starts: the same descriptors, argv, ``sys.path``, ``__main__``, working folder,
environment, session and signal handlers, and it ends as an interpreter ends (threads
joined, ``atexit`` handlers run). Checked by running the same probe both ways
(``CHESTER_WORKER_START=exec`` gives every worker a new interpreter) from a launcher
script in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chester.target import runner

from .helpers import make_project

LAUNCHER = """
import sys
import chester
from probe import probe

chester.launch(probe, [{"i": 0}, {"i": 1}], exp_prefix=sys.argv[1])
"""

PROBE = """
import atexit, json, os, random, signal, sys, threading, time

def probe(variant, log_dir, exp_name):
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    seen = {
        "fds": fds,
        "argv": sys.argv,
        "path": sys.path,
        "main": sorted(vars(sys.modules["__main__"])),
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k != "CHESTER_WORKER_START"},
        "own_session": os.getsid(0) == os.getpid() == os.getpgrp(),
        "signals": {s.name: getattr(signal.getsignal(s), "__qualname__",
                                    repr(signal.getsignal(s))) for s in
                    (signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD, signal.SIGHUP,
                     signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1)},
        "stdout": [sys.stdout.fileno(), sys.stdout.line_buffering, sys.stdout.encoding,
                   os.path.realpath("/proc/self/fd/1")],
        "stdin": os.path.realpath("/proc/self/fd/0"),
        "flags": list(sys.flags),
        "random": random.random(),
        # a fork keeps the command line it was forked with (the runner's)
        "forked": "chester.target.runner" in open("/proc/self/cmdline").read().split("\\0"),
        "parent_is_runner": open(f"/proc/{os.getppid()}/cmdline").read().count("runner") > 0,
    }
    with open(os.path.join(log_dir, "seen.json"), "w") as f:
        json.dump(seen, f)

    def late():  # a thread the run leaves running: the interpreter waits for it
        time.sleep(0.3)
        open(os.path.join(log_dir, "thread.txt"), "w").write("joined")

    threading.Thread(target=late).start()
    atexit.register(lambda: open(os.path.join(log_dir, "atexit.txt"), "w").write("ran"))
    print("out of the run", variant["i"])
"""

CONFIG = """\
backends:
  local:
    type: local
    max_parallel: 2
    gpus: ["7", "9"]
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    p = make_project(tmp_path / "proj", CONFIG)
    (p / "launch.py").write_text(LAUNCHER)
    (p / "probe.py").write_text(PROBE)
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    return p


def _run_both(project: Path, prefix: str, start: str) -> list[dict]:
    env = {**os.environ, "CHESTER_WORKER_START": start}
    r = subprocess.run([sys.executable, "launch.py", prefix], cwd=project, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 60
    runs: list[Path] = []
    while time.monotonic() < deadline:
        runs = sorted((project / "data").glob(f"*/{prefix}/*_{prefix}_*"))
        if len(runs) == 2 and all((d / ".chester" / "exit.json").exists() for d in runs):
            break
        time.sleep(0.1)
    assert len(runs) == 2, runs
    seen = []
    for d in runs:
        status = json.loads((d / ".chester" / "status.json").read_text())
        assert status["state"] == "succeeded", status
        assert json.loads((d / ".chester" / "exit.json").read_text())["returncode"] == 0
        # the thread it left was joined and its atexit handler ran before the process ended
        assert (d / "thread.txt").read_text() == "joined"
        assert (d / "atexit.txt").read_text() == "ran"
        assert "out of the run" in (d / "stdout.log").read_text()
        s = json.loads((d / "seen.json").read_text())
        s["run_dir"] = str(d)
        seen.append(s)
    return seen


def test_a_forked_worker_sees_what_a_new_interpreter_sees(project):
    forked = _run_both(project, "forked", "fork")
    new = _run_both(project, "new", "exec")
    assert all(s["forked"] for s in forked), "the default start forks the runner"
    assert not any(s["forked"] for s in new)
    assert all(s["parent_is_runner"] for s in forked + new)
    for f, n in zip(forked, new, strict=True):
        assert f["fds"] == n["fds"], "no descriptor of the runner (slot locks, pidfds)"
        assert f["argv"] == ["-c", f["run_dir"]] and n["argv"] == ["-c", n["run_dir"]]
        for key in ("path", "main", "cwd", "own_session", "signals", "stdin", "flags"):
            assert f[key] == n[key], key
        assert f["stdout"][:3] == n["stdout"][:3]
        assert f["stdout"][3] == f["run_dir"] + "/stdout.log"
        env_f = {k: v for k, v in f["env"].items() if k != "CHESTER_RUN_DIR"}
        env_n = {k: v for k, v in n["env"].items() if k != "CHESTER_RUN_DIR"}
        assert env_f == env_n
        assert "CHESTER_SLOTS_DIR" not in f["env"]
    assert sorted(s["env"]["CUDA_VISIBLE_DEVICES"] for s in forked) == ["7", "9"]
    # each run draws its own random numbers, as each new interpreter seeds its own
    assert forked[0]["random"] != forked[1]["random"]


@pytest.mark.parametrize("python, prefix, env_file, forks", [
    (sys.executable, [], None, True),
    (sys.executable, ["singularity", "exec", "img.sif"], None, False),  # a container
    (sys.executable, [], "/tmp/env.sh", False),  # sourced by a shell first
    ("/usr/bin/python3-other", [], None, False),  # another interpreter
])
def test_a_worker_forks_only_where_a_new_interpreter_would_be_the_same(
        monkeypatch, python, prefix, env_file, forks):
    monkeypatch.delenv("CHESTER_WORKER_START", raising=False)
    assert runner.can_fork(python, prefix, env_file) is forks
    monkeypatch.setenv("CHESTER_WORKER_START", "exec")
    assert runner.can_fork(python, prefix, env_file) is False
