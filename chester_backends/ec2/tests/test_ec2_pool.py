"""EC2 as a pool's paid member (issue 27), against moto and the farm: it says what a run
costs at most (``chester_capacity``) and what its instances have cost (``chester_spend``);
a pool sends it runs only past ``max_wait`` and only as far as the budget holds."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cloudpickle
import yaml
from ec2farm import REGION, ec2_config  # type: ignore[import-not-found]

from chester.config import load_config
from chester.dispatch import Dispatcher
from chester.launcher import launch
from chester.plugin.records import State

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CHESTER = [sys.executable, "-m", "chester.cli"]
PER_RUN = 0.0104  # t3.micro's on-demand list price for one hour (time_limit_s: 3600)


def fn_value(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    _t.sleep(variant.get("sleep", 0))
    with open(_o.path.join(log_dir, "value.txt"), "w", encoding="utf-8") as f:
        f.write(variant["value"])


def _project(tmp_path, **pool):
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    aws = ec2_config(time_limit_s=3600)["backends"]["ec2"]
    cfg = {"log_dir": "data",
           "backends": {"aws": aws, "one": {"type": "local", "max_parallel": 1},
                        "anywhere": {"type": "pool", "members": ["one", "aws"], **pool}}}
    (project / "chester.yaml").write_text(yaml.safe_dump(cfg))
    return project, load_config(project / "chester.yaml")


def fast() -> Dispatcher:
    return Dispatcher(sleep=lambda s: time.sleep(min(s, 0.5)))


def test_ec2_says_a_runs_most_and_is_paid(tmp_path, aws):
    _p, cfg = _project(tmp_path)
    d = fast()
    cap = d.call("chester_capacity", cfg.backend("aws", d.manager), runs=[])
    assert cap.paid and cap.usd_per_run_hour == PER_RUN and cap.run_hours == 1.0
    assert cap.room is None and cap.wait_s == 0.0


def test_a_pool_sends_runs_to_ec2_past_max_wait_within_the_budget(tmp_path, aws, farm,
                                                                   monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    # $0.03 holds 2 runs at $0.0104 each at most ($0.0208); a third would pass it
    project, cfg = _project(tmp_path, budget={"usd": 0.03}, max_wait="1s")
    monkeypatch.chdir(project)
    values = [f"v{i} \"q\" $(x) \u00e9" for i in range(5)]
    sweep = launch(fn_value, [{"value": v, "sleep": 1} for v in values], backend="anywhere",
                   exp_prefix="paid", config=cfg, dispatcher=fast())
    members = [r.member for r in sweep.rows()]
    # one free slot here; no wait known here, so past max_wait: 2 runs on EC2 (the budget),
    # the other 2 queue here (a member's runs are handed out together)
    assert members == ["one"] * 3 + ["aws"] * 2, members
    assert any("budget reached: 2 runs not sent to 'aws'" in text for _l, text in sweep.notices)
    states = sweep.wait(timeout=120, poll_interval=0.3, pull=True, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, [(r.name, r.reason) for r in sweep.rows()]
    for r, v in zip(sweep.rows(), values, strict=True):
        assert (project / r.local_dir / "value.txt").read_text(encoding="utf-8") == v
    out = subprocess.run([*CHESTER, "status", "paid", "--json"], cwd=project,
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert [r["member"] for r in doc["runs"]] == members
    spend = doc["spend"]["anywhere"]
    assert 0 < spend["usd"] <= spend["usd_projected"] <= 0.03, spend
    assert spend["line"].startswith("anywhere spend: $") and " of $0.03" in spend["line"]
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION)
    n = sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])
    assert n == 2
