"""The scheduler file reaches the login host as chester's runtime does: under a part name of
its own, renamed to ``scheduler-<digest>.py`` only once its bytes match the digest. A copy
cut short in transit (a disk that filled mid-upload) is never run: the launch stops in one
line, and the next launch puts a whole copy in place."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from chester_backend_autobot.plugin import SCHEDULER_SRC, AutobotBackend, scheduler_remote
from chester_testinfra.gpulab import make_project

from chester.errors import BackendError
from chester.launcher import launch
from chester.plugin.testing import dispatcher_with
from chester.remote.ssh import Transport

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_ok(variant, log_dir, exp_name):
    with open(f"{log_dir}/ok.txt", "w") as f:
        f.write(str(variant["i"]))


class _Watched(AutobotBackend):
    """The autobot backend, keeping what each upload sent; with ``cut``, a scheduler part
    file loses its second half on the host right after it arrived."""

    def __init__(self, cut: bool = False) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.cut = cut

    def transport(self, backend):
        outer = self

        class Watched(Transport):
            def put_tree(self, local_root, rel_paths, remote_root):
                outer.sent += list(rel_paths)
                super().put_tree(local_root, rel_paths, remote_root)
                for rel in rel_paths:  # the lab's filesystem is this machine's
                    if outer.cut and "/.scheduler-" in "/" + rel and rel.endswith(".part"):
                        p = Path(remote_root) / rel
                        p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])

        return Watched(super().transport(backend).target, backend=backend.name)


def _launch(cfg, plugin, prefix):
    return launch(fn_ok, [{"i": 1}, {"i": 2}], backend="lab", exp_prefix=prefix, config=cfg,
                  dispatcher=dispatcher_with(plugin, "autobot",
                                             sleep=lambda s: time.sleep(min(s, 0.5))))


def test_the_scheduler_travels_under_a_part_name_and_is_renamed_whole(tmp_path, gpu_lab):
    project, cfg, remote = make_project(tmp_path, gpu_lab)
    final = Path(scheduler_remote(cfg.backend("lab")))
    plugin = _Watched()
    sweep = _launch(cfg, plugin, "sched")
    key = sweep.runs[0].token
    sent = ["/" + rel.lstrip("/") for rel in plugin.sent]
    assert str(final) not in sent, "the scheduler was written under its final name"
    assert f"{final.parent}/.{final.name}.{key}.part" in sent, sent
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    assert final.read_bytes() == SCHEDULER_SRC.read_bytes()
    assert not list(final.parent.glob(".scheduler-*.part"))


def test_a_scheduler_cut_short_in_transit_never_runs(tmp_path, gpu_lab):
    project, cfg, remote = make_project(tmp_path, gpu_lab)
    final = Path(scheduler_remote(cfg.backend("lab")))
    with pytest.raises(BackendError) as ei:
        _launch(cfg, _Watched(cut=True), "cut")
    msg = str(ei.value)
    assert "the scheduler did not arrive whole" in msg and "\n" not in msg, msg
    assert not final.exists() and not list(final.parent.glob(".scheduler-*.part"))
    assert not list(remote.rglob(".chester/status.json"))  # no run started
    # the next launch sends it again, whole
    sweep = _launch(cfg, _Watched(), "cut")
    states = sweep.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    assert final.read_bytes() == SCHEDULER_SRC.read_bytes()
