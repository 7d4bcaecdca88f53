"""The end watcher of the autobot backend: while a wait waits, a run's end reaches it from
the run's own end record on the login host (where the shared run folders are), not at the
next status poll. On the test lab (testinfra ``gpu_lab``)."""

from __future__ import annotations

import sys
import time

import cloudpickle
from chester_backend_autobot import capacity, scheduler
from chester_backend_autobot.plugin import AutobotBackend
from chester_testinfra.gpulab import make_project

from chester.launcher import launch
from chester.plugin.manager import hookimpl
from chester.plugin.testing import dispatcher_with, fn_sleep
from chester.types import State

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class _CountingAutobot(AutobotBackend):
    """The autobot backend, counting its status polls (each one call of its scheduler)."""

    def __init__(self, polls: list[float]):
        super().__init__()
        self.polls = polls

    @hookimpl
    def chester_status(self, backend, handles):
        self.polls.append(time.monotonic())
        return super().chester_status(backend, handles)


def test_a_wait_with_a_long_poll_ends_when_the_last_run_ends(tmp_path, gpu_lab):
    """Polls 30 s apart: the wait returns within about two seconds of the last run's end
    record, and each run's host is the node it was placed on, as a poll says."""
    _project, cfg, _remote = make_project(tmp_path, gpu_lab)
    polls: list[float] = []
    sweep = launch(fn_sleep, [{"sleep": s} for s in (1, 2, 3)], backend="lab",
                   exp_prefix="watch", config=cfg,
                   dispatcher=dispatcher_with(_CountingAutobot(polls), name="autobot"))
    states = sweep.wait(timeout=120, poll_interval=30, pull=False, progress=False)
    returned = time.time()
    assert set(states.values()) == {State.SUCCEEDED}, states
    rows = [sweep.store.run(r.id) for r in sweep.runs]
    last = max(r.ended_at for r in rows)
    assert returned - last < 3.0, (returned - last, rows)
    assert {r.host for r in rows} <= set(gpu_lab.nodes), rows
    assert len(polls) == 1, polls  # the ends came from the records, not another poll


def test_the_watcher_reads_the_placement_the_scheduler_writes():
    assert capacity.PLACEMENT == scheduler.PLACEMENT
