"""Pulling runs home from the cluster, through the login host or from a folder of this
machine: a file changed here after a pull brought it is never overwritten, even when the
edit lands in the same second as the cluster's write (rsync's ``--update`` sees whole
seconds); files not changed here still follow the cluster's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chester.launcher import launch
from chester.testing import ConformanceEnv, fn_write_result

WAIT = 150


def _same_second(local: Path, remote: Path, text: str) -> None:
    """Write ``text`` into ``local``, later than ``remote`` within the same second."""
    local.write_text(text)
    r = remote.stat().st_mtime_ns
    t = r + (10**9 - 1 - r % 10**9) // 2
    os.utime(local, ns=(t, t))


def _rewrite_keeping_time(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before, before))


@pytest.mark.parametrize("via", ["login-host", "here"])
def test_a_file_changed_here_is_never_overwritten(tmp_path, slurm_local, login_host,
                                                  make_config, via):
    remote = tmp_path / "remote"
    kw = {"host": login_host} if via == "login-host" else {}
    env = ConformanceEnv.create(tmp_path, backend="slurm",
                                config=make_config(remote_dir=str(remote), **kw))
    sweep = launch(fn_write_result, [{"i": 0}], backend="slurm", exp_prefix="keep",
                   config=env.config)
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False, pull=True)
    assert [s.value for s in states.values()] == ["succeeded"]
    run = sweep.runs[0]
    there = Path(run.remote_dir)
    assert there != run.log_dir and (run.log_dir / "result.json").exists()
    _same_second(run.log_dir / "result.json", there / "result.json", "mine")
    # the cluster rewrites both files in the same second as its first write
    _rewrite_keeping_time(there / "result.json", "the cluster's, rewritten")
    _rewrite_keeping_time(there / "invocations.txt", "the cluster's, rewritten\n")
    for _ in range(2):
        sweep.pull()
        assert (run.log_dir / "result.json").read_text() == "mine"
        assert (run.log_dir / "invocations.txt").read_text() == "the cluster's, rewritten\n"
    (run.log_dir / "result.json").unlink()  # removed here: the cluster's comes home
    sweep.pull()
    assert (run.log_dir / "result.json").read_text() == "the cluster's, rewritten"
