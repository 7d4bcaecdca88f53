"""SLURM's reader reads the runs' records by the one rule (chester.target.states), on a real
SLURM: a run that fills its file system reads as such (SLURM's own words were "job failed
with exit code 1:0"). The cases a real cluster cannot make are in test_scheduler_unit.py."""

from __future__ import annotations

import os

from chester_testinfra.fs import tiny_tmpfs

from chester.launcher import launch
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 150


def fn_fill(variant, log_dir, exp_name):
    """Write into the run folder until its file system is full."""
    with open(os.path.join(log_dir, "big.bin"), "wb") as f:
        while True:
            f.write(b"x" * 65536)
            f.flush()


def test_a_full_disk_reads_as_such(tmp_path, slurm_local, make_config):
    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__))  # fn_fill goes by value
    with tiny_tmpfs(tmp_path / "tiny", "2m") as tiny:
        env = ConformanceEnv.create(tmp_path, backend="slurm",
                                    config={**make_config(), "log_dir": str(tiny)})
        s = launch(fn_fill, [{"i": 0}], backend="slurm", exp_prefix="full", config=env.config)
        done = s.wait(timeout=WAIT, poll_interval=0.5, progress=False)
        run = s.runs[0]
        assert done[run.name] == State.FAILED, (run.reason, run.stderr_tail)
        assert run.reason.startswith(f"no space left on the file system of {tiny}"), run.reason
