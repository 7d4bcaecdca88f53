"""Upstream chester's public API on this chester: the variant markers, its configs, its
logger and its example scripts, called as upstream's own tests and examples call them.

Upstream's files are not copied here (nor fetched: CI has no network); each test below makes
the same calls with the same arguments and checks what upstream's tests check. Which
upstream file each follows is named in its docstring (``DanielHou315/chester``, the seed
0.2.1 at ``1edf7d6`` and 2.0.0 at ``89b46db``).
"""

from __future__ import annotations

import json
import os
import subprocess
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


# -- chester.logger ------------------------------------------------------------------------------
TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} (?:[A-Za-z]+|[+-]\d+)"


def _drive(logger, d):
    """The calls the earlier chester's logger tests and MNIST task make, and its edge cases
    (a key that appears later, None, an average, a long value, nan, an empty row)."""
    logger.configure(dir=str(d), format_strs=["stdout", "log", "csv", "json"])
    logger.logkv("epoch", 1)
    logger.dumpkvs()
    logger.logkv("loss", 0.123456)
    logger.logkv("epoch", 2)
    logger.dumpkvs()
    logger.logkv_mean("acc", 0.5)
    logger.logkv_mean("acc", 0.75)
    logger.dumpkvs()
    logger.logkv("name", "x" * 40)
    logger.logkv("acc", float("nan"))
    logger.dumpkvs()
    logger.logkv("epoch", None)
    logger.dumpkvs()
    logger.record_tabular("epoch", 5)
    logger.dump_tabular()
    logger.log("a", 1, "b")
    logger.dumpkvs()
    logger.logkvs({"k": "v,w"})
    logger.dumpkvs()
    logger.reset()


#: what the earlier chester's logger writes for :func:`_drive` (its progress.csv and
#: progress.json byte for byte; log.txt with the time stamps masked)
CSV = ("epoch,loss,acc,name,k\n"
       "1,,,,\n"
       "2,0.123456,,,\n"
       ",,0.625,,\n"
       ",,nan,xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,\n"
       ",,,,\n"
       "5,,,,\n"
       ",,,,\n"
       ",,,,v,w\n")
JSONL = ('{"epoch": 1}\n{"loss": 0.123456, "epoch": 2}\n{"acc": 0.625}\n'
         '{"name": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "acc": NaN}\n'
         '{"epoch": null}\n{"epoch": 5}\n{}\n{"k": "v,w"}\n')
LOG = """\
Logging to DIR
TS
| epoch | 1 |
-------------
TS
| epoch | 2        |
| loss  | 0.123    |
--------------------
TS
| acc | 0.625    |
------------------
-------TS-------
| acc  | nan                               |
| name | xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... |
--------------------------------------------
TS
| epoch | None |
----------------
TS
| epoch | 5 |
-------------
a1b
TS
| k | v,w |
-----------
"""


def test_logger_writes_the_earlier_chesters_files_byte_for_byte(tmp_path, capsys):
    import re

    from chester import logger

    _drive(logger, tmp_path)
    assert (tmp_path / "progress.csv").read_bytes() == CSV.encode()
    assert (tmp_path / "progress.json").read_bytes() == JSONL.encode()
    log = re.sub(TS, "TS", (tmp_path / "log.txt").read_text()).replace(str(tmp_path), "DIR")
    assert log == LOG
    out = re.sub(TS, "TS", capsys.readouterr().out).replace(str(tmp_path), "DIR")
    # stdout: the same tables and lines, the empty row's warning (once per table format), and
    # the reset
    assert out == LOG.replace("a1b\n", "a1b\n" + "WARNING: tried to write empty key-value "
                              "dict\n" * 2) + "Reset logger\n"


def test_the_logger_as_the_earlier_chesters_tests_use_it(tmp_path, monkeypatch):
    """Its test_local.py's test_logger and the MNIST task's calls: configure with csv and
    stdout, logkv, dumpkvs, log, reset; the environment defaults; every public name."""
    from chester import logger

    logger.configure(dir=str(tmp_path), format_strs=["csv", "stdout"])
    logger.log("Starting experiment: x")
    for epoch, loss, acc in ((1, 0.5, 0.85), (2, 0.3, 0.92)):
        logger.logkv("epoch", epoch)
        logger.logkv("loss", loss)
        logger.logkv("accuracy", acc)
        logger.dumpkvs()
    assert logger.get_dir() == str(tmp_path)
    logger.reset()
    assert (tmp_path / "progress.csv").read_text() == \
        "epoch,loss,accuracy\n1,0.5,0.85\n2,0.3,0.92\n"
    assert logger.get_dir() is None
    for name in ("configure", "reset", "scoped_configure", "logkv", "logkv_mean", "logkvs",
                 "dumpkvs", "getkvs", "log", "debug", "info", "warn", "error", "set_level",
                 "get_dir", "record_tabular", "dump_tabular", "ProfileKV", "profile", "Logger",
                 "read_json", "read_csv", "read_tb", "DEBUG", "INFO", "WARN", "ERROR",
                 "DISABLED"):
        assert hasattr(logger, name), name
    # defaults from the environment, as in baselines: $OPENAI_LOGDIR, $OPENAI_LOG_FORMAT
    monkeypatch.setenv("OPENAI_LOGDIR", str(tmp_path / "env"))
    monkeypatch.setenv("OPENAI_LOG_FORMAT", "json,log")
    with logger.scoped_configure():
        logger.logkv("a", 1)
        with logger.ProfileKV("step"):
            pass
        assert set(logger.getkvs()) == {"a", "wait_step"}
        logger.set_level(logger.DISABLED)
        logger.dumpkvs()
        logger.set_level(logger.INFO)
        logger.dumpkvs()
    assert sorted(os.listdir(tmp_path / "env")) == ["log.txt", "progress.json"]
    assert json.loads((tmp_path / "env" / "progress.json").read_text())["a"] == 1
    with pytest.raises(ValueError, match="unknown format 'cvs'"):
        logger.configure(dir=str(tmp_path / "bad"), format_strs=["cvs"])
    assert not (tmp_path / "bad").exists()


def test_the_tensorboard_format_writes_scalars_tensorboard_reads(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from chester import logger

    logger.configure(dir=str(tmp_path), format_strs=["tensorboard"])
    for step in range(3):
        logger.logkv("loss", 1.0 / (step + 1))
        logger.logkv("epoch", step)
        logger.dumpkvs()
    logger.reset()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["epoch", "loss"]
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("loss")] == \
        [(1, 1.0), (2, 0.5), (3, 0.3333)]


def test_without_tensorboard_the_format_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['tensorboard'] = None\n"
            "from chester import logger\n"
            "try:\n    logger.configure(dir=sys.argv[1], format_strs=['csv', 'tensorboard'])\n"
            "except ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("the 'tensorboard' format needs the tensorboard package "
                                     "where the run runs (pip install tensorboard), or leave "
                                     "it out of format_strs")
