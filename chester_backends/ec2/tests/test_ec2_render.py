"""Rendering, option validation and import hygiene (no AWS endpoint needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from chester_backend_ec2 import render
from chester_backend_ec2.options import Ec2Options

from chester.config import build_options
from chester.errors import ConfigError
from chester.remote import runtime
from chester.testing import check_golden
from chester.types import BackendConfig

GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str, text: str) -> None:
    text = text.replace(runtime.build().name, "RUNTIME.pyz").replace(
        runtime.build().digest, "DIGEST")  # its digest follows the code
    check_golden(GOLDEN / name, text)


def _backend(tmp_path, **kw) -> BackendConfig:
    opts = Ec2Options(bucket="my-bucket", image_id="ami-1", region="eu-west-1",
                      **kw.pop("options", {}))
    return BackendConfig(name="ec2", type="ec2", options=opts, project_path=tmp_path,
                         log_dir=tmp_path / "data", **kw)


def test_user_data_golden():
    ud = render.user_data(bucket="my-bucket", spec_key="chester/sweeps/s-1/instances/g.json",
                          agent_key="chester/agent/abc.py", region="eu-west-1",
                          endpoint_url=None, python="/opt/conda/bin/python3",
                          bootstrap=["pip install chester-ml==0.3.0"], max_lifetime_s=7200)
    _golden("user-data.sh", ud)
    # the shutdown is scheduled before anything that could hang
    assert ud.index("shutdown -h +120") < ud.index("pip install chester-ml")
    assert len(ud.encode()) < render.USER_DATA_LIMIT
    subprocess.run(["bash", "-n", "-c", ud], check=True)
    # a requeued instance is told its number in its group (its claims depend on it)
    assert "CHESTER_EC2_ATTEMPT" not in ud
    again = render.user_data(bucket="my-bucket", spec_key="k", agent_key="a", region=None,
                             endpoint_url=None, python="python3", bootstrap=[], attempt=3)
    exports = again[:again.index('root="${CHESTER_EC2_ROOT')]
    out = subprocess.run(["bash", "-c", exports + '\nprintf %s "$CHESTER_EC2_ATTEMPT"'],
                         capture_output=True, check=True).stdout.decode()
    assert out == "3"


def test_user_data_quotes_every_value():
    evil = "x'; touch /tmp/ec2-pwned; echo '$(id)`id`\nnext"
    ud = render.user_data(bucket="b-1", spec_key=evil, agent_key=evil, region=evil,
                          endpoint_url=evil, python=evil, bootstrap=[])
    subprocess.run(["bash", "-n", "-c", ud], check=True)
    # run only the exports and read the values back exactly
    exports = ud[:ud.index('root="${CHESTER_EC2_ROOT')]
    for var in ("CHESTER_EC2_SPEC", "CHESTER_EC2_REGION", "CHESTER_EC2_S3_ENDPOINT"):
        out = subprocess.run(["bash", "-c", exports + f'\nprintf %s "${var}"'],
                             capture_output=True, check=True).stdout.decode()
        assert out == evil
    assert not Path("/tmp/ec2-pwned").exists()


@pytest.mark.parametrize("pm,extra", [("python", {}), ("uv", {}),
                                      ("conda", {"conda_env": "my env"})])
def test_setup_scripts_golden(tmp_path, pm, extra):
    b = _backend(tmp_path, package_manager=pm, prepare_commands=("echo prepared",), **extra)
    setup, env, argv = render.setup_scripts(b)
    _golden(f"setup-{pm}.sh", setup + "#--- env.sh\n" + env + "#--- worker\n" + json.dumps(argv)
            + "\n")
    subprocess.run(["bash", "-n", "-c", setup + env], check=True)


def test_run_instances_arguments(tmp_path):
    from chester_backend_ec2.plugin import _run_args

    b = _backend(tmp_path, options={
        "key_name": "me", "subnet_id": "subnet-1", "security_group_ids": ("sg-1",),
        "iam_instance_profile": "chester-runs", "max_price": "0.9",
        "tags": {"team": "ml"}, "run_instances_extra": {"EbsOptimized": True}})
    args = _run_args(b, "sweep-1", "chester-g1", "#!/bin/bash\n")
    assert args["MetadataOptions"]["HttpTokens"] == "required"
    assert args["ClientToken"] == "chester-g1"
    assert args["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert args["InstanceMarketOptions"] == {"MarketType": "spot", "SpotOptions": {
        "InstanceInterruptionBehavior": "terminate", "SpotInstanceType": "one-time",
        "MaxPrice": "0.9"}}
    assert args["IamInstanceProfile"] == {"Name": "chester-runs"}
    assert args["EbsOptimized"] is True and args["KeyName"] == "me"
    tags = {t["Key"]: t["Value"] for t in args["TagSpecifications"][0]["Tags"]}
    assert tags == {"team": "ml", "Name": "chester-sweep-1", "chester:sweep": "sweep-1",
                    "chester:group": "chester-g1"}
    ond = _run_args(_backend(tmp_path, options={"spot": False}), "s", "g", "")
    assert "InstanceMarketOptions" not in ond


def test_client_token_is_deterministic_and_short():
    a = render.group_token(["t1", "t2"])
    assert a == render.group_token(["t1", "t2"]) != render.group_token(["t2", "t1"])
    assert len(a) <= 64


@pytest.mark.parametrize("raw,fragment", [
    ({"bucket": "Bad_Bucket"}, "bucket"),
    ({"bucket": "ok-bucket", "prefix": "../up"}, "prefix"),
    ({"bucket": "ok-bucket", "run_instances_extra": {"UserData": "x"}}, "UserData"),
    ({"bucket": "ok-bucket", "run_instances_extra": {"NetworkInterfaces": [
        {"Groups": [], "Ipv4Prefixes": [{"CidrIp": "0.0.0.0/0"}]}]}}, "world"),
    ({"bucket": "ok-bucket", "tags": {"chester:sweep": "x"}}, "reserved"),
    ({"bucket": "ok-bucket", "interruption_behavior": "explode"}, "interruption_behavior"),
    ({"bucket": "ok-bucket", "runs_per_instance": 0}, "runs_per_instance"),
    ({"bucket": "ok-bucket", "aws_secret_access_key": "x"}, "unknown option"),
    ({}, "bucket"),
])
def test_bad_options_are_config_errors(raw, fragment):
    with pytest.raises(ConfigError) as ei:
        build_options(Ec2Options, raw, path="chester.yaml", key="backends.ec2")
    assert fragment in str(ei.value)


def test_every_option_has_help():
    for f in attrs.fields(Ec2Options):
        assert f.metadata.get("help"), f.name


def test_import_does_not_load_boto3():
    code = ("import sys, chester, chester_backend_ec2.plugin, chester_backend_ec2.options;"
            "from chester.plugins import build_plugin_manager; build_plugin_manager();"
            "print(any(m.split('.')[0] in ('boto3', 'botocore') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_snapshot_follows_rsync_rules(tmp_path):
    (tmp_path / "a.py").write_text("a")
    (tmp_path / "skip.bin").write_text("b")
    (tmp_path / "data" / "run").mkdir(parents=True)
    (tmp_path / "data" / "run" / "x.log").write_text("c")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("d")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "k.bin").write_text("same")
    (tmp_path / "keep" / "dup.txt").write_text("same")
    b = _backend(tmp_path, rsync_include=("keep/k.bin",), rsync_exclude=("*.bin",))
    snap = render.snapshot(b)
    rt = f".chester/runtime/{runtime.build().name}"  # chester's runtime travels with the code
    assert sorted(snap["files"]) == [rt, "a.py", "keep/dup.txt", "keep/k.bin"]
    assert len(snap["paths"]) == 3  # identical contents are one object


def _noop(variant, log_dir, exp_name):
    pass


def test_dry_run_renders_without_touching_aws(tmp_path, monkeypatch):
    from ec2farm import ec2_config  # type: ignore[import-not-found]

    from chester.launcher import launch
    from chester.testing import ConformanceEnv

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    env = ConformanceEnv.create(tmp_path, backend="ec2", config=ec2_config(runs_per_instance=2))
    sweep = launch(_noop, [{"i": i} for i in range(3)], backend="ec2", exp_prefix="dry",
                   config=env.config, dry_run=True)
    p = sweep.prepared
    assert len(p.data["groups"]) == 2 and "3 runs on 2 spot t3.micro" in p.summary
    args = json.loads(p.scripts["run_instances"])
    assert args["UserData"] == "<user-data>"
    assert args["MetadataOptions"]["HttpTokens"] == "required"
    assert p.scripts["user-data"].startswith("#!/bin/bash\n")


@pytest.mark.parametrize("over", [
    {"bootstrap_commands": ["export AWS_SECRET_ACCESS_KEY=abc"]},
    {"bootstrap_commands": ["echo AKIAIOSFODNN7EXAMPLE"]},
    {"tags": {"k": "-----BEGIN RSA PRIVATE KEY-----"}},
])
def test_secret_looking_values_are_refused(tmp_path, over):
    from ec2farm import ec2_config  # type: ignore[import-not-found]

    from chester.errors import UserError
    from chester.launcher import launch
    from chester.testing import ConformanceEnv

    env = ConformanceEnv.create(tmp_path, backend="ec2", config=ec2_config(**over))
    with pytest.raises(UserError, match="instance role"):
        launch(_noop, [{"i": 1}], backend="ec2", exp_prefix="sec", config=env.config,
               dry_run=True)
