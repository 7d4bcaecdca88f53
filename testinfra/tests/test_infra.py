"""Smoke tests of the real-server fixtures: each server really works and the fault helpers
really break and heal it."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

# -- ssh ----------------------------------------------------------------------------------


def test_hosts_have_distinct_hostnames(sshd_hosts):
    assert len(sshd_hosts) >= 2
    names = [h.run("hostname").stdout.strip() for h in sshd_hosts]
    assert names == [h.hostname for h in sshd_hosts]
    assert len(set(names)) == len(names)
    for h in sshd_hosts:
        assert h.address.startswith("10.253.") and h.port == 22 and h.user == "root"
        assert Path(h.key).exists() and Path(h.ssh_config).exists()
        assert h.run("id -un").stdout.strip() == "root"


def test_remote_dirs_are_private(sshd_hosts):
    a, b = sshd_hosts[0], sshd_hosts[1]
    name = f"only-on-{a.alias}-{uuid.uuid4().hex}"
    a.run(f"echo hello > {a.remote_dir}/{name}")
    assert a.run(f"cat {a.remote_dir}/{name}").stdout == "hello\n"
    assert (a.local_dir / name).read_text() == "hello\n"
    r = b.run(f"test -e {b.remote_dir}/{name}", check=False)
    assert r.returncode == 1
    assert not (b.local_dir / name).exists()


def test_key_only_auth(sshd_hosts):
    h = sshd_hosts[0]
    assert h.other_key == sshd_hosts.other_key and Path(h.other_key).exists()
    # a client with another key only is refused (no password, no other method)
    r = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
         "-i", h.other_key, f"root@{h.address}", "true"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Permission denied" in r.stderr


def test_rsync_and_fabric(sshd_hosts, tmp_path):
    h = sshd_hosts[1]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("payload")
    subprocess.run(["rsync", "-a", "-e", f"ssh -F {h.ssh_config}", f"{tmp_path / 'src'}/",
                    f"{h.alias}:{h.remote_dir}/rsynced/"], check=True, timeout=60)
    assert (h.local_dir / "rsynced" / "a.txt").read_text() == "payload"
    pytest.importorskip("fabric")
    with h.fabric() as c:
        assert c.run("hostname", hide=True, in_stream=False).stdout.strip() == h.hostname
        assert c.run(f"cat {h.remote_dir}/rsynced/a.txt", hide=True, in_stream=False).stdout == "payload"


def test_accepted_connections_are_counted(sshd_hosts):
    h = sshd_hosts[0]
    before = h.accepted_connections()
    for _ in range(3):
        h.run("true")
    assert h.accepted_connections() == before + 3


def test_kill_and_restart_sshd(sshd_hosts):
    h = sshd_hosts[0]
    other = sshd_hosts[1]
    try:
        sshd_hosts.kill_sshd(h)
        assert h.sshd_pid is None
        t0 = time.monotonic()
        r = h.run("true", check=False, options={"ConnectTimeout": "3"})
        assert r.returncode == 255 and "refused" in r.stderr
        assert time.monotonic() - t0 < 3
        assert other.run("hostname").stdout.strip() == other.hostname  # the other is fine
        sshd_hosts.restart_sshd(h)
        assert h.sshd_pid is not None
        assert h.run("hostname").stdout.strip() == h.hostname
    finally:
        sshd_hosts.heal()


def test_sshd_started_from_another_thread_outlives_it(sshd_hosts):
    # a fault that restarts sshd later does it from a timer thread, which then ends
    h = sshd_hosts[1]
    try:
        h.kill_sshd()
        t = threading.Thread(target=h.start_sshd)
        t.start()
        t.join(30)
        time.sleep(0.3)
        assert h.sshd_pid is not None
        assert h.run("hostname").stdout.strip() == h.hostname
    finally:
        sshd_hosts.heal()


def test_kill_sshd_drops_open_connections(sshd_hosts):
    h = sshd_hosts[1]
    try:
        p = subprocess.Popen(h.ssh_argv("echo started; sleep 30"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline() == "started\n"
        t0 = time.monotonic()
        h.kill_sshd()
        assert p.wait(10) == 255
        assert time.monotonic() - t0 < 5
    finally:
        sshd_hosts.heal()
    assert h.run("true").returncode == 0


def test_blackhole_times_out_and_unblackhole_restores(sshd_hosts):
    h = sshd_hosts[0]
    try:
        sshd_hosts.blackhole(h)
        t0 = time.monotonic()
        r = h.run("true", check=False, options={"ConnectTimeout": "3"}, timeout=30)
        took = time.monotonic() - t0
        assert r.returncode == 255 and "timed out" in r.stderr, r.stderr
        assert 2.5 < took < 8
        assert sshd_hosts[1].run("true").returncode == 0  # only that host is dark
    finally:
        sshd_hosts.unblackhole(h)
    assert h.run("hostname", options={"ConnectTimeout": "3"}).stdout.strip() == h.hostname


def test_module_level_fault_helpers(sshd_hosts):
    from chester_testinfra.sshd import (
        accepted_connections,
        blackhole,
        kill_sshd,
        restart_sshd,
        unblackhole,
    )

    h = sshd_hosts[1]
    try:
        kill_sshd(h)
        assert h.run("true", check=False).returncode == 255
        restart_sshd(h)
        n = accepted_connections(h)
        assert h.run("true").returncode == 0
        assert accepted_connections(h) == n + 1
        blackhole(h)
        assert h.run("true", check=False, options={"ConnectTimeout": "2"}).returncode == 255
        unblackhole(h)
        assert h.run("true").returncode == 0
    finally:
        sshd_hosts.heal()


def test_loopback_sshd(sshd_loopback):
    h = sshd_loopback
    assert h.address == "127.0.0.1" and h.port > 0 and h.netns is None
    assert h.run("hostname").stdout.strip() == h.hostname
    h.run(f"echo x > {h.remote_dir}/f")
    assert (h.local_dir / "f").read_text() == "x\n"
    try:
        h.blackhole()
        r = h.run("true", check=False, options={"ConnectTimeout": "2"})
        assert r.returncode == 255 and "timed out" in r.stderr
    finally:
        h.unblackhole()
    h.restart_sshd()
    assert h.run("true").returncode == 0


# -- slurm --------------------------------------------------------------------------------


def _sacct_until(cluster, job_id: str, done: set[str], timeout: float = 30) -> str | None:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = cluster.sacct_state(job_id)
        if state in done:
            return state
        time.sleep(0.3)
    return state


def test_slurm_job_completes_and_sacct_sees_it(slurm_cluster, tmp_path):
    c = slurm_cluster
    assert c.accounting and c.max_array_size == 11
    assert c.env["SLURM_CONF"] == str(c.conf)
    job = c.sbatch("-o", str(tmp_path / "out-%j.txt"), "--wrap",
                   "echo hi from $SLURM_JOB_ID; id -un", cwd=tmp_path)
    c.wait_job(job, timeout=60)
    assert (tmp_path / f"out-{job}.txt").read_text() == f"hi from {job}\nroot\n"
    assert _sacct_until(c, job, {"COMPLETED"}) == "COMPLETED"
    fail = c.sbatch("-o", "/dev/null", "--wrap", "exit 3")
    c.wait_job(fail)
    assert _sacct_until(c, fail, {"FAILED"}) == "FAILED"
    c.wait_idle()


def test_slurm_array_limit(slurm_cluster, tmp_path):
    c = slurm_cluster
    n = c.max_array_size
    r = c.run(["sbatch", "--parsable", f"--array=0-{n}", "--wrap", "true"], check=False)
    assert r.returncode != 0 and "Invalid job array specification" in r.stderr
    job = c.sbatch(f"--array=0-{n - 1}", "-o", str(tmp_path / "a-%A_%a.out"), "--wrap",
                   "echo $SLURM_ARRAY_TASK_ID")
    c.wait_job(job)
    assert sorted(int(p.read_text()) for p in tmp_path.glob("a-*.out")) == list(range(n))
    c.wait_idle()


def test_slurm_noacct(slurm_cluster_noacct, tmp_path):
    c = slurm_cluster_noacct
    assert not c.accounting
    job = c.sbatch("-o", str(tmp_path / "o.txt"), "--wrap", "sleep 1; echo done")
    r = c.run(["squeue", "-h", "-o", "%i %T"])
    assert r.stdout.split()[0] == job
    c.wait_job(job)
    assert (tmp_path / "o.txt").read_text() == "done\n"
    r = c.run(["sacct", "-j", job], check=False)
    assert r.returncode != 0 and "accounting storage is disabled" in (r.stderr + r.stdout)
    r = c.run(["scontrol", "show", "job", job])
    assert "JobState=COMPLETED" in r.stdout
    c.wait_idle()


def test_slurm_factory_other_array_size(slurm_factory):
    c = slurm_factory.get(max_array_size=3, accounting=False)
    assert c.max_array_size == 3
    assert "MaxArraySize            = 3" in c.run(["scontrol", "show", "config"]).stdout
    r = c.run(["sbatch", "--array=0-3", "--wrap", "true"], check=False)
    assert r.returncode != 0
    assert slurm_factory.get(max_array_size=3, accounting=False) is c


# -- aws ----------------------------------------------------------------------------------


def test_aws_s3_and_ec2(aws_endpoint, monkeypatch, tmp_path):
    boto3 = pytest.importorskip("boto3")
    for k, v in aws_endpoint.env.items():
        monkeypatch.setenv(k, v)
    assert aws_endpoint.url.startswith("http://127.0.0.1:")
    s3 = boto3.client("s3")  # AWS_ENDPOINT_URL alone sends it to the fake
    s3.create_bucket(Bucket="infra-smoke")
    s3.put_object(Bucket="infra-smoke", Key="runs/a/log.txt", Body=b"hello")
    assert s3.get_object(Bucket="infra-smoke", Key="runs/a/log.txt")["Body"].read() == b"hello"

    ec2 = aws_endpoint.client("ec2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ud = "#!/bin/bash\necho hi\n"
    r = ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=2, MaxCount=2,
                          UserData=ud, TagSpecifications=[{
                              "ResourceType": "instance",
                              "Tags": [{"Key": "exp", "Value": "smoke"}]}])
    ids = [i["InstanceId"] for i in r["Instances"]]
    got = ec2.describe_instance_attribute(InstanceId=ids[0], Attribute="userData")
    assert base64.b64decode(got["UserData"]["Value"]).decode() == ud
    found = ec2.describe_instances(Filters=[{"Name": "tag:exp", "Values": ["smoke"]}])
    assert sorted(i["InstanceId"] for res in found["Reservations"]
                  for i in res["Instances"]) == sorted(ids)

    aws_endpoint.reset()
    assert s3.list_buckets()["Buckets"] == []


def test_loopback_host_as_slurm_login_node(sshd_loopback, slurm_cluster, tmp_path):
    h, c = sshd_loopback, slurm_cluster
    setenv = {"SetEnv": f"SLURM_CONF={c.conf}"}
    assert h.run("echo $SLURM_CONF", options=setenv).stdout.strip() == str(c.conf)
    job = h.run(f"cd {tmp_path} && sbatch --parsable -o o-%j.txt --wrap 'echo via ssh'",
                options=setenv).stdout.strip()
    assert f"ClusterName={c.name}" in h.run(
        "scontrol show config | tr -d ' '", options=setenv).stdout
    c.wait_job(job)
    assert (tmp_path / f"o-{job}.txt").read_text() == "via ssh\n"
    assert f"StdOut={tmp_path}/o-{job}.txt" in c.run(["scontrol", "show", "job", job]).stdout
