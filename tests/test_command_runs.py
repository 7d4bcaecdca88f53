"""Command runs: a program run once per variant with the variant as arguments, through the
same worker, payload and backends as functions. Hostile values must reach the program's
``sys.argv`` byte-exact and never meet a shell, on local, ssh and slurm (real servers from
``testinfra``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from chester.command import Command, CommandError
from chester.config import load_config
from chester.errors import UserError
from chester.hydra_grammar import hydra_value
from chester.launcher import launch
from chester.types import State

from .helpers import HYDRA_APP

PY = sys.executable

HOSTILE = [
    "plain",
    "it's \"quoted\" \\ back",
    "$(touch /tmp/chester-pwned-cmd) `id` ${HOME}",
    "two\nlines\ttab",
    "ünïcødé ☃ 日本",
    "-looks-like-an-option",
    "; rm -rf / #",
    "",
    "a b  c",
]

SHOW_ARGV = '''
import json, os, sys
d = os.environ["CHESTER_LOG_DIR"]
with open(os.path.join(d, "argv.json"), "w", encoding="utf-8") as f:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(),
               "exp_name": os.environ["CHESTER_EXP_NAME"]}, f)
print("out from", os.environ["CHESTER_EXP_NAME"])
'''

FAIL = '''
import sys
print("about to fail", file=sys.stderr)
print("the real reason: bad lr", file=sys.stderr)
sys.exit(3)
'''


def _variants() -> list[dict]:
    return [{"msg": v, "i": i} for i, v in enumerate(HOSTILE)]


# -- building argv ------------------------------------------------------------------------

def test_argparse_style_is_exact_and_passes_the_run_folder():
    c = Command(["python", "t.py", "--fixed"])
    argv = c.build({"lr": 0.1, "msg": "$(x) 'y'", "neg": "-3", "flag": True, "xs": [1, 2],
                    "chester_last_variant": True}, "/logs/1_a", "1_a")
    assert argv == ["python", "t.py", "--fixed", "--lr", "0.1", "--msg", "$(x) 'y'",
                    "--neg=-3", "--flag", "True", "--xs", "[1, 2]",
                    "--log_dir", "/logs/1_a", "--exp_name", "1_a"]
    assert Command("python t.py", run_args=False).build({"a": 1}, "/l", "n") == \
        ["python", "t.py", "--a", "1"]


def test_hydra_style_overrides_flags_and_run_dir():
    c = Command("python app.py", "hydra", hydra_flags={"multirun": False, "cfg": "job",
                                                       "verbose": True})
    argv = c.build({"lr": 1e-3, "model": {"name": "resnet", "depth": 50}, "on": False,
                    "x": None, "xs": [1, "a"], "s": "a b=c"}, "/logs/r", "r")
    assert argv == ["python", "app.py", "--cfg=job", "--verbose", "lr=0.001",
                    "model.name=resnet", "model.depth=50", "on=false", "x=null", "xs=[1,a]",
                    "s='a b=c'", "hydra.run.dir=/logs/r"]


def test_template_style_fills_placeholders():
    c = Command(["python", "t.py", "--lr={lr}", "{msg}", "--out", "{log_dir}/ckpt", "{{x}}"],
                "template")
    assert c.build({"lr": 0.5, "msg": "a b"}, "/l", "n") == \
        ["python", "t.py", "--lr=0.5", "a b", "--out", "/l/ckpt", "{x}"]
    with pytest.raises(CommandError, match=r"\{seed\} names no variant key"):
        Command(["t", "{seed}"], "template").build({"lr": 0.5, "seedx": 1}, "/l", "n")


def test_bad_commands_are_refused_with_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="args_style must be one of"):
        Command(["x"], "yaml")
    with pytest.raises(CommandError, match="non-empty list"):
        Command([])
    with pytest.raises(CommandError, match="hydra_flags applies only"):
        Command(["x"], hydra_flags={"a": 1})
    cfg = _local_project(tmp_path)
    with pytest.raises(UserError, match=r"\{nope\} names no variant key"):
        launch(["python", "{nope}"], [{"a": 1}], args_style="template", config=cfg,
               exp_prefix="bad")


# -- on backends --------------------------------------------------------------------------

def _write_scripts(project: Path) -> None:
    (project / "show_argv.py").write_text(SHOW_ARGV)
    (project / "fail.py").write_text(FAIL)


def _local_project(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    _write_scripts(project)
    (project / "chester.yaml").write_text(yaml.safe_dump(
        {"backends": {"local": {"type": "local", "max_parallel": 2}}}))
    return load_config(project / "chester.yaml")


def _check_hostile(sweep, style: str, project: Path) -> None:
    states = sweep.wait(timeout=180, poll_interval=0.3, progress=False, pull=True)
    assert set(states.values()) == {State.SUCCEEDED}, states
    assert not Path("/tmp/chester-pwned-cmd").exists()
    seen = set()
    for run in sweep.runs:
        got = json.loads((run.log_dir / "argv.json").read_text(encoding="utf-8"))
        i = _index_of(got["argv"], style)
        msg = HOSTILE[i]
        if style == "argparse":
            expect = ([f"--msg={msg}"] if msg.startswith("-") else ["--msg", msg]) + \
                ["--i", str(i)]
            assert got["argv"][:len(expect)] == expect
            assert got["argv"][len(expect):][0] == "--log_dir"
            assert got["argv"][-2:] == ["--exp_name", run.name]
        else:  # written for Hydra's parser, which reads back exactly msg
            assert got["argv"][:2] == [f"msg={hydra_value(msg)}", f"i={i}"]
            assert _hydra_reads(got["argv"][0]) == msg
            assert got["argv"][2].startswith("hydra.run.dir=")
        assert got["exp_name"] == run.name
        assert (Path(got["cwd"]) / "show_argv.py").exists() or project.name in got["cwd"]
        assert f"out from {run.name}" in run.log_dir.joinpath("stdout.log").read_text()
        seen.add(i)
    assert seen == set(range(len(HOSTILE)))


def _hydra_reads(override: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).value()


def _index_of(argv: list[str], style: str) -> int:
    if style == "argparse":
        return int(argv[argv.index("--i") + 1])
    return int(next(a for a in argv if a.startswith("i="))[2:])


@pytest.mark.parametrize("style", ["argparse", "hydra"])
def test_hostile_values_local(tmp_path, style):
    cfg = _local_project(tmp_path)
    sweep = launch(["python", "show_argv.py"], _variants(), args_style=style, config=cfg,
                   backend="local", exp_prefix=f"hostile-{style}")
    _check_hostile(sweep, style, cfg.project_path)


def test_failed_command_is_failed_with_its_stderr_tail(tmp_path):
    cfg = _local_project(tmp_path)
    sweep = launch("python fail.py", [{"lr": 1}], config=cfg, backend="local",
                   exp_prefix="fails")
    states = sweep.wait(timeout=60, poll_interval=0.2, progress=False)
    assert list(states.values()) == [State.FAILED]
    (run,) = sweep.runs
    assert "`python fail.py` exited with status 3" in (run.reason or "")
    assert "the real reason: bad lr" in (run.stderr_tail or "")
    assert "Traceback" not in (run.stderr_tail or "")
    rec = json.loads((sweep.runs[0].log_dir / ".chester" / "status.json").read_text())
    assert rec["exit_code"] == 3 and rec["state"] == "failed"


def test_hostile_values_ssh(tmp_path, sshd_loopback):
    h = sshd_loopback
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    _write_scripts(project)
    (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"box": {
        "type": "ssh", "host": h.alias, "ssh_config": h.ssh_config, "python": PY,
        "remote_dir": f"{h.remote_dir}/{tmp_path.name}-cmd"}}}))
    cfg = load_config(project / "chester.yaml")
    for style in ("argparse", "hydra"):
        sweep = launch(["python", "show_argv.py"], _variants(), args_style=style, config=cfg,
                       backend="box", exp_prefix=f"hostile-{style}")
        _check_hostile(sweep, style, project)


def test_hostile_values_slurm(tmp_path, slurm_cluster, sshd_loopback):
    h = sshd_loopback
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    _write_scripts(project)
    (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"cluster": {
        "type": "slurm", "host": h.alias, "ssh_config": h.ssh_config, "python": PY,
        "poll_interval": 0.3, "scheduler_env": dict(slurm_cluster.env),
        "remote_dir": str(tmp_path / "remote")}}}))
    cfg = load_config(project / "chester.yaml")
    for style in ("argparse", "hydra"):
        sweep = launch(["python", "show_argv.py"], _variants(), args_style=style, config=cfg,
                       backend="cluster", exp_prefix=f"hostile-{style}")
        _check_hostile(sweep, style, project)


SLEEPER = '''
import os, time
with open(os.path.join(os.environ["CHESTER_LOG_DIR"], "child.pid"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
'''


def test_cancel_stops_the_command_and_its_worker(tmp_path):
    import time

    from chester.rundir import pid_alive

    cfg = _local_project(tmp_path)
    (cfg.project_path / "sleeper.py").write_text(SLEEPER)
    sweep = launch(["python", "sleeper.py"], [{"n": 1}], config=cfg, backend="local",
                   exp_prefix="cancel-cmd", run_args=False)
    pid_file = sweep.runs[0].log_dir / "child.pid"
    end = time.time() + 30
    while not pid_file.exists() or not pid_file.read_text():  # (written after it is made)
        assert time.time() < end, "the command never started"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert pid_alive(child)
    assert list(sweep.cancel().values()) == [True]
    states = sweep.wait(timeout=30, poll_interval=0.2, progress=False, pull=False)
    assert list(states.values()) == [State.CANCELLED]
    end = time.time() + 10
    while pid_alive(child):
        assert time.time() < end, "the command outlived its cancelled run"
        time.sleep(0.1)


# a mapping is refused in the hydra style only: argparse and template give it as JSON, which
# escapes NUL
@pytest.mark.parametrize("style,value,what", [
    *((style, value, what) for style in ("argparse", "hydra", "template")
      for value, what in (("a\0b", "NUL"), ("lone \ud800 surrogate", "surrogate"))),
    ("hydra", {"nested": "x\0"}, "NUL")])
def test_values_no_argv_can_carry_are_refused_at_launch_naming_variant_and_key(
        tmp_path, style, value, what):
    """A NUL or a lone surrogate reached the target and failed there (`embedded null
    byte`); now the launch refuses it first, naming the variant and the key."""
    from chester.testing import ConformanceEnv

    env = ConformanceEnv.create(tmp_path, backend="local",
                                config={"backends": {"local": {"type": "local"}}})
    argv = [PY, "-c", "pass"] + (["{bad}"] if style == "template" else [])
    with pytest.raises(UserError) as ei:
        launch(Command(argv, style), [{"ok": "fine", "bad": "fine"},
                                      {"ok": "fine", "bad": value}],
               backend="local", exp_prefix="nul", config=env.config)
    msg = str(ei.value)
    assert "variant 2 of 2" in msg and "'bad'" in msg and what in msg and "\n" not in msg
    assert not (env.project / ".chester").exists()  # nothing recorded, nothing submitted


def test_bytes_values_still_reach_the_command_as_their_bytes():
    """Bytes travel as surrogate escapes, which argv carries: they are not refused."""
    Command([PY, "-c", "pass"]).check({"b": b"\xff\xfe"}, "LOG", "NAME")



#: values a Hydra app must receive exactly, each one of a run's config
HYDRA_VALUES = [
    ["x,y", "z"], "a,b", "it's", 'say "hi" \\ back\\', "$(touch /tmp/chester-pwned-hydra) `id`",
    "two\nlines\ttab", "ünïcødé ☃ 日本", "", "true", "1e-3", "[1,2]", "a=b", None, 1.5, -7,
    True, "${oc.env:HOME}", {"a b": [1, {"c": None}], 3: "x:y"}, {"name": "resnet", "depth": 50},
]


def test_hydra_style_values_reach_a_hydra_app_exactly(tmp_path):
    """chester.launch(args_style="hydra") writes each value so that the app's own Hydra
    reads back exactly that value: commas, quotes and brackets in strings no longer split a
    run's list or make the run fail; an interpolation reaches OmegaConf as it is."""
    import pickle

    pytest.importorskip("hydra")
    cfg = _local_project(tmp_path)
    (cfg.project_path / "app.py").write_text(HYDRA_APP)
    variants = [{"++v": v, "++i": i} for i, v in enumerate(HYDRA_VALUES)]
    sweep = launch(["python", "app.py"], variants, args_style="hydra", config=cfg,
                   backend="local", exp_prefix="hydra-values")
    states = sweep.wait(timeout=300, poll_interval=0.3, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, [(r.name, r.reason, r.stderr_tail)
                                                        for r in sweep.rows()]
    assert not Path("/tmp/chester-pwned-hydra").exists()
    seen = set()
    for run in sweep.runs:
        with open(run.log_dir / "got.pkl", "rb") as f:
            got = pickle.load(f)["cfg"]
        i = got["i"]
        expect = HYDRA_VALUES[i]
        assert got["v"] == expect and type(got["v"]) is type(expect), (i, got["v"])
        if isinstance(expect, dict):
            assert list(got["v"]) == list(expect)
        seen.add(i)
    assert seen == set(range(len(HYDRA_VALUES)))
