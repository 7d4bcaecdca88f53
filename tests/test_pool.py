"""The ``pool`` backend type (issue 27): its options validated like every backend's, the
placement rule, the store's member column, and a sweep over a pool of local members run,
watched and cancelled as one sweep."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import chester
from chester.config import load_config
from chester.plugin.errors import ConfigError
from chester.plugin.pool import plan_placement, spend_line, usd
from chester.plugin.records import Capacity, Spend, State

CHESTER = [sys.executable, "-m", "chester.cli"]


def _project(tmp_path: Path, backends: dict) -> Path:
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    (project / "chester.yaml").write_text(yaml.safe_dump({"log_dir": "data",
                                                          "backends": backends}))
    return project


def _pool_error(tmp_path: Path, backends: dict, name: str = "anywhere") -> str:
    project = _project(tmp_path, backends)
    with pytest.raises(ConfigError) as err:
        load_config(project / "chester.yaml").backend(name)
    line = str(err.value)
    assert "\n" not in line
    return line


# -- options -------------------------------------------------------------------------------
def test_a_pool_is_validated_with_its_members(tmp_path):
    project = _project(tmp_path, {
        "a": {"type": "local", "max_parallel": 2},
        "anywhere": {"type": "pool", "members": ["a", "local"], "max_wait": "90s",
                     "budget": {"usd": 12.5, "su": 300}, "run_time": "1.5h"}})
    b = load_config(project / "chester.yaml").backend("anywhere")
    assert b.type == "pool"
    assert [m.name for m in b.members] == ["a", "local"]
    assert b.members[0].options.max_parallel == 2
    assert b.options.max_wait_s == 90.0 and b.options.run_time_s == 5400.0
    assert (b.options.budget.usd, b.options.budget.su) == (12.5, 300)


def test_a_pool_waits_ten_minutes_by_default(tmp_path):
    project = _project(tmp_path, {"anywhere": {"type": "pool", "members": ["local"]}})
    b = load_config(project / "chester.yaml").backend("anywhere")
    assert b.options.max_wait_s == 600.0 and b.options.budget.usd is None


@pytest.mark.parametrize(("pool", "extra", "says"), [
    ({"members": ["nowhere"]}, {}, "member 'nowhere': unknown backend 'nowhere'"),
    ({"members": ["anywhere"]}, {}, "the pool 'anywhere' lists itself"),
    ({"members": ["inner"]}, {"inner": {"type": "pool", "members": ["local"]}},
     "member 'inner' is itself a pool"),
    ({"members": ["other"]}, {"other": {"type": "pool", "members": ["anywhere"]}},
     "member 'other' is itself a pool"),
    ({"members": []}, {}, "members is empty"),
    ({"members": ["local", "local"]}, {}, "lists 'local' twice"),
    ({"members": ["local"], "budget": {"eur": 5}}, {}, "backends.anywhere.budget.eur: unknown option"),
    ({"members": ["local"], "budget": {"usd": -1}}, {}, "budget.usd must be at least 0"),
    ({"members": ["local"], "max_wait": "soon"}, {}, "not 'soon'"),
    ({"members": ["local"], "max_wait": True}, {}, "max_wait"),
    ({}, {}, "backends.anywhere.members: missing required option"),
])
def test_bad_pool_options_are_one_line_naming_the_key_and_fix(tmp_path, pool, extra, says):
    line = _pool_error(tmp_path, {"anywhere": {"type": "pool", **pool}, **extra})
    assert says in line
    assert "chester.yaml" in line


# -- placement -------------------------------------------------------------------------------
def _place(n, members, **kw):
    kw = {"max_wait_s": 600.0, "budget_usd": None, "projected_usd": 0.0,
          "run_time_s": None, **kw}
    return plan_placement(n, members, **kw)


def test_free_capacity_first_then_the_soonest_start_then_spread():
    p = _place(12, [("lab", Capacity(free=3)), ("hpc", Capacity(free=2, room=4, wait_s=30.0)),
                    ("box", Capacity(free=0))])
    # lab's 3 free, hpc's 2 free, hpc's start within max_wait up to its room (2 more),
    # then the rest spread over the members whose wait nobody knows
    assert dict(p.counts) == {"lab": 3 + 3, "hpc": 4, "box": 2}
    assert p.held == 0


def test_a_paid_member_only_past_max_wait_and_only_within_the_budget():
    aws = Capacity(free=100, paid=True, usd_per_run_hour=0.5, run_hours=2.0)  # $1 a run at most
    lab = Capacity(free=2, wait_s=None)
    soon = _place(10, [("lab", lab), ("hpc", Capacity(free=0, room=None, wait_s=60.0)),
                       ("aws", aws)], budget_usd=50.0)
    assert dict(soon.counts) == {"lab": 2, "hpc": 8}  # starts within max_wait: no money
    late = _place(10, [("lab", lab), ("hpc", Capacity(free=0, room=3, wait_s=3600.0)),
                       ("aws", aws)], budget_usd=4.5, projected_usd=1.0)
    # $3.50 left of the cap: 3 runs at $1 (projected $4.00, never past $4.50)
    assert dict(late.counts) == {"lab": 2 + 2, "aws": 3, "hpc": 3}
    assert late.projected_usd == pytest.approx(4.0) and late.projected_usd <= 4.5
    assert any(n.startswith("budget reached: 5 runs not sent to 'aws'") for n in late.notices)


def test_no_budget_or_no_cost_bound_sends_nothing_to_a_paid_member():
    aws = Capacity(free=100, paid=True, usd_per_run_hour=0.5)
    p = _place(3, [("aws", aws)], budget_usd=None)
    assert p.counts == () and p.held == 3
    assert "the pool has no budget" in p.notices[0]
    q = _place(3, [("aws", aws)], budget_usd=10.0)
    assert q.counts == () and "cannot be projected" in q.notices[0]
    r = _place(3, [("aws", aws)], budget_usd=10.0, run_time_s=3600.0)
    assert dict(r.counts) == {"aws": 3} and r.projected_usd == pytest.approx(1.5)


def test_runs_no_member_has_room_for_are_held_with_a_line():
    p = _place(7, [("hpc", Capacity(free=1, room=2))])
    assert dict(p.counts) == {"hpc": 2} and p.held == 5
    assert "5 runs wait for room in the pool" in p.notices[-1]


def test_money_is_printed_as_money():
    assert usd(1452.3) == "$1,452.30" and usd(0.5) == "$0.50" and usd(0.00003) == "$0.00003"
    line = spend_line(Spend(usd=1.2, usd_projected=3.456, su=12.0, gpu_hours=3.25),
                      chester.plugin.pool.Budget(usd=50.0))
    assert line == "spend: $1.20 so far, $3.46 projected of $50.00; 12.0 SU; 3.2 GPU-hours"


# -- the store -----------------------------------------------------------------------------
def test_a_store_of_schema_3_gains_the_member_columns(tmp_path):
    from chester.store import SCHEMA_VERSION, Store

    path = tmp_path / "jobs.db"
    Store(path).close()
    db = sqlite3.connect(str(path))
    db.execute("ALTER TABLE runs DROP COLUMN member")
    db.execute("ALTER TABLE runs DROP COLUMN moved_from")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    store = Store(path)
    _s, rows = store.create_sweep(exp_prefix="p", backend="anywhere",
                                  batch_dir=tmp_path / "d", fingerprint="f",
                                  runs=[{"suffix": "a"}])
    store.place([(rows[0].id, "lab", "/remote/d/1_a")])
    row = store.run(rows[0].id)
    assert (row.member, row.remote_dir, row.where) == ("lab", "/remote/d/1_a", "lab")
    store.close()
    assert sqlite3.connect(str(path)).execute("PRAGMA user_version").fetchone()[0] \
        == SCHEMA_VERSION == 4


# -- a sweep over local members --------------------------------------------------------------
def fn_record(variant, log_dir, exp_name):
    import os
    import time

    print(f"value of {exp_name}: {variant['v']!r}", flush=True)
    time.sleep(variant.get("sleep", 0))
    if variant.get("fail") and not os.environ.get("CHESTER_RESUMED"):
        raise RuntimeError("the first attempt fails")
    with open(os.path.join(log_dir, "value.json"), "a") as f:
        f.write(json.dumps(variant["v"]) + "\n")


HOSTILE = ["plain", "quote ' \" `", "$(touch /tmp/pwned-pool)", "new\nline", "ünï ☃ 𝄞"]


def test_a_pool_sweep_runs_each_run_once_on_its_member(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = _project(tmp_path, {
        "two": {"type": "local", "max_parallel": 2},
        "anywhere": {"type": "pool", "members": ["two", "local"]}})
    monkeypatch.chdir(project)
    cfg = load_config(project / "chester.yaml")
    sweep = chester.launch(fn_record, [{"v": v} for v in HOSTILE], backend="anywhere",
                           exp_prefix="pooled", config=cfg)
    # each member has 2 slots free (local's default is the 2 cores here): 2 runs each, the
    # fifth to the first member whose wait nobody knows
    members = [r.member for r in sweep.rows()]
    assert members == ["two"] * 3 + ["local"] * 2, members
    states = sweep.wait(timeout=120, poll_interval=0.2)
    assert set(states.values()) == {State.SUCCEEDED}
    for r, v in zip(sweep.rows(), HOSTILE, strict=True):
        assert (Path(r.local_dir) / "value.json").read_text() == json.dumps(v) + "\n"
    assert not Path("/tmp/pwned-pool").exists()
    out = subprocess.run([*CHESTER, "status", "pooled", "--json"], cwd=project,
                         capture_output=True, text=True, check=True).stdout
    runs = json.loads(out)["runs"]
    assert [r["member"] for r in runs] == members
    assert {r["backend"] for r in runs} == {"anywhere"}
    tsv = subprocess.run([*CHESTER, "status", "pooled"], cwd=project, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    head = tsv[0].split("\t")
    assert [line.split("\t")[head.index("member")] for line in tsv[1:]] == members
    for n in (1, 5):  # one run on each member
        logs = subprocess.run([*CHESTER, "logs", f"pooled:{n}"], cwd=project,
                              capture_output=True, text=True, check=True).stdout
        assert logs == f"value of {sweep.rows()[n - 1].name}: {HOSTILE[n - 1]!r}\n"


def test_cancel_and_logs_reach_each_runs_member(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = _project(tmp_path, {
        "one": {"type": "local", "max_parallel": 1},
        "anywhere": {"type": "pool", "members": ["one", "local"]}})
    monkeypatch.chdir(project)
    cfg = load_config(project / "chester.yaml")
    sweep = chester.launch(fn_record, [{"v": i, "sleep": 60} for i in range(3)],
                           backend="anywhere", exp_prefix="long", config=cfg)
    assert {r.member for r in sweep.rows()} == {"one", "local"}
    out = subprocess.run([*CHESTER, "cancel", "long"], cwd=project, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    states = sweep.wait(timeout=60, poll_interval=0.2)
    assert set(states.values()) == {State.CANCELLED}
    assert not any((Path(r.local_dir) / "value.json").exists() for r in sweep.rows())


def test_relaunch_runs_a_failed_run_again_on_its_member(tmp_path, monkeypatch):
    from chester.launcher import relaunch

    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = _project(tmp_path, {
        "one": {"type": "local", "max_parallel": 1},
        "anywhere": {"type": "pool", "members": ["one", "local"]}})
    monkeypatch.chdir(project)
    cfg = load_config(project / "chester.yaml")
    sweep = chester.launch(fn_record, [{"v": i, "fail": i == 2} for i in range(3)],
                           backend="anywhere", exp_prefix="again", config=cfg)
    before = [r.member for r in sweep.rows()]
    states = sweep.wait(timeout=60, poll_interval=0.2)
    assert list(states.values()) == [State.SUCCEEDED, State.SUCCEEDED, State.FAILED]
    _sw, names = relaunch("again", failed=True, config=cfg)
    assert names == [sweep.rows()[2].name]
    states = sweep.wait(timeout=60, poll_interval=0.2)
    assert set(states.values()) == {State.SUCCEEDED}
    assert [r.member for r in sweep.rows()] == before
    assert sweep.rows()[2].attempt == 2


def test_a_pool_refuses_dependent_order_in_one_line(tmp_path, monkeypatch):
    project = _project(tmp_path, {"anywhere": {"type": "pool", "members": ["local"]}})
    monkeypatch.chdir(project)
    with pytest.raises(chester.plugin.errors.UserError, match="is a pool"):
        chester.launch(fn_record, [{"v": 1}], backend="anywhere", order="dependent",
                       config=load_config(project / "chester.yaml"))


def test_used_up_service_units_close_the_members_that_charge_them():
    hpc = Capacity(free=4, room=10, wait_s=0.0, charges_su=True)
    lab = Capacity(free=1)
    p = _place(3, [("hpc", hpc), ("lab", lab)], su_left=0.0)
    assert dict(p.counts) == {"lab": 3}
    assert p.notices[0] == "service-unit budget used up: no new runs to 'hpc'"
    q = _place(3, [("hpc", hpc), ("lab", lab)], su_left=5.0)
    assert dict(q.counts) == {"hpc": 3} and not q.notices
