"""Capacity through EC2 Fleet (type instant) and hourly cost estimates, against moto.

moto serves CreateFleet of type instant with a launch template, per-fleet user-data and
instance tags, and DescribeSpotPriceHistory. It never runs out of capacity, so capacity is
AWS's answer played by botocore handlers: pools refused per override come back as the
response's ``Errors`` (what an instant fleet reports for pools it could not use), whole calls
refused come back as API errors. Everything else is moto.
"""

from __future__ import annotations

import io
import json
import threading
from contextlib import redirect_stdout

import pytest
from test_ec2_bounds import (  # type: ignore[import-not-found]  # noqa: F401
    _ec2,
    _env,
    _fns_importable,
    _instances,
    _launch,
)

from chester.errors import BackendError, TransientBackendError


class _Pools:
    """AWS refusing some pools of a CreateFleet: ``refuse(type, subnet, market)`` gives the
    error code of a pool (None: it has capacity). The refused overrides are taken out of the
    request moto sees and come back in ``Errors``; with none left the answer has no instance."""

    def __init__(self, client, refuse):
        self.client, self.refuse, self.calls = client, refuse, []
        self.local = threading.local()
        self.lock = threading.Lock()

    def params(self, params, **kw):
        cfg = params["LaunchTemplateConfigs"][0]
        market = params["TargetCapacitySpecification"]["DefaultTargetCapacityType"]
        keep, errs = [], []
        for ov in cfg["Overrides"]:
            code = self.refuse(ov["InstanceType"], ov.get("SubnetId"), market)
            if code:
                errs.append({"LaunchTemplateAndOverrides": {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateName": cfg["LaunchTemplateSpecification"][
                            "LaunchTemplateName"], "Version": "1"},
                    "Overrides": {k: ov[k] for k in ("InstanceType", "SubnetId") if k in ov}},
                    "Lifecycle": market, "ErrorCode": code, "ErrorMessage": f"no: {code}"})
            else:
                keep.append(ov)
        with self.lock:
            self.calls.append((market, [(ov["InstanceType"], ov.get("SubnetId"))
                                        for ov in cfg["Overrides"]]))
        self.local.errs, self.local.empty = errs, not keep
        if keep:
            cfg["Overrides"] = keep

    def before(self, **kw):
        if self.local.empty:
            from botocore.awsrequest import AWSResponse

            return AWSResponse("https://ec2", 200, {}, None), {"FleetId": "fleet-0",
                                                              "Instances": []}
        return None

    def after(self, parsed, **kw):
        parsed["Errors"] = list(parsed.get("Errors") or ()) + self.local.errs

    def __enter__(self):
        ev = self.client.meta.events
        ev.register("before-parameter-build.ec2.CreateFleet", self.params)
        ev.register("before-call.ec2.CreateFleet", self.before)
        ev.register("after-call.ec2.CreateFleet", self.after)
        return self

    def __exit__(self, *exc):
        ev = self.client.meta.events
        ev.unregister("before-parameter-build.ec2.CreateFleet", self.params)
        ev.unregister("before-call.ec2.CreateFleet", self.before)
        ev.unregister("after-call.ec2.CreateFleet", self.after)


class _RefuseCall:
    """AWS refusing whole calls of one operation with an error code."""

    def __init__(self, client, op, code, when=lambda n, p: True):
        self.client, self.op, self.code, self.when, self.calls = client, op, code, when, []
        self.local = threading.local()
        self.lock = threading.Lock()

    def params(self, params, **kw):
        self.local.params = dict(params)

    def __call__(self, **kw):
        with self.lock:
            self.calls.append(self.local.params)
            n = len(self.calls)
        if self.when(n, self.local.params):
            from botocore.awsrequest import AWSResponse

            return AWSResponse("https://ec2", 400, {}, None), {
                "Error": {"Code": self.code, "Message": f"refused: {self.code}"},
                "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    def __enter__(self):
        self.client.meta.events.register(f"before-parameter-build.ec2.{self.op}", self.params)
        self.client.meta.events.register(f"before-call.ec2.{self.op}", self)
        return self

    def __exit__(self, *exc):
        self.client.meta.events.unregister(f"before-parameter-build.ec2.{self.op}", self.params)
        self.client.meta.events.unregister(f"before-call.ec2.{self.op}", self)


def _subnets(n=2):
    return [s["SubnetId"] for s in _ec2().describe_subnets()["Subnets"]][:n]


def _backend(tmp_path, **over):
    """The test's project, its ec2 backend config, and the EC2 client of the process's ec2
    backend instance (the one every launch of the test uses: see ``aws``), on which AWS's
    answers are shaped."""
    from chester.plugin.manager import get_plugin_manager

    env = _env(tmp_path, **over)
    backend = env.config.backend("ec2")
    return env, backend, get_plugin_manager().get_backend("ec2").plugin.client(
        "ec2", backend.options)


def _spot_price(itype, zone):
    hist = _ec2().describe_spot_price_history(
        InstanceTypes=[itype], Filters=[{"Name": "availability-zone", "Values": [zone]}])
    return max(float(h["SpotPrice"]) for h in hist["SpotPriceHistory"])


# -- launching through EC2 Fleet --------------------------------------------------------------
def test_fleet_launches_over_types_and_subnets_and_the_runs_succeed(tmp_path, farm, capfd):
    subnets = _subnets()
    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"], subnet_ids=subnets)
    with _Pools(ec2, lambda t, sn, m: None) as pools:
        sweep = _launch(env, [{"seconds": 0}, {"seconds": 0, "i": 1}], "fleet")
    assert "via EC2 Fleet (capacity-optimized)" in sweep.prepared.summary
    # one instant fleet per instance, every (type, subnet) pool an override, spot
    assert len(pools.calls) == 2
    assert all(m == "spot" and sorted(p) == sorted((t, s) for t in ("t3.micro", "t3.small")
                                                   for s in subnets) for m, p in pools.calls)
    args = json.loads(sweep.prepared.scripts["create_fleet"])
    assert args["Type"] == "instant"
    assert args["SpotOptions"] == {"AllocationStrategy": "capacity-optimized",
                                   "InstanceInterruptionBehavior": "terminate"}
    spec = args["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]
    assert spec["LaunchTemplateSpecificationUserData"] == "<user-data>"
    # the launch template carries what every instance needs: IMDSv2 only, terminate on
    # shutdown, the sweep's volume tags
    from chester_backend_ec2.plugin import sweep_key

    key = sweep_key(backend, "fleet")
    (lt,) = _ec2().describe_launch_templates(
        Filters=[{"Name": "tag:chester:sweep", "Values": [key]}])["LaunchTemplates"]
    data = _ec2().describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert "UserData" not in data and "InstanceType" not in data
    insts = _instances(sweep=key)
    assert len(insts) == 2 and {i["InstanceLifecycle"] for i in insts} == {"spot"}
    assert {r.handle.remote_id for r in sweep.runs} == {i["InstanceId"] for i in insts}
    # the user-data given to the fleet is what each instance runs: both runs succeed
    states = sweep.wait(timeout=90, poll_interval=0.3, progress=False, pull=True)
    assert {s.value for s in states.values()} == {"succeeded"}, \
        [(r.reason, r.stderr_tail) for r in sweep.runs]
    # the launch summary printed at submit prices them at the spot price now
    err = capfd.readouterr().err
    assert "2 instance(s), 2 started now" in err
    expected = sum(_spot_price(i["InstanceType"], i["Placement"]["AvailabilityZone"])
                   for i in insts)
    assert expected > 0  # the endpoint publishes spot prices
    from chester_backend_ec2.prices import usd

    assert f"estimated cost about {usd(expected)}/h (spot price now for 2)" in err
    assert "e-0" not in err  # money reads as money, whatever the price


def test_a_preempted_run_is_requeued_through_a_fleet(tmp_path, farm):
    from test_ec2_bounds import _preempt, _until  # type: ignore[import-not-found]

    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"], subnet_ids=_subnets(),
                                 max_requeues=1)
    with _Pools(ec2, lambda t, sn, m: None) as pools:
        sweep = _launch(env, [{"seconds": 0, "preempt": True}], "fleetrq")
        run = sweep.runs[0]
        first = run.handle.remote_id
        _until(lambda: sweep.status()[run.name].value == "running", what="running")
        _preempt(farm, sweep, run, first)
        assert sweep.status()[run.name].value == "requeued"
        states = sweep.wait(timeout=90, poll_interval=0.3, progress=False, pull=True)
    assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
    assert len(pools.calls) == 2  # the first instance and its replacement, each one fleet
    (second,) = [i for i in farm.instances if i != first]
    got = _ec2().describe_instances(InstanceIds=[second])["Reservations"][0]["Instances"][0]
    assert {t["Key"]: t["Value"] for t in got["Tags"]}["chester:attempt"] == "2"
    assert (run.log_dir / "progress.txt").read_text() == "start 1\nstart 2\n"


def test_fleet_pool_errors_are_capacity_and_fall_back_to_on_demand(tmp_path, aws):
    from chester_backend_ec2.plugin import Ec2Backend

    plugin = Ec2Backend()

    subnets = _subnets()
    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"], subnet_ids=subnets,
                                 on_demand_fallback=True)
    assert plugin.use_fleet(backend.options)

    def refuse(t, sn, market):  # only t3.small spot in the second subnet has room
        if market == "spot" and t == "t3.micro":
            return "InsufficientInstanceCapacity"
        if market == "spot" and sn == subnets[0]:
            return "SpotMaxPriceTooLow"
        return None

    with _Pools(ec2, refuse) as pools:
        inst = plugin.launch_instance(backend, ec2, "s", "chester-g1", "#!/bin/bash\n")
    assert [m for m, _ in pools.calls] == ["spot"]
    assert inst["InstanceType"] == "t3.small" and inst["SubnetId"] == subnets[1]
    assert inst["InstanceLifecycle"] == "spot"
    # no spot in any pool (MaxSpotInstanceCountExceeded per pool): a second fleet, on-demand,
    # in the order the pools were listed
    with _Pools(ec2, lambda t, sn, m: "MaxSpotInstanceCountExceeded" if m == "spot"
                else None) as pools:
        inst = plugin.launch_instance(backend, ec2, "s", "chester-g2", "#!/bin/bash\n")
    assert [m for m, _ in pools.calls] == ["spot", "on-demand"]
    assert inst["InstanceType"] == "t3.micro" and "InstanceLifecycle" not in inst
    got = _ec2().describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0][
        "Instances"][0]
    assert {t["Key"]: t["Value"] for t in got["Tags"]}["chester:group"] == "chester-g2"
    # the whole spot call refused as a capacity error: on-demand too
    with _RefuseCall(ec2, "CreateFleet", "MaxSpotInstanceCountExceeded",
                     lambda n, p: p["TargetCapacitySpecification"][
                         "DefaultTargetCapacityType"] == "spot") as refused:
        inst = plugin.launch_instance(backend, ec2, "s", "chester-g3", "#!/bin/bash\n")
    assert len(refused.calls) == 2 and "InstanceLifecycle" not in inst


def test_fleet_without_capacity_names_every_pool_and_other_errors_are_final(tmp_path, aws):
    from chester_backend_ec2.plugin import Ec2Backend

    plugin = Ec2Backend()

    subnets = _subnets()
    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"], subnet_ids=subnets)
    with _Pools(ec2, lambda t, sn, m: "SpotMaxPriceTooLow") as pools:
        with pytest.raises(BackendError, match="no capacity .*EC2 Fleet.*t3.micro spot.*"
                                               "t3.small spot") as ei:
            plugin.launch_instance(backend, ec2, "s", "chester-g4", "#!/bin/bash\n")
    assert not isinstance(ei.value, TransientBackendError)
    assert [m for m, _ in pools.calls] == ["spot"]  # no on-demand unless asked for
    # no room at all: retried later by the dispatcher
    with _Pools(ec2, lambda t, sn, m: "InsufficientInstanceCapacity"):
        with pytest.raises(TransientBackendError, match="InsufficientInstanceCapacity"):
            plugin.launch_instance(backend, ec2, "s", "chester-g5", "#!/bin/bash\n")
    # a pool error that is not about capacity is final, and said
    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"], subnet_ids=subnets,
                                 on_demand_fallback=True)
    with _Pools(ec2, lambda t, sn, m: "InvalidParameterValue" if t == "t3.small" else
                "InsufficientInstanceCapacity") as pools:
        with pytest.raises(BackendError, match="t3.small spot .*InvalidParameterValue"):
            plugin.launch_instance(backend, ec2, "s", "chester-g6", "#!/bin/bash\n")
    assert [m for m, _ in pools.calls] == ["spot"]
    assert not [i for i in _instances() if any(
        t["Value"] in ("chester-g4", "chester-g5", "chester-g6") for t in i.get("Tags", ()))]


def test_fleet_refused_midway_leaves_findable_instances_and_a_resume_completes(
        tmp_path, farm, monkeypatch):
    from chester_backend_ec2.plugin import sweep_key

    from chester.cli import main

    farm.paused = True
    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"])
    monkeypatch.chdir(env.project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    monkeypatch.setattr("chester.config._cached", None)
    variants = [{"seconds": 0, "i": i} for i in range(10)]
    key = sweep_key(backend, "fleet10")
    with _RefuseCall(ec2, "CreateFleet", "VcpuLimitExceeded", lambda n, p: n >= 4):
        with pytest.raises(BackendError, match="3 of 10 instances"):
            _launch(env, variants, "fleet10")
    assert len(_instances(("pending", "running"), key)) == 3
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "ls", key, "--json"]) == 0
    rows = json.loads(out.getvalue())
    assert len(rows) == 3 and {r["market"] for r in rows} == {"spot"}
    zones = {i["InstanceId"]: i["Placement"]["AvailabilityZone"] for i in _instances(sweep=key)}
    assert [r["usd_per_hour"] for r in rows] == [_spot_price(r["type"], zones[r["instance"]])
                                                 for r in rows]
    assert {r["price_source"] for r in rows} == {"spot price now"}
    sweep = _launch(env, variants, "fleet10")
    insts = _instances(("pending", "running"), key)
    assert len(insts) == 10
    assert len({t["Value"] for i in insts for t in i["Tags"] if t["Key"] == "chester:group"}) \
        == 10
    assert {r.handle.remote_id for r in sweep.runs} == {i["InstanceId"] for i in insts}
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "kill", key]) == 0
    assert "terminated 10 instance(s)" in out.getvalue()
    assert "deleted 1 launch template(s)" in out.getvalue()
    assert not _instances(("pending", "running"), key)


def test_no_fleet_permission_falls_back_to_run_instances_under_auto(tmp_path, aws):
    from chester_backend_ec2.plugin import Ec2Backend

    plugin = Ec2Backend()  # new: it has asked for no fleet and made no template yet
    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"])
    with _RefuseCall(ec2, "CreateLaunchTemplate", "UnauthorizedOperation") as refused:
        inst = plugin.launch_instance(backend, ec2, "s", "chester-g7", "#!/bin/bash\n")
        assert "LaunchedBy" not in inst and inst["InstanceType"] == "t3.micro"  # RunInstances
        assert len(refused.calls) == 1
        plugin.launch_instance(backend, ec2, "s", "chester-g8", "#!/bin/bash\n")
        assert len(refused.calls) == 1  # remembered: no second try by this backend
    # asked for explicitly, the fleet's refusal is the error
    env, backend, ec2 = _backend(tmp_path, instance_types=["t3.small"], launch_api="fleet")
    with _RefuseCall(ec2, "CreateFleet", "UnauthorizedOperation"):
        with pytest.raises(BackendError, match="create_fleet.*UnauthorizedOperation"):
            plugin.launch_instance(backend, ec2, "s", "chester-g9", "#!/bin/bash\n")


def test_fleet_is_refused_where_it_cannot_work(tmp_path, aws):
    from chester_backend_ec2.plugin import Ec2Backend

    plugin = Ec2Backend()

    from chester.errors import ConfigError

    with pytest.raises(ConfigError, match="launch_api: fleet cannot .*interruption_behavior: "
                                          "stop"):
        _env(tmp_path, launch_api="fleet", interruption_behavior="stop").config.backend("ec2")
    # auto keeps persistent spot requests (stop/hibernate) on RunInstances
    _, backend, _ = _backend(tmp_path, instance_types=["t3.small"], interruption_behavior="stop")
    assert not plugin.use_fleet(backend.options)
    # a run_instances_extra key a launch template cannot hold
    _, backend, _ = _backend(tmp_path, instance_types=["t3.small"],
                             run_instances_extra={"PrivateIpAddress": "10.0.0.9"})
    assert not plugin.use_fleet(backend.options)
    env = _env(tmp_path, instance_types=["t3.small"], launch_api="fleet",
               run_instances_extra={"PrivateIpAddress": "10.0.0.9"})
    from chester.errors import UserError

    with pytest.raises(UserError, match="PrivateIpAddress, which a launch template cannot"):
        _launch(env, [{"seconds": 0}], "badextra")
    assert not _instances()


# -- hourly cost -------------------------------------------------------------------------------
def test_money_reads_as_money():
    from chester_backend_ec2.prices import usd

    assert [usd(x) for x in (0.00001, 0.00003, 0.0000123, 0.0104, 0.0208, 0.5, 0.0999999,
                             1, 2.012, 1452.3, 0)] == [
        "$0.00001", "$0.00003", "$0.0000123", "$0.0104", "$0.0208", "$0.50", "$0.10",
        "$1.00", "$2.01", "$1,452.30", "$0.00"]


def test_prepare_summary_bounds_the_hourly_cost_without_calling_aws(tmp_path, monkeypatch):
    from chester.launcher import launch

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there

    n = [0]

    def summary(**over):
        env = _env(tmp_path, **over)
        import ec2bounds  # type: ignore[import-not-found]

        from chester.dispatch import Dispatcher

        n[0] += 1
        sweep = launch(ec2bounds.fn_bounded, [{"i": i} for i in range(2)], backend="ec2",
                       exp_prefix=f"dry{n[0]}", config=env.config, dry_run=True,
                       dispatcher=Dispatcher(sleep=lambda s: None))
        return sweep.prepared.summary

    import importlib

    importlib.invalidate_caches()
    assert "cost: about $2.01/h on-demand" in summary(spot=False, instance_type="g5.xlarge")
    assert "cost: spot at most $2.01/h (the on-demand price" in \
        summary(instance_type="g5.xlarge")
    assert "cost: spot at most $1.00/h (max_price" in summary(max_price="0.5")
    assert "cost: about $1.00/h on-demand" in summary(spot=False, hourly_price=0.5,
                                                         instance_type="x9.huge")
    assert "cost: about $0.60/h on-demand" in summary(
        spot=False, instance_type="g5.xlarge", hourly_price={"g5.xlarge": 0.3})
    assert "hourly cost unknown for x9.huge (set hourly_price)" in \
        summary(spot=False, instance_type="x9.huge")
    # several types: the dearest bounds it
    assert "cost: about $2.42/h on-demand" in summary(
        spot=False, instance_type="g5.xlarge", instance_types=["g5.2xlarge"])


def test_submit_and_ls_show_on_demand_prices_or_unknown(tmp_path, farm, monkeypatch, capfd):
    from chester_backend_ec2.plugin import sweep_key

    from chester.cli import main

    farm.paused = True
    env = _env(tmp_path, spot=False)
    monkeypatch.chdir(env.project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    monkeypatch.setattr("chester.config._cached", None)
    _launch(env, [{"seconds": 0}, {"seconds": 0, "i": 1}], "ondemand")
    err = capfd.readouterr().err
    assert "2 on-demand t3.micro" in err
    assert "estimated cost about $0.0208/h (on-demand list price (us-east-1) for 2)" in err
    key = sweep_key(env.config.backend("ec2"), "ondemand")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "ls", key, "--json"]) == 0
    rows = json.loads(out.getvalue())
    assert [(r["market"], r["usd_per_hour"], r["price_source"]) for r in rows] == \
        [("on-demand", 0.0104, "on-demand list price (us-east-1)")] * 2
    # a type chester has no price for reads unknown, in the summary and in ls
    env = _env(tmp_path, spot=False, instance_type="m6i.large")
    _launch(env, [{"seconds": 0}], "unpriced")
    assert "estimated cost hourly cost unknown (unknown for 1; set hourly_price)" in \
        capfd.readouterr().err
    key = sweep_key(env.config.backend("ec2"), "unpriced")
    monkeypatch.setattr("chester.config._cached", None)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ec2", "ls", key]) == 0
    assert "unknown" in out.getvalue() and "m6i.large" in out.getvalue()
    assert "hourly cost unknown" in out.getvalue()
    # hourly_price, per type
    env = _env(tmp_path, spot=False, instance_type="m6i.large",
               hourly_price={"m6i.large": 0.25})
    _launch(env, [{"seconds": 0}], "priced")
    assert "about $0.25/h (hourly_price for 1)" in capfd.readouterr().err
