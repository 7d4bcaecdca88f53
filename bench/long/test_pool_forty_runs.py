"""The long form of ``tests/test_pool_sweep.py`` (issue 27's figure): 40 one-minute runs on
a pool of the test lab (2 nodes x 4 stand-in GPUs), the test SLURM with
``MaxSubmitJobsPerUser=10`` through the loopback sshd as login host, and EC2 on moto with
the farm, ``max_wait`` 5 s and a budget of 15 EC2 runs; then the same 40 runs on each
member alone. Prints the time from launch to the last run's result pulled home, each, and
the ratios (``POOL-BENCH`` lines). About 15 minutes; run it with
``.venv/bin/pytest bench/long/test_pool_forty_runs.py -s`` (root, the packages of
.ci/install.sh)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
import yaml
from chester_testinfra import wait_until
from chester_testinfra.gpulab import lab_backend
from chester_testinfra.slurm import SlurmCluster, limited_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "chester_backends" / "ec2"
                       / "tests"))
from ec2farm import aws, ec2_config, farm, moto_endpoint  # noqa: E402,F401,F811

from chester.config import load_config  # noqa: E402
from chester.dispatch import Dispatcher  # noqa: E402
from chester.launcher import launch  # noqa: E402
from chester.plugin.records import State  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RUNS, SECONDS, LIMIT = 40, 60.0, 10
TIME_LIMIT_S = 120  # each EC2 run's limit: at t3.micro's $0.0104/h, $0.000347 a run at most
BUDGET = 15 * 0.0104 * TIME_LIMIT_S / 3600 + 1e-6  # 15 EC2 runs, not 16


@pytest.fixture(scope="module")
def slurm_limited(tmp_path_factory) -> Iterator[SlurmCluster]:
    with limited_cluster(tmp_path_factory.mktemp("slurm-pool-bench"), LIMIT, max_array_size=64) as cluster:
        yield cluster


def fn_minute(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    _t.sleep(variant["seconds"])
    with open(_o.path.join(log_dir, "value.txt"), "a", encoding="utf-8") as f:
        f.write(variant["value"])


def _timed(cfg, backend: str, prefix: str) -> tuple[float, list]:
    values = [f"{prefix} {i} '$(x)' \u2603" for i in range(RUNS)]
    t0 = time.monotonic()
    sweep = launch(fn_minute, [{"value": v, "seconds": SECONDS} for v in values],
                   backend=backend, exp_prefix=prefix, config=cfg,
                   dispatcher=Dispatcher(sleep=lambda s: time.sleep(min(s, 1.0))))
    states = sweep.wait(timeout=1800, poll_interval=1.0, pull=True, progress=False)
    took = time.monotonic() - t0
    assert set(states.values()) == {State.SUCCEEDED}, \
        [(r.name, r.member, r.state, r.reason) for r in sweep.rows()]
    for r, v in zip(sweep.rows(), values, strict=True):
        assert (Path(r.local_dir) / "value.txt").read_text(encoding="utf-8") == v
    return took, sweep.rows()


@pytest.mark.timeout(3600)
def test_forty_minute_runs_on_the_pool_and_on_each_member(tmp_path, gpu_lab, slurm_limited,
                                                          sshd_loopback, aws, farm,  # noqa: F811
                                                          monkeypatch):
    for node in gpu_lab.nodes:
        gpu_lab.free_gpus(node, 4)
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    login = sshd_loopback
    cfg = {"log_dir": "data", "backends": {
        "lab": lab_backend(gpu_lab, tmp_path / "shared" / "proj"),
        "hpc": {"type": "slurm", "host": login.alias, "ssh_config": login.ssh_config,
                "python": sys.executable, "poll_interval": 1.0, "max_array_size": LIMIT,
                "scheduler_env": dict(slurm_limited.env), "remote_dir": str(tmp_path / "hpc")},
        "aws": ec2_config(time_limit_s=TIME_LIMIT_S)["backends"]["ec2"],
        "anywhere": {"type": "pool", "members": ["lab", "hpc", "aws"],
                     "budget": {"usd": BUDGET}, "max_wait": "5s"}}}
    (project / "chester.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(project)
    config = load_config(project / "chester.yaml")
    took: dict[str, float] = {}
    took["pool"], rows = _timed(config, "anywhere", "pool")
    placed = {m: sum(1 for r in rows if r.member == m) for m in ("lab", "hpc", "aws")}
    moved = {f"{r.moved_from}->{r.member}" for r in rows if r.moved_from}
    print(f"\nPOOL-BENCH pool: {took['pool']:.1f} s; final members {placed}, moves "
          f"{sum(1 for r in rows if r.moved_from)} ({', '.join(sorted(moved))}), attempts "
          f"{sorted({r.attempt for r in rows})}", flush=True)
    for member in ("lab", "hpc", "aws"):
        wait_until(lambda: not slurm_limited.queue(), 300, "the cluster's queue to empty")
        print("POOL-BENCH node:", slurm_limited.run(["sinfo", "-h", "-o", "%t %E"],
                                                    check=False).stdout.strip(), flush=True)
        took[member], _ = _timed(config, member, f"alone-{member}")
        print(f"POOL-BENCH {member} alone: {took[member]:.1f} s", flush=True)
    free_best = min(took["lab"], took["hpc"])
    best = min(took["lab"], took["hpc"], took["aws"])
    print(f"POOL-BENCH pool / best free member: {took['pool'] / free_best:.2f}; "
          f"pool / best member (EC2 alone, unbudgeted: {RUNS} instances): "
          f"{took['pool'] / best:.2f}", flush=True)
    assert took["pool"] < free_best
