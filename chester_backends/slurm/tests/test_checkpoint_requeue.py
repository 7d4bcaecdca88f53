"""Before its time limit a run is warned (``--signal=B:USR1@lead``), saves a checkpoint and
asks to be requeued; the next attempt knows it is a resumption and finishes: on the real
test SLURM.

The short form, here: the job has a three-minute limit and a 45 s lead, but the warning is
sent as soon as the run works, the way SLURM sends it (``scancel --batch --signal=USR1``,
to the batch shell), and the requeued job is let start again a few seconds after the
requeue instead of after SLURM's hold of about two minutes. The long form, with the warning
from SLURM's own clock and its whole hold (about five minutes), is
``bench/long/test_slurm_checkpoint_requeue.py``.
"""

from __future__ import annotations

import subprocess
import time

from chester_testinfra import wait_until

from chester.launcher import launch
from chester.target.testing_functions import fn_train_with_checkpoints
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 240


def test_warned_checkpointed_requeued_resumed(tmp_path, slurm_local, make_config):

    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        time=3, signal_lead=45))
    sweep = launch(fn_train_with_checkpoints, [{"i": 1}], backend="slurm",
                   exp_prefix="ckpt", config=env.config)
    run = sweep.runs[0]
    job = sweep.store.run(run.id).remote_id

    def squeue_state() -> str:
        return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                              text=True, env=slurm_local.environ()).stdout.strip()

    # the first attempt works (it has written its line) when SLURM's warning comes
    wait_until(lambda: any(tmp_path.rglob("attempts.txt")), WAIT, "the first attempt to start")
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True,
                   env=slurm_local.environ())
    wait_until(lambda: squeue_state() == "PENDING", 60, "the job to be requeued")
    # slurmd refuses a job whose credential is not newer, to the second, than the requeue's
    # revocation ("Job credential revoked"): a condition on the clock, with nothing to poll
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True,
                   env=slurm_local.environ())

    states = sweep.wait(timeout=WAIT, poll_interval=1.0, progress=False)
    assert states[run.name] == State.SUCCEEDED, (run.reason, run.stderr_tail)
    lines = [ln.split() for ln in (run.log_dir / "attempts.txt").read_text().splitlines()]
    assert [ln[:2] for ln in lines] == [["1", "0"], ["2", "1"]]
    assert int(lines[1][2]) > 0  # the second attempt started from the checkpoint
    assert sweep.store.run(run.id).attempt == 2
