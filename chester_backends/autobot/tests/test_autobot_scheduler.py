"""The scheduler file's pieces on this machine: what it reads from nvidia-smi, the shell line
that starts a worker (run by a real ``sh``), leases, and the one-line answers of the plugin
for bad options. The lab tests exercise the whole over ssh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chester_backend_autobot import scheduler as S

from chester.config import load_config
from chester.errors import ConfigError, UserError


def test_parse_query_reads_gpus_processes_and_live_pids():
    text = ("0, GPU-a-0, 10, 16384\n1, GPU-a-1, 9000, 16384\n@@apps\nGPU-a-1, 4242\n"
            "@@alive\n77\n@@end\n")
    q = S.parse_query(text)
    assert q["gpus"] == [(0, "GPU-a-0", 10.0, 16384.0), (1, "GPU-a-1", 9000.0, 16384.0)]
    assert q["busy"] == {"GPU-a-1"} and q["alive"] == {77}
    assert S.parse_query("0, GPU-a-0, 10, 16384\n") is None  # cut short: no answer


def test_node_list_is_short():
    assert S.node_list(["autobot-1-1", "autobot-1-2", "autobot-1-6"]) == "autobot-1-1..1-6"
    assert S.node_list(["a", "b"]) == "a,b"


def test_start_line_starts_the_worker_once_with_the_gpus(tmp_path):
    run_dir = tmp_path / "run $(touch pwned) 'x'"
    (run_dir / ".chester").mkdir(parents=True)
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\nprintf '%s\\n' \"$CUDA_VISIBLE_DEVICES\" \"$FROM_ENV\" \"$@\" "
                    "> \"$(dirname \"$0\")/argv.txt\"\n")
    fake.chmod(0o755)
    env_file = tmp_path / "env.sh"
    env_file.write_text("export FROM_ENV='a b'\n")
    entry = {"python": str(fake), "runtime": "/rt/chester-x.pyz", "cwd": str(tmp_path),
             "env_file": str(env_file), "secrets_file": None, "prefix": []}
    line = S.start_line(entry, str(run_dir), [2, 3])
    for _ in range(2):  # the second start does nothing
        subprocess.run(["sh", "-c", line], check=True, timeout=30)
    for _ in range(50):
        if (tmp_path / "argv.txt").exists():
            break
        import time

        time.sleep(0.1)
    got = (tmp_path / "argv.txt").read_text().splitlines()
    assert got == ["2,3", "a b", "/rt/chester-x.pyz", "worker", str(run_dir)]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert (run_dir / ".chester" / "autobot.started").is_dir()


def test_leases_are_exclusive_and_released_by_their_run(tmp_path):
    lroot = str(tmp_path / "leases")
    assert S.claim(lroot, "n1", 0, "tok-a", "/x")
    assert not S.claim(lroot, "n1", 0, "tok-b", "/y")
    S.release(lroot, "n1", [0], "tok-b")  # not its lease: kept
    assert 0 in S.leases(lroot)["n1"]
    S.release(lroot, "n1", [0], "tok-a")
    assert S.leases(lroot).get("n1", {}) == {}


def test_submit_is_idempotent_and_fifo(tmp_path):
    root = tmp_path / "root"
    runs = []
    for i in range(3):
        d = tmp_path / f"run{i}"
        (d / ".chester").mkdir(parents=True)
        (d / ".chester" / "run.json").write_text(json.dumps({"token": f"t{i}"}))
        runs.append({"token": f"t{i}", "run_dir": str(d), "gpus_per_run": 1, "nodes": ["n"]})
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"sweep": "k", "runs": runs, "config": {}}))
    # no loop is started here: hold its lock
    import fcntl

    root.mkdir()
    fd = os.open(root / "scheduler.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for _ in range(2):
            r = subprocess.run([sys.executable, S.__file__, "submit", str(root), str(sweep)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        assert "queued 0 skipped 3" in r.stdout
        assert [e["token"] for e in S.queue_entries(str(root))] == ["t0", "t1", "t2"]
        r = subprocess.run([sys.executable, S.__file__, "status", str(root)],
                           input="\n".join(x["run_dir"] for x in runs), capture_output=True,
                           text=True, timeout=60)
        st = json.loads(r.stdout)
        assert [st[x["run_dir"]]["queue_position"] for x in runs] == [1, 2, 3]
        assert st[runs[1]["run_dir"]]["pending_reason"].startswith("queue position 2 of 3")
    finally:
        os.close(fd)


@pytest.mark.parametrize("opts,said", [
    ({"nodes": []}, "nodes is empty"),
    ({"remote_dir": "proj"}, "remote_dir must be an absolute path"),
])
def test_bad_options_are_one_line(tmp_path, opts, said):
    import yaml
    from chester_backend_autobot import plugin

    (tmp_path / ".git").mkdir()
    (tmp_path / "chester.yaml").write_text(yaml.safe_dump({"backends": {"lab": {
        "type": "autobot", "host": "login", "remote_dir": "/p", "nodes": ["1-1"], **opts}}}))
    b = load_config(tmp_path / "chester.yaml").backend("lab")
    from chester.types import RunSpec

    run = RunSpec(run_id=1, token="t", name="r", exp_prefix="e", local_dir=tmp_path,
                  remote_dir="/p/r")
    with pytest.raises(UserError) as ei:
        plugin.chester_prepare(b, [run], tmp_path / "stage")
    assert said in str(ei.value) and "\n" not in str(ei.value)


def _lab(tmp_path):
    import yaml

    (tmp_path / ".git").mkdir()
    (tmp_path / "chester.yaml").write_text(yaml.safe_dump({"backends": {"lab": {
        "type": "autobot", "host": "login", "remote_dir": "/p", "nodes": ["1-1", "1-2"],
        "gpus_per_run": 2}}}))
    return load_config(tmp_path / "chester.yaml").backend("lab")


def _run(tmp_path, i, **resources):
    from chester.types import RunSpec

    return RunSpec(run_id=i, token=f"t{i}", name=f"r{i}", exp_prefix="e", local_dir=tmp_path,
                   remote_dir=f"/p/r{i}", resources=resources)


def test_each_run_takes_its_gpus_and_nodes_in_the_sweep_file(tmp_path):
    from chester_backend_autobot import plugin

    b = _lab(tmp_path)
    runs = [_run(tmp_path, 1), _run(tmp_path, 2, gpus=1, nodes="1-2"),
            _run(tmp_path, 3, gpus_per_run="3", nodes=["autobot-1-1", "1-2"])]
    prepared = plugin.chester_prepare(b, runs, tmp_path / "stage")
    sent = json.loads(prepared.scripts["sweep.json"])["runs"]
    assert [(x["name"], x["gpus_per_run"], x["nodes"]) for x in sent] == [
        ("r1", 2, ["autobot-1-1", "autobot-1-2"]), ("r2", 1, ["autobot-1-2"]),
        ("r3", 3, ["autobot-1-1", "autobot-1-2"])]


@pytest.mark.parametrize("resources,said", [
    ({"gpus": "two"}, "run 'r1': gpus must be a whole number, not 'two'"),
    ({"nodes": "1-1, 9-9"}, "run 'r1' asks for nodes ['autobot-9-9'] that are not in"),
])
def test_bad_run_resources_are_one_line(tmp_path, resources, said):
    from chester_backend_autobot import plugin

    with pytest.raises(UserError) as ei:
        plugin.chester_prepare(_lab(tmp_path), [_run(tmp_path, 1, **resources)],
                               tmp_path / "stage")
    assert said in str(ei.value) and "\n" not in str(ei.value)


def test_max_gpus_must_be_counts(tmp_path):
    import yaml

    (tmp_path / ".git").mkdir()
    (tmp_path / "chester.yaml").write_text(yaml.safe_dump({"backends": {"lab": {
        "type": "autobot", "host": "login", "remote_dir": "/p", "nodes": ["1-1"],
        "max_gpus": {"autobot-1-1": -1}}}}))
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "chester.yaml").backend("lab")
    assert "max_gpus.autobot-1-1" in str(ei.value)


def test_a_new_attempt_is_queued_and_started_afresh(tmp_path):
    """Records of an earlier attempt (its end, placement, start marker) do not stand for the
    run's next attempt."""
    d = tmp_path / "run"
    (d / ".chester" / "autobot.started").mkdir(parents=True)
    (d / ".chester" / "run.json").write_text(json.dumps({"token": "t", "attempt": 2}))
    (d / ".chester" / "status.json").write_text(json.dumps(
        {"token": "t", "attempt": 1, "ended_at": 1.0, "state": "failed", "pid": 1}))
    (d / ".chester" / "autobot.json").write_text(json.dumps(
        {"token": "t", "attempt": 1, "node": "n", "gpus": [0],
         "verdict": {"state": "lost", "reason": "node n unreachable for 200 s"}}))
    meta, st, pl = S.run_record(str(d))
    assert st is None and pl is None and not S.run_finished(str(d), "t")
    assert S.started_marker(str(d), 2).endswith("autobot.started-2")
    root = tmp_path / "root"
    root.mkdir()
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"sweep": "k", "config": {}, "runs": [
        {"token": "t", "run_dir": str(d), "gpus_per_run": 1, "nodes": ["n"]}]}))
    import fcntl

    fd = os.open(root / "scheduler.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        r = subprocess.run([sys.executable, S.__file__, "submit", str(root), str(sweep)],
                           capture_output=True, text=True, timeout=60)
        assert "queued 1 skipped 0" in r.stdout, (r.stdout, r.stderr)
        assert [e["attempt"] for e in S.queue_entries(str(root))] == [2]
    finally:
        os.close(fd)


def _write_later(path: Path, record: dict, after_s: float) -> subprocess.Popen:
    """Another process writes ``record`` to ``path`` (atomically) after ``after_s``: as a
    worker on a node writes its records."""
    code = ("import json, os, sys, time; time.sleep(float(sys.argv[3])); "
            "tmp = sys.argv[1] + '.tmp'; open(tmp, 'w').write(sys.argv[2]); "
            "os.replace(tmp, sys.argv[1])")
    return subprocess.Popen([sys.executable, "-c", code, str(path), json.dumps(record),
                             str(after_s)])


def test_the_pause_between_cycles_ends_when_a_run_records_its_end(tmp_path):
    import time

    run = tmp_path / "run"
    (run / ".chester").mkdir(parents=True)
    meta = {"token": "t1", "attempt": 1}
    (run / ".chester" / "run.json").write_text(json.dumps(meta))
    status = run / ".chester" / "status.json"
    started = {**meta, "state": "running", "pid": 1, "started_at": 1.0, "ended_at": None}
    status.write_text(json.dumps(started))
    # a record that changes but says the run still runs does not end the pause
    w = _write_later(status, {**started, "pid": 2}, 0.1)
    assert S.pause_until_an_end([str(run)], 1.5) == []
    w.wait()
    # its end does, long before the pause is over
    w = _write_later(status, {**started, "state": "succeeded", "ended_at": 2.0}, 0.3)
    t = time.monotonic()
    assert S.pause_until_an_end([str(run)], 60) == [str(run)]
    assert time.monotonic() - t < 30
    w.wait()
    # a forked worker's run counts once the pre-started worker recorded its process gone
    forked = {**started, "forked": True}
    status.write_text(json.dumps(forked))
    w = _write_later(status, {**forked, "state": "succeeded", "ended_at": 2.0}, 0.1)
    assert S.pause_until_an_end([str(run)], 1.5) == []
    w.wait()
    assert not S.worker_gone(str(run), "t1")
    w = _write_later(run / ".chester" / "exit.json", {**meta, "returncode": 0}, 0.3)
    assert S.pause_until_an_end([str(run)], 60) == [str(run)]
    w.wait()
    assert S.worker_gone(str(run), "t1") and not S.worker_gone(str(run), "t0")
    # an end recorded before the pause began (while the last one was handed over) counts
    t = time.monotonic()
    assert S.pause_until_an_end([str(run)], 60) == [str(run)]
    assert time.monotonic() - t < 30
