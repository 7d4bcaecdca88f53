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

import sys

import pytest
from chester_testinfra import InfraUnavailable, skip_or_fail

from chester.launcher import launch
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 900  # a requeued job waits a while before it may start again


def fn_train_with_checkpoints(variant, log_dir, exp_name):
    import json
    import os
    import time

    import chester

    ckpt = os.path.join(log_dir, "ckpt.json")
    step = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
    with open(os.path.join(log_dir, "attempts.txt"), "a") as f:
        f.write(f"{chester.attempt()} {os.environ.get('CHESTER_RESUMED', '0')} {step}\n")
    stop = step + 3 if chester.attempt() > 1 else 10**6  # the first attempt never finishes
    while step < stop:
        if chester.preempted():
            with open(ckpt, "w") as f:
                json.dump({"step": step}, f)
            chester.requeue()
        time.sleep(0.5)
        step += 1
    with open(os.path.join(log_dir, "result.json"), "w") as f:
        json.dump({"step": step}, f)


@pytest.mark.timeout(WAIT + 120)
def test_warned_checkpointed_requeued_resumed(tmp_path, slurm_factory):
    import cloudpickle

    try:
        cluster = slurm_factory.get(max_array_size=5, accounting=True)
    except InfraUnavailable as e:
        skip_or_fail(f"slurm: {e}")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
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
