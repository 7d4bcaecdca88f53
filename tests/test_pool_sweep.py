"""One sweep over the lab, the cluster and the cloud (issue 27's "must show", short form):
a pool of the autobot test lab (2 nodes x 4 stand-in GPUs), the test SLURM with a QOS
submit limit reached through the loopback sshd as login host, and EC2 on moto with the
farm. The lab takes what its free GPUs start, SLURM what its limit allows, EC2 the rest
up to the budget; every run succeeds exactly once with its value byte-exact, ``chester
status`` shows each run's member and the spend, and the projected spend stays under the
cap. The long form (40 one-minute runs, against the best single member) is
``bench/pool_bench.py``."""

from __future__ import annotations

import json
import subprocess
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chester_backends" / "ec2" / "tests"))
from ec2farm import aws, ec2_config, farm, moto_endpoint  # noqa: E402,F401,F811

from chester.config import load_config  # noqa: E402
from chester.dispatch import Dispatcher  # noqa: E402
from chester.launcher import launch  # noqa: E402
from chester.plugin.records import State  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CHESTER = [sys.executable, "-m", "chester.cli"]
LIMIT = 3  # the cluster QOS's MaxSubmitJobsPerUser
BUDGET = 0.025  # USD: two t3.micro runs of at most an hour ($0.0104 each), not three


@pytest.fixture(scope="module")
def slurm_limited(tmp_path_factory) -> Iterator[SlurmCluster]:
    with limited_cluster(tmp_path_factory.mktemp("slurm-pool-sweep"), LIMIT, max_array_size=5) as cluster:
        yield cluster


def queue_empty(cluster) -> None:
    """The limited cluster's queue holds none of an earlier test's jobs (their slots count
    against the submit limit); its node may still be finishing them."""
    wait_until(lambda: not cluster.queue(), 120, "the cluster's queue to empty", interval=0.3)


def fn_value(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    with open(_o.path.join(log_dir, "value.txt"), "a", encoding="utf-8") as f:
        f.write(variant["value"])
    _t.sleep(variant.get("sleep", 0))


def pool_project(tmp_path: Path, lab, cluster, login, *, budget: float, max_wait: str,
                 ) -> tuple[Path, object]:
    """A project whose chester.yaml has the three members and the pool ``anywhere``."""
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    aws_opts = ec2_config(time_limit_s=3600)["backends"]["ec2"]
    cfg = {"log_dir": "data", "backends": {
        "lab": lab_backend(lab, tmp_path / "shared" / "proj"),
        "hpc": {"type": "slurm", "host": login.alias, "ssh_config": login.ssh_config,
                "python": sys.executable, "poll_interval": 0.3,
                "scheduler_env": dict(cluster.env), "remote_dir": str(tmp_path / "hpc")},
        "aws": aws_opts,
        "anywhere": {"type": "pool", "members": ["lab", "hpc", "aws"],
                     "budget": {"usd": budget}, "max_wait": max_wait}}}
    (project / "chester.yaml").write_text(yaml.safe_dump(cfg))
    return project, load_config(project / "chester.yaml")


@pytest.mark.timeout(400)
def test_one_sweep_over_the_lab_the_cluster_and_the_cloud(tmp_path, gpu_lab, slurm_limited,
                                                          sshd_loopback, aws, farm,  # noqa: F811
                                                          monkeypatch):
    for node in gpu_lab.nodes:
        gpu_lab.free_gpus(node, 4)
    queue_empty(slurm_limited)
    project, cfg = pool_project(tmp_path, gpu_lab, slurm_limited, sshd_loopback,
                                budget=BUDGET, max_wait="1s")
    monkeypatch.chdir(project)
    n = 14
    values = [f"run {i}: 'q' \"d\" $(touch /tmp/pool-pwned) `x`\n\u2603 \U0001d11e"
              for i in range(n)]
    sweep = launch(fn_value, [{"value": v, "sleep": 2} for v in values], backend="anywhere",
                   exp_prefix="everywhere", config=cfg,
                   dispatcher=Dispatcher(sleep=lambda s: time.sleep(min(s, 0.5))))
    members = [r.member for r in sweep.rows()]
    count = {m: members.count(m) for m in set(members)}
    # the lab's 8 free GPUs, the cluster's room under its limit (less its supervisor job's
    # slot), EC2 within the budget, and the 2 left queue on the lab (the cluster has no
    # room left)
    assert count == {"lab": 8 + 2, "hpc": LIMIT - 1, "aws": 2}, members
    assert any("budget reached: 2 runs not sent to 'aws'" in t for _l, t in sweep.notices)
    states = sweep.wait(timeout=300, poll_interval=0.5, pull=True, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, \
        [(r.name, r.member, r.state, r.reason) for r in sweep.rows()]
    for r, v in zip(sweep.rows(), values, strict=True):
        assert (Path(r.local_dir) / "value.txt").read_text(encoding="utf-8") == v, r.member
        # it ran once: a run that waited past max_wait on the lab may have moved to the
        # cluster, but only after its cancel there came before it started; one that ended
        # on the lab first stayed there
        runs_of = [h for h in sweep.store.history(r.id) if h[1] == "running"]
        assert r.attempt == 1 and len(runs_of) <= 1, \
            (r.member, r.moved_from, [h[1:] for h in sweep.store.history(r.id)])
    assert not Path("/tmp/pool-pwned").exists()
    doc = json.loads(subprocess.run([*CHESTER, "status", "everywhere", "--json"],
                                    cwd=project, capture_output=True, text=True,
                                    check=True).stdout)
    final = [r.member for r in sweep.rows()]  # after any moves
    assert [r["member"] for r in doc["runs"]] == final
    spend = doc["spend"]["anywhere"]
    assert 0 < spend["usd"] <= spend["usd_projected"] <= BUDGET, spend
    tsv = subprocess.run([*CHESTER, "status", "everywhere"], cwd=project, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    head = tsv[0].split("\t")
    assert [ln.split("\t")[head.index("member")] for ln in tsv[1:]] == final
