"""A healthy job store that cannot be written is never called damaged: a read-only
folder, a full disk, a store locked by another process and a store that really is damaged
each get their own one line, and nothing advises moving a good store aside."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from chester_testinfra import fs

from chester.store import Store

from .helpers import CHESTER, make_project, run_chester

LOCAL = "backends:\n  local: {type: local}\n"
LAUNCH = ["launch", "-p", "s", "--", "python", "-c", "pass", "x=1,2"]


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_a_read_only_store_is_called_read_only_not_damaged(tmp_path):
    project = make_project(tmp_path / "p", LOCAL)
    assert run_chester(LAUNCH, cwd=project).returncode == 0
    before = (project / ".chester" / "jobs.db").read_bytes()
    with fs.read_only(project / ".chester"):
        for args in (LAUNCH[:2] + ["t"] + LAUNCH[3:], ["status", "s"], ["cancel", "s"]):
            r = run_chester(args, cwd=project)
            line = _one_line(r)
            assert r.returncode == 2
            assert "read-only" in line and "jobs.db" in line, line
            assert "damaged" not in line and "aside" not in line, line
    assert (project / ".chester" / "jobs.db").read_bytes() == before
    assert run_chester(["status", "s"], cwd=project).returncode == 0


def test_a_store_on_a_full_disk_is_called_full_not_damaged(tmp_path):
    disk = tmp_path / "disk"
    with fs.tiny_tmpfs(disk, "2m"):
        project = make_project(disk / "p", LOCAL)
        assert run_chester(LAUNCH, cwd=project).returncode == 0
        fs.fill(disk)
        r = run_chester(["launch", "-p", "t", "--", "python", "-c", "pass", "x=1,2,3"],
                        cwd=project)
        line = _one_line(r)
        assert r.returncode == 2
        assert "disk is full" in line and "free some space" in line, line
        assert "damaged" not in line and "aside" not in line, line
        fs.unfill(disk)
        # nothing was lost: the first sweep is there and the second launches now
        r = run_chester(["launch", "-p", "t", "--", "python", "-c", "pass", "x=1,2,3"],
                        cwd=project)
        assert r.returncode == 0, r.stderr
        store = Store(project / ".chester" / "jobs.db", create=False)
        assert sorted(s.exp_prefix for s in store.sweeps()) == ["s", "t"]
        store.close()


def test_a_store_locked_by_another_process_is_called_locked(tmp_path):
    from chester.store import StoreError, explain

    path = tmp_path / "jobs.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            err = explain(exc, path)
        else:
            raise AssertionError("the store was not locked")
        other.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert isinstance(err, StoreError)
    assert "locked by another process" in str(err) and "damaged" not in str(err)


def test_a_damaged_store_alone_is_called_damaged(tmp_path):
    project = make_project(tmp_path / "p", LOCAL)
    (project / ".chester").mkdir()
    (project / ".chester" / "jobs.db").write_bytes(b"garbage " * 600)
    r = run_chester(["status"], cwd=project)
    assert "damaged" in _one_line(r)


def test_write_ahead_files_left_read_only_do_not_keep_the_error_going(tmp_path):
    """A store made read-only for a while (chmod 0444) and then writable again: SQLite made
    its -wal/-shm files 0444 meanwhile, and the next launch works all the same."""
    prefix = fs.without_dac_override()
    project = make_project(tmp_path / "p", LOCAL)
    db = project / ".chester" / "jobs.db"

    def chester(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *CHESTER, *args], cwd=project, capture_output=True,
                              text=True, timeout=120)

    assert chester(*LAUNCH).returncode == 0
    db.chmod(0o444)
    r = chester("status", "s")
    assert "damaged" not in r.stderr
    db.chmod(0o644)
    sides = [p for p in (db.with_name("jobs.db-wal"), db.with_name("jobs.db-shm"))
             if p.exists()]
    assert sides and all(p.stat().st_mode & 0o777 == 0o444 for p in sides)
    r = chester("launch", "-p", "after", "--", "python", "-c", "pass", "x=1")
    assert r.returncode == 0, r.stderr
    assert "damaged" not in r.stderr
    r = chester("status", "after")
    assert r.returncode == 0 and "1_after" in r.stdout, r.stderr


def test_a_store_that_cannot_be_made_says_why(tmp_path):
    project = make_project(tmp_path / "p", LOCAL)
    with fs.read_only(project):
        r = run_chester(LAUNCH, cwd=project)
    line = _one_line(r)
    assert r.returncode == 2 and "read-only" in line and "damaged" not in line, line


assert sys.version_info >= (3, 10)
