"""The lab as a pool's member (issue 27): the scheduler says how many runs the lab's free
GPUs start now (``chester_capacity``), and a pool of the lab and this machine puts those
runs on the lab first."""

from __future__ import annotations

import json
import sys
import time

import cloudpickle
import yaml
from chester_testinfra.gpulab import lab_backend

from chester.config import load_config
from chester.dispatch import Dispatcher
from chester.launcher import launch
from chester.plugin.records import State

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_value(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    _t.sleep(variant.get("sleep", 0))
    with open(_o.path.join(log_dir, "value.txt"), "w", encoding="utf-8") as f:
        f.write(variant["value"])


def _project(tmp_path, lab, **pool):
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    remote = tmp_path / "shared" / "proj"
    cfg = {"backends": {"lab": lab_backend(lab, remote),
                        "one": {"type": "local", "max_parallel": 1},
                        "anywhere": {"type": "pool", "members": ["lab", "one"], **pool}}}
    (project / "chester.yaml").write_text(yaml.safe_dump(cfg))
    return project, load_config(project / "chester.yaml")


def fast() -> Dispatcher:
    return Dispatcher(sleep=lambda s: time.sleep(min(s, 0.5)))


def test_the_lab_says_its_free_gpus_as_runs(tmp_path, gpu_lab):
    n1, n2 = gpu_lab.nodes
    gpu_lab.set_gpus(n1, [{"used": 9000, "procs": [4242]}, {}, {}, {}])  # another user's
    gpu_lab.free_gpus(n2, 4)
    _project_dir, cfg = _project(tmp_path, gpu_lab)
    d = fast()
    cap = d.call("chester_capacity", cfg.backend("lab", d.manager), runs=[])
    assert (cap.free, cap.room, cap.wait_s, cap.paid) == (7, None, None, False)
    assert "7 of 8 GPUs free" in cap.note


def test_a_pool_puts_runs_on_the_labs_free_gpus_first(tmp_path, gpu_lab, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    n1, n2 = gpu_lab.nodes
    gpu_lab.free_gpus(n1, 4)
    gpu_lab.set_gpus(n2, [{}, {}, {"used": 9000, "procs": [4242]}, {}])
    project, cfg = _project(tmp_path, gpu_lab)
    values = [f"v{i} 'q' $(x) \u2603" for i in range(10)]
    sweep = launch(fn_value, [{"value": v, "sleep": 1} for v in values], backend="anywhere",
                   exp_prefix="labpool", config=cfg, dispatcher=fast())
    members = [r.member for r in sweep.rows()]
    # 7 free GPUs and 1 free slot here; the 2 left spread over both (no wait is known)
    assert members == ["lab"] * 8 + ["one"] * 2, members
    states = sweep.wait(timeout=180, poll_interval=0.3, pull=True, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, states
    for r, v in zip(sweep.rows(), values, strict=True):
        assert (project / r.local_dir / "value.txt").read_text(encoding="utf-8") == v
        assert json.loads((project / r.local_dir / ".chester" / "status.json").read_text()
                          )["attempt"] == 1
    d = fast()
    spent = d.call("chester_spend", cfg.backend("lab", d.manager),
                   handles=[r.handle for r in sweep.rows() if r.member == "lab"])
    # 8 runs of at least a second each, one GPU each; shown, never money
    assert spent.gpu_hours >= 8 / 3600 and spent.usd == 0, spent
