"""The long form of ``chester_backends/slurm/tests/test_checkpoint_requeue.py``: before its
time limit a run is warned (``--signal=B:USR1@lead``), saves a checkpoint and asks to be
requeued; the next attempt knows it is a resumption and finishes. Here everything comes from
SLURM itself: the warning from its own clock, and the requeued job starts after SLURM's whole
hold. About five and a half minutes; run it with ``.venv/bin/pytest bench/long`` (root, the
packages of .ci/install.sh).

With a three-minute limit and a 45 s lead. SLURM may send the warning up to 60 s early
(sbatch(1), --signal), so the limit leaves more than lead + 60 s: with a one-minute limit the
warning can come as an attempt starts, and the resumed attempt is warned too."""

from __future__ import annotations

import pytest
from chester_testinfra import InfraUnavailable, skip_or_fail

from chester.launcher import launch
from chester.target.testing_functions import fn_train_with_checkpoints
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 900  # a requeued job waits a while before it may start again


@pytest.mark.timeout(WAIT + 120)
def test_warned_checkpointed_requeued_resumed(tmp_path, slurm_factory):

    try:
        cluster = slurm_factory.get(max_array_size=5, accounting=True)
    except InfraUnavailable as e:
        skip_or_fail(f"slurm: {e}")
    config = {"backends": {"slurm": {"type": "slurm", "poll_interval": 0.3,
                                     "scheduler_env": dict(cluster.env),
                                     "time": 3, "signal_lead": 45}}}
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=config)
    sweep = launch(fn_train_with_checkpoints, [{"i": 1}], backend="slurm",
                   exp_prefix="ckpt", config=env.config)
    states = sweep.wait(timeout=WAIT, poll_interval=1.0, progress=False)
    run = sweep.runs[0]
    assert states[run.name] == State.SUCCEEDED, (run.reason, run.stderr_tail)
    lines = [ln.split() for ln in (run.log_dir / "attempts.txt").read_text().splitlines()]
    assert [ln[:2] for ln in lines] == [["1", "0"], ["2", "1"]]
    assert int(lines[1][2]) > 0  # the second attempt started from the checkpoint
    assert sweep.store.run(run.id).attempt == 2
