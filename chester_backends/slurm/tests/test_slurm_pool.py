"""The cluster as a pool's member (issue 27), on the real test SLURM with a QOS submit limit
(``MaxSubmitJobsPerUser``): it says the room the limit leaves and when a run would start
(``sbatch --test-only``), and a pool puts no more there than that room."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import cloudpickle
import pytest
import yaml
from chester_backend_slurm.capacity import parse
from chester_testinfra import InfraUnavailable, skip_or_fail
from chester_testinfra.slurm import SlurmCluster, SlurmFactory

from chester.config import load_config
from chester.dispatch import Dispatcher
from chester.launcher import launch
from chester.plugin.records import State

cloudpickle.register_pickle_by_value(sys.modules[__name__])

LIMIT = 3


@pytest.fixture(scope="module")
def slurm_limited(tmp_path_factory) -> Iterator[SlurmCluster]:
    factory = SlurmFactory(tmp_path_factory.mktemp("slurm-pool"), system_tables=True)
    try:
        try:
            cluster = factory.get(max_array_size=5, accounting=True, submit_limit=LIMIT)
        except InfraUnavailable as e:
            skip_or_fail(f"slurm: {e}")
            raise  # not reached
        yield cluster
    finally:
        factory.stop()


def fn_value(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    _t.sleep(variant.get("sleep", 0))
    with open(_o.path.join(log_dir, "value.txt"), "w", encoding="utf-8") as f:
        f.write(variant["value"])


def _project(tmp_path, cluster, **pool):
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    cfg = {"log_dir": "data", "backends": {
        "hpc": {"type": "slurm", "poll_interval": 0.3, "scheduler_env": dict(cluster.env)},
        "one": {"type": "local", "max_parallel": 1},
        "anywhere": {"type": "pool", "members": ["hpc", "one"], **pool}}}
    (project / "chester.yaml").write_text(yaml.safe_dump(cfg))
    return project, load_config(project / "chester.yaml")


def fast() -> Dispatcher:
    return Dispatcher(sleep=lambda s: time.sleep(min(s, 0.5)))


def test_parse_reads_the_tightest_limit_and_the_estimate():
    out = ("QUEUED 4\nASSOC 10|normal,q3|q3\nQOS normal|\nQOS q3|6\n"
           "START 1000\nNOW 990\nTEST sbatch: Job 5 to start at ...\n")
    cap = parse(out, None)
    assert (cap.room, cap.free, cap.wait_s) == (2, 0, 10.0)
    now = parse("QUEUED 0\nSTART 1000\nNOW 1000\n", None)
    assert (now.room, now.free, now.wait_s) == (None, 1, 0.0)
    none = parse("QUEUED 0\nSTART \nNOW 1000\nTEST sbatch: error: Batch job submission "
                 "failed\n", None)
    assert none.wait_s is None and "submission failed" in none.note


def test_the_cluster_says_its_room_under_the_submit_limit(tmp_path, slurm_limited):
    _p, cfg = _project(tmp_path, slurm_limited)
    slurm_limited.wait_idle()
    d = fast()
    cap = d.call("chester_capacity", cfg.backend("hpc", d.manager), runs=[])
    assert (cap.room, cap.free, cap.wait_s, cap.paid) == (LIMIT, LIMIT, 0.0, False), cap


def test_a_pool_puts_no_more_on_the_cluster_than_its_room(tmp_path, slurm_limited,
                                                           monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    slurm_limited.wait_idle()
    project, cfg = _project(tmp_path, slurm_limited)
    values = [f"v{i} '$(y)'\n\u2603" for i in range(6)]
    sweep = launch(fn_value, [{"value": v, "sleep": 0.5} for v in values],
                   backend="anywhere", exp_prefix="hpcpool", config=cfg, dispatcher=fast())
    members = [r.member for r in sweep.rows()]
    # the cluster starts 3 now (its room), this machine 1; the other 2 queue where the
    # start is known soonest and room is left: here (the cluster has none left)
    assert members == ["hpc"] * LIMIT + ["one"] * 3, members
    states = sweep.wait(timeout=180, poll_interval=0.3, pull=True, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, [(r.name, r.reason) for r in sweep.rows()]
    for r, v in zip(sweep.rows(), values, strict=True):
        assert (project / r.local_dir / "value.txt").read_text(encoding="utf-8") == v
        st = json.loads((project / r.local_dir / ".chester" / "status.json").read_text())
        assert st["attempt"] == 1
