"""The earlier chester's ``chester.auto_pull`` functions and ``chester.logger`` against real
sshd hosts: its job dicts pointing at runs chester launched on the ssh backend (a seed script
with the seed's config keys, ``remote_log_dir`` included) and at runs started by hand the seed's
way (``nohup ... & echo $! > .chester_pid``)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from chester.compat import auto_pull
from chester.config import load_config, reload_config

SEED_SCRIPT = textwrap.dedent('''
    import os, subprocess, sys, time
    from chester.run_exp import VariantGenerator, run_experiment_lite

    def train(variant, log_dir, exp_name):
        from chester import logger
        logger.configure(dir=log_dir, format_strs=["stdout", "log", "csv", "json"])
        for epoch in range(2):
            logger.logkv("epoch", epoch)
            logger.logkv("loss", 1.0 / (epoch + 1))
            logger.dumpkvs()
        logger.reset()
        go = os.path.join(log_dir, "go")
        while not os.path.exists(go):  # the test says when to go on
            time.sleep(0.05)
        if variant["kind"] == "fail":
            raise RuntimeError("diverged")
        if variant["kind"] == "orphan":  # left behind in the run's process group
            child = subprocess.Popen(["sleep", "300"])
            with open(os.path.join(log_dir, "child.pid"), "w") as f:
                f.write(str(child.pid))

    vg = VariantGenerator()
    vg.add("kind", ["ok", "fail", "orphan"])
    for v in vg.variants():
        run_experiment_lite(stub_method_call=train, variant=v, mode="gpu1", exp_prefix="seedpull",
                            variations=vg.variations(), wait_subprocess=False)
''')


def _wait_for(what, fn, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def seed_project(tmp_path, sshd_hosts, monkeypatch):
    """A project with the seed's config keys for an ssh host ``gpu1`` (remote_log_dir set
    as the seed's configs set it), chester.yaml found from the current folder."""
    h = sshd_hosts[0]
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    remote = f"/remote/{tmp_path.name}"
    (project / "chester.yaml").write_text(yaml.safe_dump({
        "ssh_hosts": ["gpu1"], "host_address": {"gpu1": h.alias},
        "remote_dir": {"gpu1": remote}, "remote_log_dir": {"gpu1": f"{remote}/data"},
        "backends": {"gpu1": {"type": "ssh", "ssh_config": sshd_hosts.ssh_config,
                              "python": sys.executable, "connect_timeout": 3,
                              "max_parallel": 3}}}))
    monkeypatch.chdir(project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    reload_config()
    yield project, h, remote
    auto_pull.close()
    reload_config()


def _on_host(h, remote_path: str) -> Path:
    """A path on the host (under /remote) as this process sees it."""
    return h.local_dir / Path(remote_path).relative_to("/remote")


def test_job_dicts_of_runs_chester_launched_on_an_ssh_host(seed_project):
    import chester

    project, h, remote = seed_project
    (project / "launch.py").write_text(SEED_SCRIPT)
    r = subprocess.run([sys.executable, "launch.py"], cwd=project, capture_output=True,
                       text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"})
    assert r.returncode == 0, r.stderr
    runs = chester.sweep("seedpull", config=load_config(project / "chester.yaml")).runs
    assert [run.name for run in runs] == ["1_seedpull_ok", "2_seedpull_fail",
                                          "3_seedpull_orphan"]
    # remote_log_dir is where the runs went
    assert all(run.remote_dir.startswith(f"{remote}/data/train/seedpull/") for run in runs)
    jobs = [{"host": h.alias if i != 1 else "gpu1",  # the host, or the seed's mode name
             "remote_log_dir": run.remote_dir, "local_log_dir": str(run.log_dir),
             "exp_name": run.name} for i, run in enumerate(runs)]
    # running: the worker's pid, recorded with its start time
    for job in jobs:
        _wait_for("the worker", lambda j=job: auto_pull.get_remote_pid(j["host"],
                                                                        j["remote_log_dir"]))
    for job, run in zip(jobs, runs, strict=True):
        rec = json.loads((_on_host(h, run.remote_dir) / ".chester" / "status.json").read_text())
        assert auto_pull.get_remote_pid(job["host"], job["remote_log_dir"]) == rec["pid"]
        assert auto_pull.check_process_running(job["host"], rec["pid"]) is True
        assert auto_pull.check_job_status(job) == "running"
        assert auto_pull.check_done_marker(job["host"], job["remote_log_dir"]) is False
    for run in runs:
        (_on_host(h, run.remote_dir) / "go").write_text("")
    ok, fail, orphan = jobs
    assert _wait_for("done", lambda: auto_pull.check_job_status(ok) == "done")
    assert _wait_for("failed", lambda: auto_pull.check_job_status(fail) == "failed")
    assert _wait_for("done_orphans",
                     lambda: auto_pull.check_job_status(orphan) == "done_orphans")
    worker = auto_pull.get_remote_pid(h.alias, ok["remote_log_dir"])
    assert auto_pull.check_process_running(h.alias, worker) is False
    child = int((_on_host(h, orphan["remote_log_dir"]) / "child.pid").read_text())
    assert auto_pull.check_process_running(h.alias, child) is True
    auto_pull.kill_process_tree(h.alias, auto_pull.get_remote_pid(h.alias,
                                                                  orphan["remote_log_dir"]))
    assert auto_pull.check_process_running(h.alias, child) is False
    assert auto_pull.check_job_status(orphan) == "done"

    # pulled home: the logger's files as it writes them, chester's payload left there
    local = project / "pulled" / ok["exp_name"]
    assert auto_pull.pull_results(h.alias, ok["remote_log_dir"], str(local)) is True
    assert (local / "progress.csv").read_text() == "epoch,loss\n0,1.0\n1,0.5\n"
    assert (local / "progress.json").read_text() == \
        '{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "loss": 0.5}\n'
    assert "| loss  | 0.5      |" in (local / "log.txt").read_text()
    assert "| epoch | 1        |" in (local / "stdout.log").read_text()
    assert (local / ".done").exists() and not (local / ".chester" / "payload.pkl").exists()
    assert auto_pull.pull_results(h.alias, f"{remote}/nothing-here", str(project / "n")) is False
    # one connection per host for all of it
    assert auto_pull._transports[h.alias].connections_opened == 1


HAND_RUN = r'''
set -e
d=$1
mkdir -p "$d" "$2"
cd "$d"
nohup bash -c 'sleep 300 & echo $! > child.pid
  while [ ! -f go ]; do sleep 0.05; done
  echo result > out.txt
  [ "$(cat mode)" = fail ] && exit 3
  echo data > "$0/gen.txt"
  touch .done
  wait' "$2" > stdout.log 2> stderr.log < /dev/null &
echo $! > .chester_pid
'''


def test_runs_started_by_hand_and_the_seed_poller(seed_project, tmp_path):
    project, h, remote = seed_project
    jobs = []
    for name, mode in (("hand_ok", "ok"), ("hand_fail", "fail")):
        rdir = f"{remote}/data/hand/{name}"
        _on_host(h, rdir).mkdir(parents=True)
        (_on_host(h, rdir) / "mode").write_text(mode)
        h.run(shlex.join(["sh", "-c", HAND_RUN, "sh", rdir, f"{remote}/extra/{name}"]))
        jobs.append({"host": h.alias, "remote_log_dir": rdir,
                     "local_log_dir": str(project / "data" / "hand" / name), "exp_name": name,
                     "extra_pull_dirs": [{"remote": f"{remote}/extra/{name}",
                                          "local": str(project / "extra" / name)}],
                     "status": "pending"})
    for job in jobs:
        pid = int(_on_host(h, job["remote_log_dir"]).joinpath(".chester_pid").read_text())
        assert auto_pull.get_remote_pid(h.alias, job["remote_log_dir"]) == pid
        assert auto_pull.check_process_running(h.alias, pid) is True
        assert auto_pull.check_job_status(job) == "running"
    manifest = project / "data" / ".chester_manifests" / "hand.json"
    auto_pull.save_manifest(str(manifest), jobs)
    r = subprocess.run([sys.executable, "-m", "chester.auto_pull", "--manifest", str(manifest),
                        "--once"], cwd=project, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "[auto_pull] Checking 2 pending jobs..." in r.stdout
    assert [j["status"] for j in auto_pull.load_manifest(str(manifest))] == ["pending"] * 2
    for job in jobs:
        (_on_host(h, job["remote_log_dir"]) / "go").write_text("")
    ok_dir = _on_host(h, jobs[0]["remote_log_dir"])
    _wait_for(".done", lambda: (ok_dir / ".done").exists())
    assert auto_pull.check_job_status(jobs[0]) == "done_orphans"  # its `sleep` still runs
    child = int((ok_dir / "child.pid").read_text())
    auto_pull.poll_and_pull(str(manifest), poll_interval=0.2)
    done = auto_pull.load_manifest(str(manifest))
    assert [(j["status"], j.get("had_orphans")) for j in done] == [("pulled", True),
                                                                  ("failed", None)]
    assert auto_pull.check_process_running(h.alias, child) is False
    assert (project / "data" / "hand" / "hand_ok" / "out.txt").read_text() == "result\n"
    assert (project / "extra" / "hand_ok" / "gen.txt").read_text() == "data\n"
    assert (project / "data" / "hand" / "hand_fail" / "out.txt").exists()  # its logs
    assert not (project / "extra" / "hand_fail").exists()
    # the CLI on a manifest with nothing pending: the summary
    r = subprocess.run([sys.executable, "-m", "chester.auto_pull", "--manifest", str(manifest)],
                       cwd=project, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "hand_ok: pulled\n  hand_fail: failed" in r.stdout


def test_a_host_that_cannot_be_reached_gets_the_seeds_careful_answers(seed_project, capsys):
    project, h, remote = seed_project
    bad = f"root@{h.address}:2"  # nothing listens there
    assert auto_pull.check_process_running(bad, 1) is True
    assert auto_pull.get_remote_pid(bad, "/x") is None
    assert auto_pull.check_done_marker(bad, "/x") is False
    assert auto_pull.check_job_status({"host": bad, "remote_log_dir": "/x",
                                       "local_log_dir": "l", "exp_name": "e"}) == "running"
    assert auto_pull.pull_results(bad, "/x", str(project / "l")) is False
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[auto_pull]")]
    assert lines and all("connection refused" in ln or "Pulling" in ln for ln in lines), lines
    with pytest.raises(ValueError, match="has no 'remote_log_dir'"):
        auto_pull.check_job_status({"host": h.alias, "exp_name": "e"})
