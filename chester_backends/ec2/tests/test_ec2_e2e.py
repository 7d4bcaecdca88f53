"""End to end against moto: laptop -> S3 -> "instance" (user-data really executed) -> S3 -> laptop."""

from __future__ import annotations

import base64
import json
import os
import sys
import time

import pytest
from ec2farm import INSTANCE_CREDS, REGION, ec2_config  # type: ignore[import-not-found]

from chester.testing import ConformanceEnv

TRAIN = '''
import json, os, sys, time

def train(variant, log_dir, exp_name):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "assets", "data.txt")) as f:
        data = f.read()
    with open(os.path.join(log_dir, "result.json"), "w") as f:
        json.dump({"variant": dict(variant), "data": data, "exp_name": exp_name}, f)
    os.makedirs(os.path.join(log_dir, "ckpt"), exist_ok=True)
    with open(os.path.join(log_dir, "ckpt", "model.pt"), "wb") as f:
        f.write(b"\\0" * 5000)
    print("trained", exp_name, "lr", variant["lr"])
    print("warning to stderr", file=sys.stderr)
    time.sleep(float(variant.get("sleep", 0)))
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    env = ConformanceEnv.create(tmp_path, backend="ec2", config=ec2_config())
    (env.project / "mytrain.py").write_text(TRAIN)
    (env.project / "assets").mkdir()
    (env.project / "assets" / "data.txt").write_text("dataset-v1")
    (env.project / "big.ckpt").write_bytes(b"x" * 1000)
    (env.project / "chester.yaml").write_text(
        (env.project / "chester.yaml").read_text() + "rsync_exclude: ['*.ckpt']\n")
    from chester.config import load_config

    env.config = load_config(env.project / "chester.yaml")
    monkeypatch.syspath_prepend(str(env.project))
    sys.modules.pop("mytrain", None)
    return env


def _train():
    import mytrain  # type: ignore[import-not-found]

    return mytrain.train


def test_one_run_round_trip(project, farm):
    from chester_backend_ec2 import aws as aws_mod

    from chester.launcher import launch

    ops: list[str] = []
    bcfg = project.config.backend("ec2")
    for kind in ("ec2", "s3"):
        aws_mod.client(kind, bcfg.options).meta.events.register(
            "before-call", lambda model, **kw: ops.append(model.name))
    sweep = launch(_train(), [{"lr": 0.1, "note": "it's $(x) `y`"}], backend="ec2",
                   exp_prefix="e2e", config=project.config)
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    run = sweep.runs[0]
    assert [s.value for s in states.values()] == ["succeeded"], (run.reason, run.stderr_tail)
    res = json.loads((run.log_dir / "result.json").read_text())
    assert res == {"variant": {"lr": 0.1, "note": "it's $(x) `y`"}, "data": "dataset-v1",
                   "exp_name": run.name}
    assert "trained" in (run.log_dir / "stdout.log").read_text()
    assert "warning to stderr" in (run.log_dir / "stderr.log").read_text()
    assert (run.log_dir / "ckpt" / "model.pt").stat().st_size == 5000
    assert (run.log_dir / ".done").exists()
    st = json.loads((run.log_dir / ".chester" / "status.json").read_text())
    assert st["state"] == "succeeded"
    # the instance got the snapshot minus the excluded files, and powered itself off
    inst = farm.instances[run.handle.remote_id]
    code = inst.root / "opt/chester/project"
    assert (code / "mytrain.py").exists() and not (code / "big.ckpt").exists()
    run_dir = inst.root / run.handle.remote_dir.lstrip("/")
    shipped = {p.relative_to(code).as_posix() for p in code.rglob("*")
               if p.is_file() and run_dir not in p.parents}
    # chester's runtime travels with the code: the instance needs no chester installed
    from chester.remote import runtime

    rt = f".chester/runtime/{runtime.build().name}"
    assert shipped == {"mytrain.py", "assets/data.txt", "chester.yaml", rt}, shipped
    end = time.time() + 10
    while not (inst.root / "powered-off").exists():
        assert time.time() < end
        time.sleep(0.1)
    # IMDSv2: every metadata read carried a token
    assert ("PUT", "/latest/api/token") in inst.imds.requests
    # the launcher never touched security groups, IAM or anything but these calls (the
    # spot price history prices the launch summary)
    assert set(ops) <= {"RunInstances", "DescribeInstances", "HeadObject", "ListObjectsV2",
                        "PutObject", "GetObject", "CreateMultipartUpload",
                        "DescribeSpotPriceHistory"}, set(ops)
    # a second pull brings nothing
    again = sweep.pull()
    assert sum(r.files for r in again) == 0 and sum(r.bytes for r in again) == 0
    # the instance was launched the safe way
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION)
    d = ec2.describe_instances(InstanceIds=[run.handle.remote_id])["Reservations"][0]
    i = d["Instances"][0]
    assert i["MetadataOptions"]["HttpTokens"] == "required"
    assert i.get("InstanceLifecycle") == "spot"
    tags = {t["Key"]: t["Value"] for t in i["Tags"]}
    assert tags["team"] == "ml" and tags["chester:sweep"] == run.handle.get("sweep")


def test_pull_include_exclude_and_progress(project, farm):
    from chester.launcher import launch

    sweep = launch(_train(), [{"lr": 1}], backend="ec2", exp_prefix="e2e-pull",
                   config=project.config)
    sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=False)
    got = sweep.pull(exclude=["ckpt/"])
    run = sweep.runs[0]
    assert got[0].files > 0
    assert not (run.log_dir / "ckpt").exists()
    assert (run.log_dir / "result.json").exists()
    # later, everything (only the new files travel)
    got = sweep.pull()
    assert got[0].files == 1 and got[0].bytes == 5000
    # an object that changed in S3 comes again (whatever the clocks say)
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    key = next(o["Key"] for o in s3.list_objects_v2(Bucket="chester-test")["Contents"]
           if o["Key"].endswith(f"{run.token}/result.json"))
    s3.put_object(Bucket="chester-test", Key=key, Body=b'{"changed": true}')
    got = sweep.pull()
    assert got[0].files == 1 and (run.log_dir / "result.json").read_text() == '{"changed": true}'
    # a newer local file is never overwritten
    (run.log_dir / "stdout.log").write_text("edited locally\n")
    res = sweep.dispatcher.manager.get_backend("ec2").plugin.chester_pull(
        sweep.backend, [run.handle], project.project,
        __import__("chester.types").types.PullPatterns())
    assert (run.log_dir / "stdout.log").read_text() == "edited locally\n"
    assert res[0].files == 0


def test_relaunch_with_unchanged_code_uploads_no_code(project, farm, ec2_backend):
    from chester.launcher import launch

    plugin = ec2_backend  # what the launches below submit through
    s1 = launch(_train(), [{"lr": 1}], backend="ec2", exp_prefix="code-a", config=project.config)
    first = dict(plugin.last_submit)
    assert first["code_bytes"] > 0
    s2 = launch(_train(), [{"lr": 2}], backend="ec2", exp_prefix="code-b", config=project.config)
    assert plugin.last_submit["code_bytes"] == 0
    # a change to one file uploads that file and the manifest only
    (project.project / "assets" / "data.txt").write_text("dataset-v2")
    s3_ = launch(_train(), [{"lr": 3}], backend="ec2", exp_prefix="code-c",
                 config=project.config)
    manifest_size = len(json.dumps({"files": {}}))
    assert len("dataset-v2") < plugin.last_submit["code_bytes"] < 2000 + manifest_size
    for s in (s1, s2, s3_):
        s.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert json.loads((s3_.runs[0].log_dir / "result.json").read_text())["data"] == "dataset-v2"


def test_no_secret_in_user_data_tags_or_logs(project, farm, monkeypatch, tmp_path, capfd):
    import logging

    from chester.launcher import launch
    from chester.logs import configure

    configure(level="debug")
    from chester_backend_ec2 import aws as aws_mod

    secret_id, secret = "AKIAEXAMPLESECRETID9", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", secret_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "SESSIONTOKENSECRET123")
    aws_mod.reset_clients()
    caplog_file = tmp_path / "chester.log"
    handler = logging.FileHandler(caplog_file)
    logging.getLogger().addHandler(handler)
    try:
        sweep = launch(_train(), [{"lr": 0.5}], backend="ec2", exp_prefix="secrets",
                       config=project.config)
        sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    finally:
        logging.getLogger().removeHandler(handler)
        configure(level="warning")
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    iid = sweep.runs[0].handle.remote_id
    ud = base64.b64decode(ec2.describe_instance_attribute(
        InstanceId=iid, Attribute="userData")["UserData"]["Value"]).decode()
    tags = json.dumps(ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]
                      ["Instances"][0]["Tags"])
    cap = capfd.readouterr()
    blobs = {"user-data": ud, "tags": tags, "chester log": caplog_file.read_text(),
             "launcher output": cap.out + cap.err}
    assert "launched" in cap.err
    for obj in s3.list_objects_v2(Bucket="chester-test")["Contents"]:
        if obj["Key"].endswith((".json", ".sh", ".log", ".py")) or ".chester-seg/" in obj["Key"]:
            blobs[obj["Key"]] = s3.get_object(Bucket="chester-test", Key=obj["Key"])[
                "Body"].read().decode("utf-8", "replace")
    for p in farm.instances[iid].root.rglob("*.log"):
        blobs[str(p)] = p.read_text(errors="replace")
    for p in sweep.runs[0].log_dir.rglob("*"):
        if p.is_file() and p.suffix in (".log", ".json"):
            blobs[str(p)] = p.read_text(errors="replace")
    for name, text in blobs.items():
        for s in (secret_id, secret, "SESSIONTOKENSECRET123", *INSTANCE_CREDS.values()):
            assert s not in text, f"{s[:6]}... leaked into {name}"
    assert "BEGIN RSA" not in ud and "aws_secret" not in ud.lower()


def test_cli_status_monitor_logs(project, farm):
    """The CLI in another process finds the sweep and drives it: status, monitor, logs."""
    import os
    import subprocess

    from chester.launcher import launch

    launch(_train(), [{"lr": 0.2, "sleep": 1}, {"lr": 0.3}], backend="ec2",
           exp_prefix="cli", config=project.config)
    exe = [sys.executable, "-m", "chester.cli"]
    env = dict(os.environ)
    st = subprocess.run(exe + ["status", "cli"], cwd=project.project, env=env,
                        capture_output=True, text=True, timeout=60)
    assert st.returncode == 0, st.stderr
    mon = subprocess.run(exe + ["monitor", "cli", "--interval", "0.3", "--timeout", "60"],
                         cwd=project.project, env=env, capture_output=True, text=True,
                         timeout=90)
    assert mon.returncode == 0, mon.stdout + mon.stderr
    assert "2 succeeded" in mon.stdout
    results = sorted(project.project.glob("data/train/cli/*/result.json"))
    assert len(results) == 2
    logs = subprocess.run(exe + ["logs", results[0].parent.name], cwd=project.project,
                          env=env, capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0 and "trained" in logs.stdout, logs.stderr


def test_endpoint_url_option_reaches_the_instance(project, farm, monkeypatch):
    """An S3-compatible store: S3 only through `endpoint_url`, on the laptop and the instance."""
    from chester_backend_ec2 import aws as aws_mod

    from chester.config import load_config
    from chester.launcher import launch

    ep = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", ep)  # EC2 stays on moto
    aws_mod.reset_clients()
    farm.endpoint_env = False
    text = (project.project / "chester.yaml").read_text()
    (project.project / "chester.yaml").write_text(
        text.replace("type: ec2", f"type: ec2\n    endpoint_url: {ep}"))
    cfg = load_config(project.project / "chester.yaml")
    assert cfg.backend("ec2").options.endpoint_url == ep
    sweep = launch(_train(), [{"lr": 9}], backend="ec2", exp_prefix="s3compat", config=cfg)
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    run = sweep.runs[0]
    assert [s.value for s in states.values()] == ["succeeded"], (run.reason, run.stderr_tail)
    assert json.loads((run.log_dir / "result.json").read_text())["variant"] == {"lr": 9}
    ud = farm.instances[run.handle.remote_id].user_data
    assert f"export CHESTER_EC2_S3_ENDPOINT={ep}" in ud
