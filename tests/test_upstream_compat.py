"""Upstream chester's public API on this chester: the variant markers, its configs, its
logger and its example scripts, called as upstream's own tests and examples call them.

Upstream's files are not copied here (nor fetched: CI has no network); each test below makes
the same calls with the same arguments and checks what upstream's tests check. Which
upstream file each follows is named in its docstring (``DanielHou315/chester``, the seed
0.2.1 at ``1edf7d6`` and 2.0.0 at ``89b46db``).
"""

from __future__ import annotations

import json
import sys

import pytest

from chester.launcher import launch
from chester.store import Store
from chester.testing import ConformanceEnv, fn_write_result
from chester.variants import VariantGenerator

MARKERS = ("chester_first_variant", "chester_last_variant")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    return ConformanceEnv.create(tmp_path, backend="local",
                                 config={"backends": {"local": {"type": "local",
                                                                "max_parallel": 2}}})


# -- the variant markers ------------------------------------------------------------------------
def test_markers_reach_the_function_but_no_name_fingerprint_or_variant_json(env):
    """``vg.variants()`` (with its markers) given to ``chester.launch``: the function gets
    each variant exactly as given; names, ``variant.json`` and the sweep's identity are the
    markers-free ones, so launching the generator itself afterwards is the same sweep."""
    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.01, 0.001])
    listed = vg.variants()
    assert listed[0]["chester_first_variant"] and listed[-1]["chester_last_variant"]
    sweep = launch(fn_write_result, listed, backend="local", exp_prefix="marks",
                   config=env.config)
    states = sweep.wait(timeout=60, poll_interval=0.2, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}
    runs = sweep.runs
    assert [r.name for r in runs] == ["1_marks_lr_0.1", "2_marks_lr_0.01", "3_marks_lr_0.001"]
    got = [json.loads((r.log_dir / "result.json").read_text())["variant"] for r in runs]
    assert got == [{"lr": 0.1, "chester_first_variant": True}, {"lr": 0.01},
                   {"lr": 0.001, "chester_last_variant": True}]
    for r, lr in zip(runs, (0.1, 0.01, 0.001), strict=True):
        assert json.loads((r.log_dir / "variant.json").read_text()) == \
            {"lr": lr, "exp_name": r.name}
    # the same variants without markers (the generator itself) are the same sweep: reattach
    again = launch(fn_write_result, vg, backend="local", exp_prefix="marks", config=env.config)
    assert again.id == sweep.id and len(Store(env.config.store_path).runs(sweep.id)) == 3


def test_a_list_of_dicts_with_markers_names_runs_by_what_varies(env):
    """Without ``variations``, the varying keys come from the list: the markers (present on
    two of the dicts) are not among them."""
    sweep = launch(fn_write_result, [{"a": 1, "chester_first_variant": True}, {"a": 2},
                                     {"a": 3, "chester_last_variant": True}],
                   backend="local", exp_prefix="m2", config=env.config, dry_run=True)
    assert [r.name for r in sweep.runs] == ["1_m2_a_1", "2_m2_a_2", "3_m2_a_3"]


def test_a_command_run_never_gets_the_markers_as_arguments(env):
    vg = VariantGenerator()
    vg.add("lr", [0.5, 0.25])
    script = env.project / "show.py"
    script.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    listed = vg.variants()
    assert listed[0]["chester_first_variant"] and listed[1]["chester_last_variant"]
    sweep = launch([sys.executable, "show.py"], listed, backend="local",
                   exp_prefix="cmd", config=env.config)
    states = sweep.wait(timeout=60, poll_interval=0.2, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}
    for r, lr in zip(sweep.runs, ("0.5", "0.25"), strict=True):
        argv = json.loads((r.log_dir / "stdout.log").read_text())
        assert argv == ["--lr", lr, "--log_dir", str(r.log_dir), "--exp_name", r.name]
        assert json.loads((r.log_dir / "variant.json").read_text()) == \
            {"lr": float(lr), "exp_name": r.name}
