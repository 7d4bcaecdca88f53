"""End-to-end tests of the autobot backend on the test lab (testinfra ``gpu_lab``: the
loopback sshd as login host, two network-namespace hosts as GPU nodes with a stand-in
``nvidia-smi``, one shared filesystem)."""

from __future__ import annotations

import json
import sys
import time

import cloudpickle
from chester_testinfra import wait_until
from chester_testinfra.gpulab import gpu_intervals, make_project, overlaps

from chester.dispatch import Dispatcher
from chester.launcher import launch

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_gpu(variant, log_dir, exp_name):
    import json as _j
    import os as _o
    import socket as _s
    import time as _t

    t0 = _t.time()
    _t.sleep(float(variant.get("sleep", 0)))
    with open(_o.path.join(log_dir, "result.json"), "w") as f:
        _j.dump({"host": _s.gethostname(), "cuda": _o.environ.get("CUDA_VISIBLE_DEVICES"),
                 "start": t0, "end": _t.time(), "i": variant.get("i"),
                 "value": variant.get("value")}, f)


def fast() -> Dispatcher:
    return Dispatcher(sleep=lambda s: time.sleep(min(s, 0.5)))


def test_runs_are_placed_on_free_gpus_within_caps(tmp_path, gpu_lab):
    lab = gpu_lab
    n1, n2 = lab.nodes
    # another user's process holds GPU 0 of the first node
    lab.set_gpus(n1, [{"used": 9000, "procs": [4242]}, {}, {}, {}])
    project, cfg, remote = make_project(tmp_path, lab, max_gpus={n2: 2})
    sweep = launch(fn_gpu, [{"i": i, "sleep": 1.5} for i in range(10)], backend="lab",
                   exp_prefix="place", config=cfg, dispatcher=fast())
    states = sweep.wait(timeout=120, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    seen = set()
    for run in sweep.runs:
        r = json.loads((run.log_dir / "result.json").read_text())
        assert r["cuda"] is not None and "," not in r["cuda"]
        seen.add((r["host"], r["cuda"]))
    assert ("chost1", "0") not in seen, "a GPU used by another process was handed out"
    assert {g for h, g in seen if h == "chost2"} <= {"0", "1"}, seen
    assert not overlaps(gpu_intervals(remote))



def test_waiting_runs_say_why_and_start_when_gpus_free(tmp_path, gpu_lab):
    """Every GPU held by another user's process: the runs wait, saying why and where they
    are in the queue; two GPUs free up on one node mid-sweep: a 2-GPU run starts there within
    a couple of seconds, and its status names the node and GPUs."""
    lab = gpu_lab
    n1, n2 = lab.nodes
    busy = [{"used": 12000, "procs": [5000 + i]} for i in range(4)]
    lab.set_gpus(n1, busy)
    lab.set_gpus(n2, busy)
    project, cfg, remote = make_project(tmp_path, lab)
    # each run holds its GPUs long enough for the checks below to see the others wait
    sweep = launch(fn_gpu, [{"i": i, "sleep": 8} for i in range(3)], backend="lab",
                   exp_prefix="wait", config=cfg, dispatcher=fast(), resources={"gpus": 2})

    def waiting():
        st = sweep.status()
        return st if all(s.value == "queued" for s in st.values()) and all(
            (r.pending_reason or "").endswith("0 of 8 free (needs 2 on one node)")
            for r in sweep.store.runs(sweep.id)) else None

    wait_until(waiting, 30)
    reasons = {r.name: r.pending_reason for r in sweep.store.runs(sweep.id)}
    assert reasons[sweep.runs[0].name].startswith("queue position 1 of 3; no free GPU on "
                                                  "chost1,chost2: 0 of 8 free"), reasons
    assert reasons[sweep.runs[2].name].startswith("queue position 3 of 3"), reasons
    # the memory threshold alone also keeps a GPU busy: a process-free GPU with memory used
    lab.set_gpus(n2, [{"used": 12000}, busy[1], {}, {}])
    freed = time.time()
    first = sweep.runs[0]

    def running():
        st = sweep.status()
        return st[first.name].value == "running" and sweep.store.run(first.id)

    row = wait_until(running, 30, interval=0.1)
    status_file = remote / first.log_dir.relative_to(project) / ".chester" / "status.json"
    rec = json.loads(wait_until(lambda: status_file.exists() and status_file.read_text(), 10))
    assert rec["host"] == "chost2" and rec["cuda_visible_devices"] == "2,3"
    assert rec["started_at"] - freed < 3.0, rec["started_at"] - freed
    assert row.host == "chost2 GPU 2,3", row.host
    others = sweep.status()
    assert others[sweep.runs[1].name].value == "queued"
    assert sweep.store.run(sweep.runs[1].id).pending_reason.startswith("queue position 1 of 2")
    lab.free_gpus(n1, 4)
    lab.free_gpus(n2, 4)
    states = sweep.wait(timeout=120, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    for run in sweep.runs:
        r = json.loads((run.log_dir / "result.json").read_text())
        assert len(r["cuda"].split(",")) == 2
    assert not overlaps(gpu_intervals(remote))
    # the queue is empty: the scheduler left, and its leases with it
    root = remote / ".chester" / "autobot"
    wait_until(lambda: not [p for p in (root / "leases").rglob("*") if p.is_file()], 15)
    from chester_testinfra.sshd import _pid_alive
    state = json.loads((root / "state.json").read_text())
    wait_until(lambda: not _pid_alive(state["pid"]), 15)


def fn_talk(variant, log_dir, exp_name):
    import time as _t

    for i in range(3):
        print(f"line {i} from {exp_name}", flush=True)
        _t.sleep(0.7)


def test_logs_follow_a_run_on_a_node_until_it_ends(tmp_path, gpu_lab):
    import io

    project, cfg, remote = make_project(tmp_path, gpu_lab)
    sweep = launch(fn_talk, [{"i": 0}], backend="lab", exp_prefix="logs", config=cfg,
                   dispatcher=fast())
    out = io.StringIO()
    t0 = time.monotonic()
    sweep.dispatcher.call("chester_logs", sweep.backend, handle=sweep.runs[0].handle,
                          follow=True, stream="stdout", out=out)
    text = out.getvalue()
    assert [f"line {i} from {sweep.runs[0].name}" for i in range(3)] == text.splitlines()
    assert time.monotonic() - t0 < 30
    states = sweep.wait(timeout=60, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}


def fn_env(variant, log_dir, exp_name):
    import json as _j
    import os as _o

    with open(_o.path.join(log_dir, "env.json"), "w") as f:
        _j.dump({k: _o.environ.get(k) for k in ("LAB_VAR", "FROM_PREP", "LAB_SECRET",
                                                "CUDA_VISIBLE_DEVICES")}, f)


def test_env_prepare_secrets_and_container_reach_the_runs(tmp_path, gpu_lab, monkeypatch):
    from chester.testing import container_calls, container_stand_in

    monkeypatch.setenv("LAB_SECRET", "s3cr3t 'q' $(x)")
    runtime, calls = container_stand_in(tmp_path / "ctr")
    project, cfg, remote = make_project(
        tmp_path, gpu_lab, env={"LAB_VAR": "a b"}, prepare_commands=["export FROM_PREP=yes"],
        secrets=["LAB_SECRET"], container={"image": "/images/train.sif", "runtime": str(runtime)})
    sweep = launch(fn_env, [{"i": i} for i in range(2)], backend="lab", exp_prefix="env",
                   config=cfg, dispatcher=fast())
    states = sweep.wait(timeout=120, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    for run in sweep.runs:
        got = json.loads((run.log_dir / "env.json").read_text())
        assert got["LAB_VAR"] == "a b" and got["FROM_PREP"] == "yes"
        assert got["LAB_SECRET"] == "s3cr3t 'q' $(x)" and got["CUDA_VISIBLE_DEVICES"]
    used = container_calls(calls)
    assert len(used) == 2 and all("--nv" in c and "/images/train.sif" in c for c in used)
    # the secrets never sit in a script, and their file is gone once every run started
    sweeps = remote / ".chester" / "autobot" / "sweeps"
    assert "s3cr3t" not in "".join(p.read_text() for p in sweeps.glob("*.json"))
    wait_until(lambda: not list(sweeps.glob("*.secrets")), 15)


def test_a_sweep_allowed_on_one_node_runs_only_there(tmp_path, gpu_lab):
    project, cfg, remote = make_project(tmp_path, gpu_lab)
    sweep = launch(fn_gpu, [{"i": i, "sleep": 0.5} for i in range(6)], backend="lab",
                   exp_prefix="only2", config=cfg, dispatcher=fast(),
                   resources={"nodes": ["chost2"]})
    states = sweep.wait(timeout=120, poll_interval=0.3, pull=True, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    hosts = {json.loads((r.log_dir / "result.json").read_text())["host"] for r in sweep.runs}
    assert hosts == {"chost2"}
    assert not overlaps(gpu_intervals(remote))
