"""A cache folder that cannot be written (not a folder, full) is one warning line and no
cache, never a traceback, and leaves no temporary file behind."""

from __future__ import annotations

import subprocess
import sys

from chester_testinfra import fs

from .helpers import make_project, run_chester


def _launch(project, cache) -> subprocess.CompletedProcess:
    code = ("import chester, chester.remote.runtime as r; r._BUILT.clear(); "
            "print(r.build().path)")
    return subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                          text=True, timeout=120, env={"CHESTER_CACHE_DIR": str(cache),
                                                       "PATH": "/usr/bin:/bin"})


def test_a_cache_path_that_is_a_file_is_one_warning(tmp_path):
    project = make_project(tmp_path / "p", "backends:\n  local: {type: local}\n")
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    r = _launch(project, cache)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("chester: warning:") == 1, r.stderr
    assert str(cache) in r.stderr
    r = run_chester(["logs", "x"], cwd=project, env={"CHESTER_CACHE_DIR": str(cache)})
    assert "Traceback" not in r.stderr and "NotADirectoryError" not in r.stderr


def test_a_full_cache_folder_is_one_warning_and_leaves_no_temporary_file(tmp_path):
    disk = tmp_path / "disk"
    with fs.tiny_tmpfs(disk, "256k"):
        project = make_project(tmp_path / "p", "backends:\n  local: {type: local}\n")
        cache = disk / "cache"
        cache.mkdir()
        fs.fill(disk, leave=64 * 1024)  # room for a file's start, not for the runtime
        for _ in range(2):
            r = _launch(project, cache)
            assert r.returncode == 0, r.stderr
            assert "Traceback" not in r.stderr and "cannot be written" in r.stderr, r.stderr
        left = [p.name for p in (cache / "runtime").glob(".*")] \
            if (cache / "runtime").exists() else []
        assert left == []
