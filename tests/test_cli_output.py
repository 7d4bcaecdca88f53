"""The exit status of `chester launch` is the truth about what was submitted, whatever
stdout and stderr are (closed, full, a reader gone); a command whose output is its purpose
fails in one line when that output cannot be written."""

from __future__ import annotations

import os
import subprocess

import pytest

from chester.store import Store

from .helpers import CHESTER, make_project

LOCAL = "backends:\n  local: {type: local}\n"


def _launch(project, prefix: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"}
    return subprocess.run([*CHESTER, "launch", "-p", prefix, "--", "python", "-c", "pass",
                           "x=1,2"], cwd=project, env=env, timeout=120, **kw)


def _submitted(project, prefix: str) -> int:
    store = Store(project / ".chester" / "jobs.db", create=False)
    try:
        rows = [r for s in store.sweeps(prefix) for r in store.runs(s.id)]
        return sum(1 for r in rows if r.handle is not None)
    finally:
        store.close()


def _closed(fd: int):
    return lambda: os.close(fd)


@pytest.mark.parametrize("how", ["stdout closed", "stdout full", "stdout and stderr closed",
                                 "stdout and stderr full", "reader gone"])
def test_a_launch_that_submitted_exits_0_whatever_its_output(tmp_path, how):
    project = make_project(tmp_path / "p", LOCAL)
    kw: dict = {"stderr": subprocess.PIPE, "text": True}
    if how == "stdout closed":
        kw["preexec_fn"] = _closed(1)
    elif how == "stdout and stderr closed":
        kw.update(preexec_fn=lambda: (os.close(1), os.close(2)), stderr=None)
    elif how == "stdout full":
        kw["stdout"] = open("/dev/full", "w")
    elif how == "stdout and stderr full":
        kw.update(stdout=open("/dev/full", "w"), stderr=open("/dev/full", "w"))
    else:
        r_fd, w_fd = os.pipe()
        os.close(r_fd)
        kw["stdout"] = w_fd
    r = _launch(project, "o", **kw)
    assert r.returncode == 0, r.stderr
    assert _submitted(project, "o") == 2
    if isinstance(r.stderr, str):
        assert "Traceback" not in r.stderr
        assert r.stderr.count("\n") == 1 and "the launch completed" in r.stderr, r.stderr


def test_a_report_that_cannot_be_written_fails_in_one_line(tmp_path):
    project = make_project(tmp_path / "p", LOCAL)
    assert _launch(project, "o", capture_output=True).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"}
    with open("/dev/full", "w") as full:
        r = subprocess.run([*CHESTER, "status", "o"], cwd=project, env=env, stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "could not be written" in r.stderr, r.stderr
    r = subprocess.run([*CHESTER, "status", "o"], cwd=project, env=env,
                       stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=_closed(1))
    assert r.returncode == 1 and "stdout is closed" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["status", "o"],
                                  ["launch", "--dry-run", "-p", "d", "--", "python", "-c",
                                   "pass", "x=range(0,2000)"]])
def test_a_reader_that_had_enough_is_no_failure(tmp_path, args):
    """``chester status | head -n 1`` and a dry run into ``head``: the reader went away
    having read what it wanted; nothing is said and the exit status is the command's own
    (as ``logs -f`` into a closed pipe); a dry run records nothing."""
    project = make_project(tmp_path / "p", LOCAL)
    assert _launch(project, "o", capture_output=True).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"}
    r = subprocess.run(["bash", "-c", 'set -o pipefail; "$@" | head -n 1', "sh", *CHESTER,
                        *args], cwd=project, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr)
    assert r.stdout.count("\n") == 1
    assert _submitted(project, "o") == 2 and _submitted(project, "d") == 0
