"""GPU slots: one CUDA_VISIBLE_DEVICES per run, never two runs on one GPU at once."""

import json
import os
import stat

from chester.config import load_config
from chester.launcher import launch


def record_gpu(variant, log_dir, exp_name):
    import time

    start = time.time()
    time.sleep(0.6)
    with open(os.path.join(log_dir, "gpu.json"), "w") as f:
        json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                   "end": time.time()}, f)


def _project(tmp_path, yaml):
    p = tmp_path / "proj"
    p.mkdir()
    (p / ".git").mkdir()
    (p / "chester.yaml").write_text(yaml)
    return load_config(p / "chester.yaml")


def test_gpus_from_nvidia_smi_become_slots(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    cfg = _project(tmp_path, "log_dir: data\n")
    sweep = launch(record_gpu, [{"i": i} for i in range(5)], exp_prefix="gpus", config=cfg)
    assert "GPUs 0,1" in sweep.prepared.summary and "2 at a time" in sweep.prepared.summary
    states = sweep.wait(timeout=60, pull=False, progress=False)
    assert all(s.value == "succeeded" for s in states.values())
    recs = [json.loads((r.log_dir / "gpu.json").read_text()) for r in sweep.runs]
    assert {r["gpu"] for r in recs} <= {"0", "1"}
    for a in recs:  # at each run's start, at most one other runs, on the other GPU
        at_once = [b for b in recs if b is not a and b["start"] <= a["start"] < b["end"]]
        assert len(at_once) <= 1, "more than two runs at once"
        overlapping = [b for b in recs if b is not a and b["start"] < a["end"] and a["start"] < b["end"]]
        assert all(b["gpu"] != a["gpu"] for b in overlapping), "two runs shared a GPU"


def test_no_nvidia_smi_means_no_gpu_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    cfg = _project(tmp_path, "backends:\n  local:\n    type: local\n    max_parallel: 1\n")
    sweep = launch(record_gpu, [{"i": 0}, {"i": 1}], exp_prefix="cpu", config=cfg)
    assert "1 at a time" in sweep.prepared.summary and "GPU" not in sweep.prepared.summary
    sweep.wait(timeout=60, pull=False, progress=False)
    recs = [json.loads((r.log_dir / "gpu.json").read_text()) for r in sweep.runs]
    assert [r["gpu"] for r in recs] == [None, None]
    assert recs[0]["end"] <= recs[1]["start"] or recs[1]["end"] <= recs[0]["start"]
