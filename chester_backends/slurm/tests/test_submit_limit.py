"""A per-user submit limit smaller than the sweep, on the real test SLURM: what fits is
submitted and has handles at once, the rest waits ("waiting to submit: <limit>") and is
submitted by later polls as the queue drains; every run runs exactly once.

The test cluster's slurmdbd does not load user associations, so SLURM itself cannot
enforce ``MaxSubmitJobsPerUser`` here: an ``sbatch`` in front of the real one refuses, with
sbatch's own words, a job that would take the user's queued array tasks (``squeue -r``)
past the limit, and otherwise runs the real ``sbatch``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chester.errors import BackendError
from chester.launcher import launch
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 240


def _limited_sbatch(folder: Path, limit: int) -> Path:
    real = subprocess.run(["bash", "-c", "command -v sbatch"], capture_output=True,
                          text=True).stdout.strip()
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "sbatch"
    shim.write_text(f"""#!/bin/bash
script="${{@: -1}}"
tasks=1
spec=$(sed -n 's/^#SBATCH --array=\\([0-9]*\\)-\\([0-9]*\\).*/\\1 \\2/p' "$script" | head -n 1)
if [ -n "$spec" ]; then tasks=$(( ${{spec#* }} - ${{spec% *}} + 1 )); fi
queued=$(squeue -h -r -u "$(id -un)" | wc -l)
if [ $((queued + tasks)) -gt {limit} ]; then
  echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
  echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)" >&2
  exit 1
fi
exec {real} "$@"
""")
    shim.chmod(0o755)
    return folder


def fn_count(variant, log_dir, exp_name):
    import os as _os
    import time as _time

    with open(_os.path.join(log_dir, "ran.txt"), "a") as f:
        f.write("x\n")
    _time.sleep(variant["sleep"])


def test_a_submit_limit_smaller_than_the_sweep(tmp_path, slurm_local, make_config, monkeypatch):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    size = slurm_local.max_array_size  # arrays of `size` tasks; the limit holds one
    monkeypatch.setenv("PATH", f"{_limited_sbatch(tmp_path / 'bin', size + 1)}:"
                               f"{os.environ['PATH']}")
    n = 2 * size + 2  # chunks of size, size, 2
    env = ConformanceEnv.create(tmp_path, backend="slurm",
                                config=make_config(poll_interval=0.3))
    sweep = launch(fn_count, [{"i": i, "sleep": 1} for i in range(n)], backend="slurm",
                   exp_prefix="limit", config=env.config)
    rows = [sweep.store.run(r.id) for r in sweep.runs]
    assert sum(1 for r in rows if r.remote_id) == size  # the first chunk has handles now
    first = sweep.status()
    waiting = [r for r in sweep.runs if (sweep.store.run(r.id).pending_reason or "")
               .startswith("waiting to submit: QOSMaxSubmitJobPerUserLimit")]
    assert waiting, first
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, states
    for r in sweep.runs:
        assert (r.log_dir / "ran.txt").read_text() == "x\n"  # exactly once
    last = sweep.store.run(sweep.runs[-1].id)
    assert last.handle.remote_id is None and last.remote_id  # its id came with a poll


def test_a_chunk_larger_than_the_limit_is_one_line(tmp_path, slurm_local, make_config,
                                                   monkeypatch):
    size = slurm_local.max_array_size
    monkeypatch.setenv("PATH", f"{_limited_sbatch(tmp_path / 'bin', size - 1)}:"
                               f"{os.environ['PATH']}")
    deadline = time.monotonic() + 60  # the queue of earlier tests must be empty
    while subprocess.run(["squeue", "-h", "-r"], capture_output=True, text=True,
                         env=slurm_local.environ()).stdout.strip():
        if time.monotonic() > deadline:
            pytest.skip("the test cluster's queue did not drain")
        time.sleep(0.5)
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config())
    with pytest.raises(BackendError, match="set max_array_size below your submit limit") as e:
        launch(fn_count, [{"i": i, "sleep": 0} for i in range(size)], backend="slurm",
               exp_prefix="toolarge", config=env.config)
    assert "QOSMaxSubmitJobPerUserLimit" in str(e.value) and "\n" not in str(e.value)
