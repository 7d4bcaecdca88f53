"""A per-user submit limit smaller than the sweep, enforced by the real test SLURM: a QOS
with ``MaxSubmitJobsPerUser`` set through slurmdbd (``sacctmgr``), the user's only and
default QOS, ``AccountingStorageEnforce=associations,limits,qos``. sbatch itself refuses
with ``QOSMaxSubmitJobPerUserLimit``; chester submits what fits and gives those runs
handles, the rest waits ("waiting to submit: QOSMaxSubmitJobPerUserLimit") and
``chester monitor`` submits it as the queue drains; every run runs exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from chester_testinfra.slurm import SlurmCluster, limited_cluster

from chester.errors import BackendError
from chester.launcher import launch
from chester.testing import ConformanceEnv
from chester.types import State

WAIT = 240
LIMIT = 4  # the QOS's MaxSubmitJobsPerUser; each array task counts
CHESTER = [sys.executable, "-m", "chester.cli"]


@pytest.fixture(scope="module")
def slurm_limited(tmp_path_factory) -> Iterator[SlurmCluster]:
    """A cluster whose user may have at most LIMIT jobs queued (MaxArraySize 5), from a
    factory of its own: its MariaDB has the system tables slurmdbd's associations need."""
    with limited_cluster(tmp_path_factory.mktemp("slurm-qos"), LIMIT, max_array_size=5) as cluster:
        yield cluster


def _config(cluster: SlurmCluster, **options) -> dict:
    return {"backends": {"slurm": {"type": "slurm", "poll_interval": 0.3,
                                   "scheduler_env": dict(cluster.env), **options}}}


def fn_count(variant, log_dir, exp_name):
    import os as _os
    import time as _time

    with open(_os.path.join(log_dir, "ran.txt"), "a") as f:
        f.write("x\n")
    with open(_os.path.join(log_dir, "secret.txt"), "w") as f:
        f.write(_os.environ.get("CHESTER_TEST_TOKEN", "<unset>"))
    _time.sleep(variant["sleep"])


def _sbatch_refuses_past_the_limit(cluster: SlurmCluster, tmp_path) -> None:
    """The limit is SLURM's own: an array of LIMIT + 1 tasks is refused by sbatch."""
    script = tmp_path / "probe.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    r = cluster.run(["sbatch", "--parsable", f"--array=0-{LIMIT}", str(script)], check=False,
                    cwd=tmp_path)
    assert r.returncode != 0 and "QOSMaxSubmitJobPerUserLimit" in r.stderr, r


def test_a_submit_limit_smaller_than_the_sweep(tmp_path, slurm_limited, monkeypatch):
    """... with a secret: the jobs submitted later get it too, from the stage's secrets file
    the later submits read; once every job is in, that file is gone."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    _sbatch_refuses_past_the_limit(slurm_limited, tmp_path)
    secret = "s-$(id) 'q' \u00e9"
    monkeypatch.setenv("CHESTER_TEST_TOKEN", secret)
    n = 10  # arrays of 3 (max_array_size): 3, 3, 3, 1; the limit holds one at a time
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=_config(
        slurm_limited, max_array_size=3, secrets=["CHESTER_TEST_TOKEN"]))
    sweep = launch(fn_count, [{"i": i, "sleep": 1} for i in range(n)], backend="slurm",
                   exp_prefix="limit", config=env.config)
    rows = [sweep.store.run(r.id) for r in sweep.runs]
    assert sum(1 for r in rows if r.remote_id) == 3  # the first chunk has handles now
    (kept,) = env.project.glob(".chester/slurm/*/secrets.sh")  # read by the later submits
    # `chester status` says why the others wait
    st = subprocess.run([*CHESTER, "status", "limit", "--json"], cwd=env.project,
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0, st.stderr
    reasons = [r.get("pending_reason") or "" for r in json.loads(st.stdout)["runs"]]
    assert any(x.startswith("waiting to submit: QOSMaxSubmitJobPerUserLimit")
               for x in reasons), reasons
    # `chester monitor` submits the rest as room frees, and pulls every run (from a shell
    # without the secret: the later jobs get it from the stage's file)
    shell_env = {k: v for k, v in os.environ.items() if k != "CHESTER_TEST_TOKEN"}
    mo = subprocess.run([*CHESTER, "monitor", "limit", "--interval", "0.3", "--timeout",
                         str(WAIT)], cwd=env.project, capture_output=True, text=True,
                        timeout=WAIT + 60, env=shell_env)
    assert mo.returncode == 0, mo.stdout + mo.stderr
    assert f"{n} succeeded" in mo.stdout, mo.stdout
    states = {sweep.store.run(r.id).state for r in sweep.runs}
    assert states == {State.SUCCEEDED}, states
    for r in sweep.runs:
        assert (r.log_dir / "ran.txt").read_text() == "x\n"  # exactly once
        assert (r.log_dir / "secret.txt").read_text() == secret
    assert not kept.exists()  # every job is in: no file of secrets stays
    jobs = {(sweep.store.run(r.id).remote_id or "").split("_")[0] for r in sweep.runs}
    assert len(jobs) == 4 and "" not in jobs  # four sbatch calls, each accepted once
    last = sweep.store.run(sweep.runs[-1].id)
    assert last.handle.remote_id is None and last.remote_id  # its id came with a poll


def test_a_chunk_larger_than_the_limit_is_one_line(tmp_path, slurm_limited):
    slurm_limited.wait_idle(120)  # none of the user's jobs queued
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=_config(slurm_limited))
    with pytest.raises(BackendError, match="set max_array_size below your submit limit") as e:
        launch(fn_count, [{"i": i, "sleep": 0} for i in range(5)], backend="slurm",
               exp_prefix="toolarge", config=env.config)
    assert "QOSMaxSubmitJobPerUserLimit" in str(e.value) and "\n" not in str(e.value)
