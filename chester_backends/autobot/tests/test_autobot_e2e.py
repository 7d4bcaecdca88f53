"""End-to-end tests of the autobot backend on the test lab (tests/infra ``gpu_lab``: the
loopback sshd as login host, two network-namespace hosts as GPU nodes with a stand-in
``nvidia-smi``, one shared filesystem)."""

from __future__ import annotations

import json
import sys
import time

import cloudpickle

from chester.dispatch import Dispatcher
from chester.launcher import launch
from tests.infra.gpulab import gpu_intervals, make_project, overlaps

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
