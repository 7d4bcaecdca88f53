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
from chester_testinfra import wait_until
from chester_testinfra.slurm import SlurmCluster, limited_cluster

from chester.config import load_config
from chester.dispatch import Dispatcher
from chester.launcher import launch
from chester.plugin.records import State

cloudpickle.register_pickle_by_value(sys.modules[__name__])

LIMIT = 3
ROOM = LIMIT - 1  # a sweep's supervisor job (supervise: auto) takes one submit slot


@pytest.fixture(scope="module")
def slurm_limited(tmp_path_factory) -> Iterator[SlurmCluster]:
    with limited_cluster(tmp_path_factory.mktemp("slurm-pool"), LIMIT, max_array_size=5) as cluster:
        yield cluster


def queue_empty(cluster) -> None:
    """The limited cluster's queue holds none of an earlier test's jobs (their slots count
    against the submit limit); its node may still be finishing them."""
    wait_until(lambda: not cluster.queue(), 120, "the cluster's queue to empty", interval=0.3)


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
    out = ("ENFORCE associations,limits,qos\nQUEUED 4\nASSOC 10|normal,q3|q3\nQOS normal|\nQOS q3|6\n"
           "START 1000\nNOW 990\nTEST sbatch: Job 5 to start at ...\n")
    cap = parse(out, None)
    assert (cap.room, cap.free, cap.wait_s) == (2, 0, 10.0)
    assert parse(out, None, reserved=1).room == 1  # a supervisor job's slot
    now = parse("QUEUED 0\nSTART 1000\nNOW 1000\n", None)
    assert (now.room, now.free, now.wait_s) == (None, 1, 0.0)
    unenforced = parse("ENFORCE none\nQUEUED 0\nASSOC 0||\nSTART 1000\nNOW 1000\n", None)
    assert unenforced.room is None  # a limit shown but not enforced is no limit
    none = parse("QUEUED 0\nSTART \nNOW 1000\nTEST sbatch: error: Batch job submission "
                 "failed\n", None)
    assert none.wait_s is None and "submission failed" in none.note


def test_the_cluster_says_its_room_under_the_submit_limit(tmp_path, slurm_limited):
    _p, cfg = _project(tmp_path, slurm_limited)
    queue_empty(slurm_limited)
    d = fast()
    cap = d.call("chester_capacity", cfg.backend("hpc", d.manager), runs=[])
    assert (cap.room, cap.free, cap.wait_s, cap.paid) == (ROOM, ROOM, 0.0, False), cap


def test_a_pool_puts_no_more_on_the_cluster_than_its_room(tmp_path, slurm_limited,
                                                           monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    queue_empty(slurm_limited)
    project, cfg = _project(tmp_path, slurm_limited)
    values = [f"v{i} '$(y)'\n\u2603" for i in range(6)]
    sweep = launch(fn_value, [{"value": v, "sleep": 0.5} for v in values],
                   backend="anywhere", exp_prefix="hpcpool", config=cfg, dispatcher=fast())
    members = [r.member for r in sweep.rows()]
    # the cluster starts 2 now (its room: the limit less its supervisor's slot), this
    # machine 1; the other 3 queue where room is left: here (the cluster has none left)
    assert members == ["hpc"] * ROOM + ["one"] * 4, members
    states = sweep.wait(timeout=180, poll_interval=0.3, pull=True, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, [(r.name, r.reason) for r in sweep.rows()]
    for r, v in zip(sweep.rows(), values, strict=True):
        assert (project / r.local_dir / "value.txt").read_text(encoding="utf-8") == v
        st = json.loads((project / r.local_dir / ".chester" / "status.json").read_text())
        assert st["attempt"] == 1


def fn_count(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    with open(_o.path.join(log_dir, "ran.txt"), "a", encoding="utf-8") as f:
        f.write(variant["value"] + "\n")
    _t.sleep(variant.get("sleep", 0))


def test_runs_no_member_has_room_for_are_placed_while_the_laptop_watches(
        tmp_path, slurm_limited, monkeypatch):
    queue_empty(slurm_limited)
    project = tmp_path / "project"
    project.mkdir(parents=True)
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump({"log_dir": "data", "backends": {
        "hpc": {"type": "slurm", "poll_interval": 0.3, "scheduler_env": dict(slurm_limited.env)},
        "anywhere": {"type": "pool", "members": ["hpc"]}}}))
    cfg = load_config(project / "chester.yaml")
    values = [f"r{i} `x` \u00fc" for i in range(5)]
    sweep = launch(fn_count, [{"value": v, "sleep": 0.5} for v in values], backend="anywhere",
                   exp_prefix="held", config=cfg, dispatcher=fast())
    rows = sweep.rows()
    assert [r.member for r in rows] == ["hpc"] * ROOM + [None] * 3
    assert any("3 runs wait for room in the pool" in t for _l, t in sweep.notices)
    states = sweep.wait(timeout=180, poll_interval=0.3, pull=True, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, [(r.name, r.reason) for r in sweep.rows()]
    for r, v in zip(sweep.rows(), values, strict=True):
        assert r.member == "hpc" and r.moved_from is None
        assert (project / r.local_dir / "ran.txt").read_text(encoding="utf-8") == v + "\n"


def test_a_run_waiting_past_max_wait_moves_once_to_a_member_with_room(
        tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    slurm_cluster.wait_idle()
    blocker = slurm_cluster.sbatch("-c", "8", "-o", "/dev/null", "--wrap", "sleep 300")
    try:
        project = tmp_path / "project"
        project.mkdir(parents=True)
        (project / ".git").mkdir()
        (project / "chester.yaml").write_text(yaml.safe_dump({"log_dir": "data", "backends": {
            "hpc": {"type": "slurm", "poll_interval": 0.3,
                    "scheduler_env": dict(slurm_cluster.env)},
            "one": {"type": "local", "max_parallel": 1},
            "anywhere": {"type": "pool", "members": ["hpc", "one"], "max_wait": "2s"}}}))
        cfg = load_config(project / "chester.yaml")
        values = [f"m{i} $(id) \u2603" for i in range(3)]
        sweep = launch(fn_count, [{"value": v, "sleep": 0.5} for v in values],
                       backend="anywhere", exp_prefix="moves", config=cfg, dispatcher=fast())
        first = {r.name: r.member for r in sweep.rows()}
        on_hpc = [n for n, m in first.items() if m == "hpc"]
        assert on_hpc, first  # the cluster is full: its runs wait there
        states = sweep.wait(timeout=180, poll_interval=0.3, pull=True, progress=False)
        assert set(states.values()) == {State.SUCCEEDED}, \
            [(r.name, r.state, r.reason, r.submit_state, r.member) for r in sweep.rows()]
        for r, v in zip(sweep.rows(), values, strict=True):
            # every run ran exactly once, on this machine: those placed on the cluster
            # moved (once) after their cancel there came before they started
            assert (project / r.local_dir / "ran.txt").read_text(encoding="utf-8") == v + "\n"
            assert r.member == "one"
            assert r.moved_from == ("hpc" if r.name in on_hpc else None)
            if r.name in on_hpc:
                assert any("moved: cancelled before it started" == why
                           for _t, _s, why in sweep.store.history(r.id))
    finally:
        slurm_cluster.run(["scancel", blocker], check=False)


def test_parse_spend_counts_billing_by_elapsed_hours_of_these_tasks():
    from chester_backend_slurm.capacity import parse_spend

    out = ("7_0|3600|billing=2,cpu=2,mem=1G,node=1\n7_1|1800|cpu=4,mem=1G,node=1\n"
           "8|3600|billing=9,cpu=9\n7_[2-3]|0|billing=2\n")
    assert parse_spend(out, ["7_0", "7_1", "7_2"]).su == pytest.approx(2.0 + 2.0)


def test_service_units_used_up_send_no_new_runs_to_the_cluster(tmp_path, slurm_cluster,
                                                              monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    slurm_cluster.wait_idle()
    project = tmp_path / "project"
    project.mkdir(parents=True)
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump({"log_dir": "data", "backends": {
        "hpc": {"type": "slurm", "poll_interval": 0.3, "scheduler_env": dict(slurm_cluster.env)},
        "one": {"type": "local", "max_parallel": 1},
        "anywhere": {"type": "pool", "members": ["hpc", "one"], "budget": {"su": 0.0001}}}}))
    cfg = load_config(project / "chester.yaml")
    first = launch(fn_count, [{"value": "a", "sleep": 1.5}], backend="anywhere",
                   exp_prefix="units", config=cfg, dispatcher=fast())
    assert [r.member for r in first.rows()] == ["hpc"]
    assert set(first.wait(timeout=120, poll_interval=0.3, progress=False).values()) == \
        {State.SUCCEEDED}
    d = fast()

    def used():  # sacct has the job's elapsed time a moment after the run's end
        return d.call("chester_spend", cfg.backend("hpc", d.manager),
                      handles=[r.handle for r in first.rows()])

    wait_until(lambda: used().su > 0, 60, "sacct to have the job's elapsed time",
               interval=0.5)
    assert used().su >= 1 / 3600  # at least one CPU for a second
    second = launch(fn_count, [{"value": "b"}], backend="anywhere", exp_prefix="units",
                    config=cfg, dispatcher=fast(), resume=False)
    assert second.rows()[-1].member == "one"
    assert any("service-unit budget used up: no new runs to 'hpc'" in t
               for _l, t in second.notices)


def test_cancel_reaches_runs_not_placed_yet(tmp_path, slurm_limited):
    queue_empty(slurm_limited)
    project = tmp_path / "project"
    project.mkdir(parents=True)
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump({"log_dir": "data", "backends": {
        "hpc": {"type": "slurm", "poll_interval": 0.3, "scheduler_env": dict(slurm_limited.env)},
        "anywhere": {"type": "pool", "members": ["hpc"]}}}))
    cfg = load_config(project / "chester.yaml")
    sweep = launch(fn_count, [{"value": f"c{i}", "sleep": 30} for i in range(5)],
                   backend="anywhere", exp_prefix="stop", config=cfg, dispatcher=fast())
    assert [r.member for r in sweep.rows()] == ["hpc"] * ROOM + [None] * 3
    stopped = sweep.cancel()
    assert set(stopped) == {r.name for r in sweep.rows()}
    states = sweep.wait(timeout=120, poll_interval=0.3, progress=False)
    assert set(states.values()) == {State.CANCELLED}
    rows = sweep.rows()
    assert [r.reason for r in rows[ROOM:]] == ["cancelled before it was placed"] * 3
    assert all(r.member is None and r.handle is None for r in rows[ROOM:])
    assert not any((project / r.local_dir / "ran.txt").exists() for r in rows[ROOM:])
