"""One ``exp_prefix``, several launches: the prefix names the sweep (every run of every
launch, in the order of their numbers), ``PREFIX@N`` one launch."""

from __future__ import annotations

import pytest

import chester
from chester.errors import UserError
from chester.launcher import launch
from chester.sweeps import id_ranges
from chester.testing import ConformanceEnv


def _write(variant, log_dir, exp_name):
    import os

    with open(os.path.join(log_dir, "ran"), "w") as f:
        f.write(exp_name)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    return ConformanceEnv.create(tmp_path, backend="local",
                                 config={"backends": {"local": {"type": "local"}}}).config


def _number(name: str) -> int:
    return int(name.split("_", 1)[0])


def test_a_handle_on_the_prefix_covers_launches_made_after_it(cfg):
    a = launch(_write, [{"i": 1}], exp_prefix="grow", config=cfg)
    other = launch(_write, [{"i": 9}], exp_prefix="other", config=cfg)
    exp = chester.sweep("grow", config=cfg)
    assert exp.experiment and exp.ref == "grow" and len(exp) == 1
    b = launch(_write, [{"i": 2}, {"i": 3}], exp_prefix="grow", config=cfg)
    assert [_number(r.name) for r in exp.runs] == [1, 2, 3]  # numbered as their folders
    assert [launch_.id for launch_ in exp.launches()] == [a.id, b.id] and exp.id == b.id
    states = exp.wait(timeout=60, poll_interval=0.1, progress=False)
    assert len(states) == 3 and {s.value for s in states.values()} == {"succeeded"}
    for run in exp.runs:
        assert (run.log_dir / "ran").read_text() == run.name
    # a launch's own handle, and PREFIX@N, stay that launch
    assert len(a.runs) == 1 and len(b.runs) == 2 and not b.experiment
    one = chester.sweep(f"grow@{b.id}", config=cfg)
    assert one.ref == f"grow@{b.id}" and [r.name for r in one.runs] == [r.name for r in b.runs]
    assert chester.sweep("grow", sweep_id=a.id, config=cfg).runs[0].name == a.runs[0].name
    # no name: the latest launch's sweep, all of it
    assert chester.sweep(config=cfg).ref == "grow"
    other.wait(timeout=60, poll_interval=0.1, progress=False)
    assert [r.name for r in chester.sweep("other", config=cfg).runs] == ["1_other"]


def test_wrong_references_say_what_exists(cfg):
    a = launch(_write, [{"i": 1}], exp_prefix="e", config=cfg)
    b = launch(_write, [{"i": 2}], exp_prefix="e", config=cfg)
    launch(_write, [{"i": 1}], exp_prefix="f", config=cfg)
    with pytest.raises(UserError, match=rf"sweep 'e' has no launch 99; its launches are "
                                        rf"{a.id}-{b.id} \(see `chester status e --all`\)"):
        chester.sweep("e@99", config=cfg)
    with pytest.raises(UserError, match="no sweep named 'g' in the job store"):
        chester.sweep(f"g@{b.id}", config=cfg)
    with pytest.raises(UserError, match=f"sweep 'f' has no launch {b.id}"):
        chester.sweep(f"f@{b.id}", config=cfg)
    with pytest.raises(UserError, match="no launch 99 in the job store"):
        chester.sweep(sweep_id=99, config=cfg)
    for s in (a, b):
        s.wait(timeout=60, poll_interval=0.1, progress=False)


def test_a_prefix_with_an_at_sign_is_still_a_prefix(cfg):
    s = launch(_write, [{"i": 1}], exp_prefix="lr@2", config=cfg)
    assert chester.sweep("lr@2", config=cfg).experiment
    assert not chester.sweep(f"lr@2@{s.id}", config=cfg).experiment
    s.wait(timeout=60, poll_interval=0.1, progress=False)


def test_id_ranges():
    assert id_ranges([]) == ""
    assert id_ranges([4]) == "4"
    assert id_ranges([3, 1, 2, 7, 9, 10]) == "1-3, 7, 9-10"
