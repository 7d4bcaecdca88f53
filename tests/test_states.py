"""The one rule from a run's records to its state (chester.target.states): a table of record
combinations, each point where the readers disagreed before they shared it, and checks that
every reader imports the rule and none builds its reasons itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from chester.target import states

ROOT = Path(__file__).resolve().parents[1]
META = {"token": "t", "attempt": 2}


def rec(state="running", attempt=2, token="t", **kw):
    out = {"token": token, "attempt": attempt, "state": state, "pid": 1,
           "ended_at": None if state == "running" else 2.0}
    out.update(kw)
    return out


def decide(status, *, done=False, cancel=False, alive=False, exit_record=None, tail=None,
           free=10 << 30, pending=False, meta=META):
    return states.decide(meta, status, done=done, cancel=cancel, alive=alive,
                         exit_record=exit_record, exit_pending=pending, tail=tail,
                         free_bytes=free, run_dir="/runs/a")


ENOSPC = "OSError: [Errno 28] No space left on device: '/runs/a/big.bin'"

# (what the records hold, state, a piece of the reason (None: no reason))
TABLE = [
    # run.json missing
    (dict(status=rec("succeeded"), done=True, meta={}), "lost", "run folder missing"),
    # the end decides: success needs the record AND .done
    (dict(status=rec("succeeded", exit_code=0), done=True), "succeeded", None),
    (dict(status=rec("succeeded", exit_code=0), done=False), "failed", ".done is missing"),
    (dict(status=rec("running"), done=True, alive=True), "running", None),
    (dict(status=None, done=True), None, None),
    (dict(status=rec("failed", reason="ValueError: x", exit_code=1)), "failed", "ValueError: x"),
    (dict(status=rec("terminated", reason="terminated by signal 15")), "failed",
     "terminated by signal 15"),
    (dict(status=rec("timeout", reason="time_limit_s=3")), "timeout", "time_limit_s=3"),
    (dict(status=rec("lost", reason="agent gone")), "lost", "agent gone"),
    (dict(status=rec("oom", reason="out of memory: x")), "oom", "out of memory"),
    (dict(status=rec("strange-word", reason="?")), "failed", "?"),
    # a cancel marker turns a stop into cancelled, never a success or an own cause
    (dict(status=rec("failed"), cancel=True), "cancelled", "cancelled"),
    (dict(status=rec("terminated"), cancel=True), "cancelled", "cancelled"),
    (dict(status=rec("succeeded"), done=True, cancel=True), "succeeded", None),
    (dict(status=rec("timeout", reason="limit"), cancel=True), "timeout", "limit"),
    (dict(status=rec("running"), cancel=True), "cancelled", "cancelled"),
    (dict(status=None, cancel=True), "cancelled", "cancelled before it started"),
    (dict(status=rec("running"), cancel=True, alive=True), "running", None),
    # a record of another run, or of an earlier attempt, is as good as none
    (dict(status=rec("succeeded", token="other"), done=True), None, None),
    (dict(status=rec("succeeded", attempt=1), done=True), None, None),
    (dict(status=rec("succeeded", attempt=3), done=True), "succeeded", None),
    # started, no end, the process gone: why
    (dict(status=rec("running"), tail=ENOSPC), "failed",
     "no space left on the file system of /runs/a (10485760 KiB free): " + ENOSPC),
    (dict(status=rec("running"), free=4096), "failed",
     "no space left on the file system of /runs/a (4 KiB free)"),
    (dict(status=rec("running"), tail="slurmstepd: error: Detected 1 oom_kill event in x"),
     "oom", "out of memory: slurmstepd: error: Detected 1 oom_kill event in x"),
    (dict(status=rec("running"), exit_record={"token": "t", "attempt": 2, "returncode": -11}),
     "failed", "killed by SIGSEGV (11) before it recorded an end"),
    (dict(status=rec("running"), exit_record={"token": "t", "attempt": 2, "returncode": 3}),
     "failed", "exited with code 3 without recording an end"),
    (dict(status=rec("running"), exit_record={"token": "old", "returncode": 3}), "failed",
     "died without recording an exit (killed?)"),
    (dict(status=rec("running")), "failed", "died without recording an exit (killed?)"),
    (dict(status=rec("running"), pending=True), "running", None),
    (dict(status=rec("running"), pending=True, tail=ENOSPC), "failed", "no space left"),
    # never started, and what was to start it ended
    (dict(status=None, exit_record={"token": "t", "attempt": 2, "returncode": 4},
          tail="chester: uv sync failed on n1"), "failed", "uv sync failed on n1"),
    (dict(status=None, exit_record={"token": "t", "attempt": 2, "returncode": 4}), "failed",
     "the worker exited with code 4 before it recorded a start"),
    (dict(status=None, exit_record={"token": "t", "attempt": 2, "returncode": -9}), "failed",
     "killed by SIGKILL (9) before it recorded a start"),
    (dict(status=None, exit_record={"token": "t", "attempt": 2, "returncode": 1},
          tail=ENOSPC), "failed", "no space left on the file system of /runs/a"),
    (dict(status=None), None, None),
]


@pytest.mark.parametrize("given,state,reason", TABLE,
                         ids=[f"{i}-{t[1]}" for i, t in enumerate(TABLE)])
def test_the_rule_table(given, state, reason):
    v = decide(**given)
    if state is None:
        assert v is None, v
        return
    assert v["state"] == state, v
    if reason is None:
        assert v["reason"] is None, v
    else:
        assert reason in v["reason"], v


def test_exit_codes_follow_the_shell():
    assert decide(rec("running"), exit_record={"token": "t", "attempt": 2,
                                               "returncode": -9})["exit_code"] == 137
    assert decide(rec("succeeded"), done=True)["exit_code"] == 0
    assert decide(rec("failed", exit_code=1))["exit_code"] == 1
    assert states.exit_code(-15) == 143 and states.exit_code(3) == 3
    assert states.exit_code(None) is None
    assert states.signal_name(99) == "signal 99"


def test_where_the_readers_disagreed():
    """Each point where the four readers read the same records differently before."""
    # the target tool (local, ssh) read a success record alone as success; SLURM did not
    assert states.from_end(rec("succeeded"), done=False)["state"] == "failed"
    # autobot, the target tool and EC2 took .done alone (with a running record) for success
    assert not states.succeeded(rec("running"), done=True)
    # SLURM read a success whose job SLURM later called CANCELLED as cancelled: the end decides
    assert states.from_end(rec("succeeded"), done=True, cancel=True)["state"] == "succeeded"
    # autobot checked the attempt, the target tool and SLURM the token only
    assert states.current(META, rec("succeeded", attempt=1)) is None
    assert states.current({"token": "t"}, rec("succeeded", attempt=1)) is not None
    # only the target tool knew a full disk; only SLURM a setup line and a memory kill
    assert "no space left" in states.died(tail=ENOSPC, run_dir="/r")["reason"]
    assert states.not_started(tail="x\nchester: module load cuda failed on n1\n")["reason"] \
        == "module load cuda failed on n1"
    assert states.died(tail="Exceeded job memory limit")["state"] == "oom"
    # only the target tool named signals (SLURM: "job failed with exit code 0:11")
    assert "SIGSEGV (11)" in states.died(returncode=-11)["reason"]
    # the autobot loop named the node; the rule keeps that
    assert "died on n1 without" in states.died(host="n1")["reason"]
    # EC2 kept the worker's reason for a cancelled run, the others said "cancelled"
    assert states.from_end(rec("failed", reason="terminated by signal 15"), done=False,
                           cancel=True)["reason"] == "cancelled"
    # a terminated record: failed, marked so a scheduler that knows why may say it
    assert states.from_end(rec("terminated"), done=False).get("stopped") is True


def test_the_rule_runs_on_python_3_8():
    """The EC2 agent may import the rule with an AMI's Python 3.8: its source compiles
    for 3.8 (annotations are never evaluated), and so does the agent's."""
    for path in (ROOT / "chester" / "target" / "states.py",
                 ROOT / "chester_backends" / "ec2" / "src" / "chester_backend_ec2" / "agent.py"):
        tree = ast.parse(path.read_text(), feature_version=(3, 8))
        assert tree.body
    # and it imports with the standard library alone, as from the runtime zip
    r = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, %r); "
                        "from chester.target import states; print(states.FAILED)"
                        % str(ROOT)], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "failed", r.stderr


READERS = {
    "the target tool (local, ssh)": ROOT / "chester/target/tool.py",
    "the SLURM reader": ROOT / "chester_backends/slurm/src/chester_backend_slurm/scheduler.py",
    "the autobot scheduler":
        ROOT / "chester_backends/autobot/src/chester_backend_autobot/scheduler.py",
    "the EC2 agent": ROOT / "chester_backends/ec2/src/chester_backend_ec2/agent.py",
    "the EC2 plugin": ROOT / "chester_backends/ec2/src/chester_backend_ec2/plugin.py",
}
#: words of the rule's reasons: only chester/target/states.py may write them
RULE_WORDS = ["without recording an exit", "without recording an end", "before it recorded",
              "no space left on", "No space left on device", ".done is missing",
              "before the worker recorded", "oom[-_]kill", "run folder missing",
              "the queue runner stopped", "cancelled before it started"]


@pytest.mark.parametrize("who", sorted(READERS))
def test_every_reader_imports_the_one_rule(who):
    tree = ast.parse(READERS[who].read_text())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert ("chester.target", "states") in imported, f"{who} does not import the rule"


@pytest.mark.parametrize("who", sorted(READERS))
def test_no_reader_writes_the_rules_reasons(who):
    """The reasons of the rule are built in one place: a copy of the rule in a reader
    would have to write them."""
    tree = ast.parse(READERS[who].read_text())
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
             and isinstance(n.value, str)]
    # docstrings may speak of the rule
    docs = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef)}
    found = [(w, t) for t in texts if t not in docs for w in RULE_WORDS if w in t]
    assert not found, f"{who} builds the rule's reasons itself: {found}"


def test_the_state_words_are_the_records_states():
    """The target side spells the states itself (it imports no attrs): the same words as
    :class:`chester.plugin.records.State`, less the launcher's own ``pending``."""
    from chester.plugin.records import State

    words = {v for k, v in vars(states).items() if k.isupper() and isinstance(v, str)
             and v in {s.value for s in State}}
    assert words == {s.value for s in State} - {"pending"}
