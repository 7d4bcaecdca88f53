"""Running the same launch again, as a researcher does: launch, see failures, fix the code,
run again. Real scripts in their own processes, the ``chester`` command, the local backend.

- ``chester.launch``/``chester launch``: unchanged variants and code reattach and nothing
  runs; changed code is a new launch ``PREFIX@N+1``; each said in one line.
- ``chester relaunch --failed`` runs the current code of an imported function (a function
  defined in the script: one line naming ``resume="retry-failed"``, which does).
- Dry runs take nothing; the seed API's fixed folders are taken over when run again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .helpers import make_project, run_chester

#: A script as in the issue: ``chester.launch(train, vg, exp_prefix="api-sweep")``, with a
#: bug that fails half the runs (``BUG``), waiting for its runs.
SCRIPT = textwrap.dedent("""
    import os, sys
    import chester
    from chester import VariantGenerator

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "ran.txt"), "a") as f:
            f.write("x\\n")
        if BUG and variant["seed"] % 2:
            raise ValueError("loss is NaN")

    BUG = True
    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.01])
    vg.add("seed", [1, 2])
    resume = sys.argv[1] if len(sys.argv) > 1 else "auto"
    sweep = chester.launch(train, vg, exp_prefix="api-sweep",
                           resume={"true": True, "false": False}.get(resume, resume))
    sweep.wait(poll_interval=0.2, progress=False, pull=False)
""")

#: The same, with ``train`` imported from a module of the project.
LIB = textwrap.dedent("""
    import os

    BUG = True

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "ran.txt"), "a") as f:
            f.write("x\\n")
        if BUG and variant["seed"] % 2:
            raise ValueError("loss is NaN")
""")
IMPORTING = textwrap.dedent("""
    import chester
    from trainlib import train

    sweep = chester.launch(train, [{"seed": s} for s in (1, 2, 3, 4)], exp_prefix="lib")
    sweep.wait(poll_interval=0.2, progress=False, pull=False)
""")


@pytest.fixture
def project(tmp_path, monkeypatch):
    p = make_project(tmp_path / "proj", "backends:\n  local:\n    type: local\n"
                                        "    max_parallel: 2\n")
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    return p


def _script(project: Path, name: str, *args: str, check: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CHESTER_CONFIG_PATH", None)
    r = subprocess.run([sys.executable, name, *args], cwd=project, capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == check, (r.stdout, r.stderr)
    return r


def _chester_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("chester: ")]


def _status(project: Path, ref: str) -> dict:
    r = run_chester(["status", "--json", ref], cwd=project)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait(project: Path, ref: str) -> dict:
    r = run_chester(["monitor", ref, "--interval", "0.2", "--timeout", "60"], cwd=project)
    assert r.returncode in (0, 1), r.stderr
    return _status(project, ref)


def _ran(project: Path, prefix: str) -> dict[str, int]:
    return {d.name: (d / "ran.txt").read_text().count("\n")
            for d in sorted((project / "data" / "train" / prefix).iterdir())
            if (d / "ran.txt").exists()}


def test_fixed_script_runs_again_as_a_new_launch_and_an_unchanged_one_runs_nothing(project):
    (project / "go.py").write_text(SCRIPT)
    first = _script(project, "go.py")
    assert _chester_lines(first.stderr) == []  # a first launch says nothing
    st = _status(project, "api-sweep@1")
    assert sorted(r["state"] for r in st["runs"]) == ["failed"] * 2 + ["succeeded"] * 2
    # the same script again, nothing changed: reattached, nothing runs, one line says what
    # is there and how to run its failures again (a function defined in the script)
    again = _script(project, "go.py")
    assert _chester_lines(again.stderr) == [
        "chester: api-sweep@1 already ran these variants with this code: nothing runs "
        "(4 runs: 2 failed, 2 succeeded); to run its failures again: run this script again "
        'with resume="retry-failed"'], again.stderr
    assert set(_ran(project, "api-sweep").values()) == {1} and len(_ran(project, "api-sweep")) == 4
    # the bug fixed: a new launch, with the fixed code, said in one line
    (project / "go.py").write_text(SCRIPT.replace("BUG = True", "BUG = False"))
    fixed = _script(project, "go.py")
    assert _chester_lines(fixed.stderr) == [
        "chester: api-sweep@2: a new launch, because the function changed since api-sweep@1 "
        "(which ran the same variants); changed: go.py"], fixed.stderr
    assert [r["state"] for r in _status(project, "api-sweep@2")["runs"]] == ["succeeded"] * 4
    # and once more, unchanged: nothing runs
    last = _script(project, "go.py")
    assert _chester_lines(last.stderr) == [
        "chester: api-sweep@2 already ran these variants with this code: nothing runs "
        "(4 runs: 4 succeeded); to run them anew: resume=False"], last.stderr
    assert len(_ran(project, "api-sweep")) == 8
    assert len(_status(project, "api-sweep")["sweep_ids"]) == 2


def test_a_changed_module_of_the_project_is_a_new_launch_too(project):
    (project / "trainlib.py").write_text(LIB)
    (project / "go.py").write_text(IMPORTING)
    _script(project, "go.py")
    again = _script(project, "go.py")
    assert "lib already ran" not in again.stderr
    assert _chester_lines(again.stderr)[0].startswith(
        "chester: lib@1 already ran these variants with this code: nothing runs")
    assert _chester_lines(again.stderr)[0].endswith("to run its failures again: "
                                                    "chester relaunch lib --failed")
    (project / "trainlib.py").write_text(LIB.replace("BUG = True", "BUG = False"))
    fixed = _script(project, "go.py")
    assert _chester_lines(fixed.stderr) == [
        "chester: lib@2: a new launch, because the project's files changed since lib@1 "
        "(which ran the same variants); changed: trainlib.py"], fixed.stderr
    # what the runs write (under data/) and files the sync rules leave out are no change
    (project / "notes.pyc").write_text("x")
    os.utime(project / "trainlib.py")  # touched, same content
    same = _script(project, "go.py")
    assert _chester_lines(same.stderr)[0].startswith("chester: lib@2 already ran"), same.stderr


#: A task that writes beside the code, as ML tools do (W&B's ``wandb/``, Hydra's
#: ``outputs/``), and into a folder the project's .gitignore names, and (``LOOSE``) a file
#: nothing names.
WRITER = textwrap.dedent("""
    import os

    LOOSE = False

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "ran.txt"), "a") as f:
            f.write("x\\n")
        for d in ("wandb/run-%d" % variant["seed"], "outputs/2026-12-07", "ckpt"):
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "log.txt"), "a") as f:
                f.write("step\\n")
        if LOOSE:
            with open("results-%d.csv" % variant["seed"], "a") as f:
                f.write("1,2\\n")
""")


def test_what_the_runs_write_into_the_project_is_no_change_of_code(project):
    """Runs whose code writes ``wandb/``, ``outputs/`` and a git-ignored folder into the
    project (the local backend runs in the project folder): the same script run again
    reattaches. A file the runs write that nothing leaves out is a change, and the new
    launch's line names it and where it belongs."""
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / ".gitignore").write_text("ckpt/\n")
    (project / "trainlib.py").write_text(WRITER)
    (project / "go.py").write_text(IMPORTING)
    _script(project, "go.py")
    assert (project / "wandb" / "run-1" / "log.txt").exists()
    assert (project / "ckpt" / "log.txt").read_text() == "step\n" * 4
    again = _script(project, "go.py")
    assert _chester_lines(again.stderr)[0].startswith(
        "chester: lib@1 already ran these variants with this code: nothing runs"), again.stderr
    assert (project / "ckpt" / "log.txt").read_text() == "step\n" * 4  # nothing ran
    (project / "trainlib.py").write_text(WRITER.replace("LOOSE = False", "LOOSE = True"))
    _script(project, "go.py")  # lib@2 writes results-<seed>.csv beside the code
    third = _script(project, "go.py")
    assert _chester_lines(third.stderr) == [
        "chester: lib@3: a new launch, because the project's files changed since lib@2 "
        "(which ran the same variants); new: results-1.csv, results-2.csv, results-3.csv and "
        "1 more (files the runs write belong in .gitignore or the backend's rsync_exclude)"
    ], third.stderr
    (project / ".gitignore").write_text("ckpt/\nresults-*.csv\n")
    fourth = _script(project, "go.py")
    assert _chester_lines(fourth.stderr)[0].startswith("chester: lib@4: a new launch"), \
        fourth.stderr  # .gitignore itself changed
    fifth = _script(project, "go.py")
    assert _chester_lines(fifth.stderr)[0].startswith(
        "chester: lib@4 already ran these variants with this code"), fifth.stderr


def test_relaunch_failed_runs_the_fixed_imported_function(project):
    (project / "trainlib.py").write_text(LIB)
    (project / "go.py").write_text(IMPORTING)
    _script(project, "go.py")
    st = _status(project, "lib")
    assert sorted(r["state"] for r in st["runs"]) == ["failed"] * 2 + ["succeeded"] * 2
    (project / "trainlib.py").write_text(LIB.replace("BUG = True", "BUG = False"))
    r = run_chester(["relaunch", "lib", "--failed"], cwd=project)
    assert r.returncode == 0, r.stderr
    assert "submitted 2 lost, failed, timed-out or out-of-memory runs again" in r.stdout
    st = _wait(project, "lib")
    assert [r["state"] for r in st["runs"]] == ["succeeded"] * 4, st
    assert sorted(r["attempt"] for r in st["runs"]) == [1, 1, 2, 2]
    table = run_chester(["status", "lib"], cwd=project).stdout  # (piped: tab-separated)
    assert sorted(line.split("\t")[5] for line in table.splitlines()[1:]) == ["1", "1", "2", "2"]
    for run in st["runs"]:  # the earlier attempt's logs stay beside the new ones
        d = Path(run["log_dir"])
        if run["attempt"] == 2:
            assert "loss is NaN" in (d / "stderr.1.log").read_text()
            assert "loss is NaN" not in (d / "stderr.log").read_text()
            assert (d / "ran.txt").read_text() == "x\nx\n"
        else:
            assert not (d / "stderr.1.log").exists()


def test_relaunch_of_a_script_function_after_a_change_names_the_way_that_works(project):
    (project / "go.py").write_text(SCRIPT)
    _script(project, "go.py")
    (project / "go.py").write_text(SCRIPT.replace("BUG = True", "BUG = False"))
    r = run_chester(["relaunch", "api-sweep", "--failed"], cwd=project)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert ('runs a function defined in its launching script' in r.stderr
            and "resume='retry-failed'" in r.stderr and "go.py" in r.stderr), r.stderr
    # the way it names: the script again with resume="retry-failed" runs the current code
    retried = _script(project, "go.py", "retry-failed")
    assert _chester_lines(retried.stderr) == [
        "chester: api-sweep@1: 2 runs submitted again, with the code as it is now"]
    st = _status(project, "api-sweep")
    assert [r["state"] for r in st["runs"]] == ["succeeded"] * 4 and st["sweep_ids"] == [1]


def test_chester_launch_twice_runs_once_and_new_launches_again(project):
    (project / "train.py").write_text("import sys\nprint(sys.argv[1:])\n")
    args = ["launch", "--wait", "-p", "cli", "--", "python", "train.py", "lr=1,2", "seed=3"]
    first = run_chester(args, cwd=project)
    assert first.returncode == 0 and "launched sweep 'cli': 2 runs" in first.stdout, first
    second = run_chester(args, cwd=project)
    assert second.returncode == 0, second.stderr
    assert "launched" not in second.stdout
    assert second.stdout.splitlines()[0] == (
        "cli@1 already ran these variants with this code: nothing runs (2 runs: 2 succeeded); "
        "to run them anew: chester launch --new ..."), second.stdout
    assert len(list((project / "data" / "train" / "cli").iterdir())) == 2
    (project / "train.py").write_text("import sys\nprint('v2', sys.argv[1:])\n")
    changed = run_chester(args, cwd=project)
    assert changed.stdout.splitlines()[0] == (
        "cli@2: a new launch, because the project's files changed since cli@1 (which ran the "
        "same variants); changed: train.py"), changed.stdout
    forced = run_chester([*args[:1], "--new", *args[1:]], cwd=project)
    assert "launched sweep 'cli': 2 runs" in forced.stdout, forced.stdout
    assert "cli@3: a new launch (--new; cli@2 ran the same variants)" in forced.stdout
    assert len(list((project / "data" / "train" / "cli").iterdir())) == 6


def test_dry_runs_take_nothing_and_never_block_each_other_or_a_launch(project):
    import chester
    from chester.config import load_config
    from chester.target.testing_functions import fn_write_result as noop

    cfg = load_config(project / "chester.yaml")

    for _ in range(2):
        dry = chester.launch(noop, [{"i": i} for i in range(3)], exp_prefix="dry",
                             exp_names=["a", "b", "c"], config=cfg, dry_run=True)
        assert [r.name for r in dry.runs] == ["a", "b", "c"]
        assert not (project / "data").exists() and not (project / ".chester" / "jobs.db").exists()
    big = chester.launch(noop, [{"i": i} for i in range(2000)], exp_prefix="big",
                         config=cfg, dry_run=True)
    assert len(big.runs) == 2000 and not (project / "data").exists()
    real = chester.launch(noop, [{"i": i} for i in range(3)], exp_prefix="dry",
                          exp_names=["a", "b", "c"], config=cfg)
    assert real.wait(timeout=60, poll_interval=0.2, progress=False) == {
        "a": chester.State.SUCCEEDED, "b": chester.State.SUCCEEDED, "c": chester.State.SUCCEEDED}
    # a dry run after it shows what running it again would do, and still takes nothing
    after = chester.launch(noop, [{"i": i} for i in range(3)], exp_prefix="dry",
                           exp_names=["a", "b", "c"], config=cfg, dry_run=True)
    assert after.runs == [] and after.notice is not None
    assert after.notice.startswith("dry run: dry@1 already ran these variants")
    from chester.store import Store

    assert len(Store(cfg.store_path).sweeps()) == 1


MNIST = textwrap.dedent('''
    """As upstream chester's examples/launch_mnist.py: fixed exp_name and log_dir."""
    import argparse, os, sys
    from chester import config
    from chester.run_exp import VariantGenerator, run_experiment_lite

    def run_training(variant, log_dir, exp_name):
        import time
        time.sleep(variant.get("sleep", 0))
        with open(os.path.join(log_dir, "trained.txt"), "a") as f:
            f.write(exp_name + "\\n")

    p = argparse.ArgumentParser()
    p.add_argument("--dry", action="store_true")
    p.add_argument("--grid", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sleep", type=float, default=0)
    p.add_argument("--no-wait", action="store_true")
    args = p.parse_args()
    vg = VariantGenerator()
    vg.add("model", ["mlp", "cnn"] if args.grid else ["mlp"])
    vg.add("hidden_dim", [128, 256] if args.grid else [128])
    vg.add("learning_rate", [0.001])
    vg.add("sleep", [args.sleep])
    for variant in vg.variants():
        exp_name = f"mnist_{variant['model']}_lr{variant['learning_rate']}_h{variant['hidden_dim']}"
        log_dir = os.path.join(config.LOG_DIR, "mnist_test", exp_name)
        run_experiment_lite(stub_method_call=run_training, variant=variant, mode="local",
                            exp_prefix="mnist_test", exp_name=exp_name, log_dir=log_dir,
                            dry=args.dry, wait_subprocess=not args.no_wait)
    print("DRY" if args.dry else "LAUNCHED")
''')


def test_a_seed_script_with_fixed_folders_runs_again_and_its_dry_runs_take_nothing(project):
    (project / "launch_mnist.py").write_text(MNIST)
    for flags in (["--quick", "--dry"], ["--grid", "--dry"]):
        r = _script(project, "launch_mnist.py", *flags)  # (dry runs print as the script ends)
        assert "DRY" in r.stdout and "runs on this machine" in r.stdout, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
    assert not (project / "data").exists()
    assert not (project / ".chester" / "jobs.db").exists()
    first = _script(project, "launch_mnist.py", "--quick")
    assert _chester_lines(first.stderr) == []
    folder = project / "data" / "mnist_test" / "mnist_mlp_lr0.001_h128"
    assert (folder / "trained.txt").read_text() == "mnist_mlp_lr0.001_h128\n"
    second = _script(project, "launch_mnist.py", "--quick")  # nothing changed: runs again
    assert _chester_lines(second.stderr) == [
        "chester: mnist_test@2: a new launch (a run_experiment_lite script launches anew each "
        "time it runs; mnist_test@1 ran the same variants), taking over 1 run folder of "
        "mnist_test@1 (those runs keep their record, marked 'folder reused by mnist_test@2')"]
    assert (folder / "trained.txt").read_text() == "mnist_mlp_lr0.001_h128\n" * 2
    assert (folder / ".done").exists()
    # the grid's dry run and the grid itself, whose folders include the quick one
    _script(project, "launch_mnist.py", "--grid", "--dry")
    grid = _script(project, "launch_mnist.py", "--grid")
    assert len(_chester_lines(grid.stderr)) == 1
    st = json.loads(run_chester(["status", "--json", "--all", "mnist_test"], cwd=project).stdout)
    by_launch = {s["sweep_id"]: s["runs"] for s in st}
    assert [r["reused_by"] for r in by_launch[1]] == ["mnist_test@2"]
    assert [r["reused_by"] for r in by_launch[2]] == ["mnist_test@3"]
    assert all(r["state"] == "succeeded" for runs in by_launch.values() for r in runs)
    table = run_chester(["status", "mnist_test@1"], cwd=project).stdout
    assert "folder reused by mnist_test@2" in table


def test_a_fixed_folder_whose_run_is_still_going_is_refused_in_one_line(project):
    (project / "launch_mnist.py").write_text(MNIST)
    _script(project, "launch_mnist.py", "--quick", "--sleep", "30", "--no-wait")
    folder = project / "data" / "mnist_test" / "mnist_mlp_lr0.001_h128"
    deadline = time.monotonic() + 30
    while _status(project, "mnist_test")["runs"][0]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    try:
        r = _script(project, "launch_mnist.py", "--quick", check=1)
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"chester: error: the run folder {folder} belongs to run "
                                   "'mnist_mlp_lr0.001_h128' of mnist_test@1, which is still "
                                   "running"), r.stderr
        assert len(_status(project, "mnist_test")["sweep_ids"]) == 1
    finally:
        run_chester(["cancel", "mnist_test"], cwd=project)


GL_CONFIG = """
backends:
  gl:
    type: gl
    host: gl
    remote_dir: /home/user/my_project
"""


def test_a_dry_run_shows_the_scripts_when_only_the_submit_needs_a_missing_option(project):
    """gl's ``account`` is missing (as in upstream's example config): the dry run renders
    and warns, naming it; the real launch refuses in one line, leaving nothing."""
    (project / "chester.yaml").write_text(GL_CONFIG)
    (project / "train.py").write_text("print('hi')\n")
    dry = run_chester(["launch", "-b", "gl", "--dry-run", "--", "python", "train.py",
                       "lr=1,2"], cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH" in dry.stdout and "dry run: sweep 'train', 2 runs" in dry.stdout
    assert dry.stderr.startswith("warning: gl backend 'gl': account is required on this "
                                 "cluster; set backends.gl.account in chester.yaml"), dry.stderr
    real = run_chester(["launch", "-b", "gl", "--", "python", "train.py", "lr=1,2"],
                       cwd=project)
    assert real.returncode == 2 and real.stderr.count("\n") == 1, real.stderr
    assert "account is required" in real.stderr
    assert not (project / "data").exists()
    assert "no sweep" in run_chester(["status"], cwd=project).stderr


HELPERS = textwrap.dedent("""
    import os

    BUG = True

    def train(variant, log_dir, exp_name):
        if BUG and variant["i"] == 1:
            raise ValueError("bad step")
        open(os.path.join(log_dir, "ok"), "w").close()
""")


def test_relaunch_imports_a_module_beside_a_script_in_a_subfolder_afresh(project):
    """``scripts/helpers.py`` imported as ``helpers`` travels by value (the target cannot
    import it by name): relaunch imports its current code here and pickles it again."""
    (project / "scripts").mkdir()
    (project / "scripts" / "helpers.py").write_text(HELPERS)
    (project / "scripts" / "go.py").write_text(textwrap.dedent("""
        import chester
        from helpers import train
        s = chester.launch(train, [{"i": 0}, {"i": 1}], exp_prefix="beside")
        s.wait(poll_interval=0.2, progress=False, pull=False)
    """))
    _script(project, "scripts/go.py")
    assert sorted(r["state"] for r in _status(project, "beside")["runs"]) == ["failed",
                                                                             "succeeded"]
    (project / "scripts" / "helpers.py").write_text(HELPERS.replace("BUG = True", "BUG = False"))
    r = run_chester(["relaunch", "beside", "--failed"], cwd=project)
    assert r.returncode == 0, r.stderr
    assert [x["state"] for x in _wait(project, "beside")["runs"]] == ["succeeded"] * 2


CRASHING = textwrap.dedent("""
    import os, sys
    from chester import store
    from chester.run_exp import VariantGenerator, run_experiment_lite

    if os.environ.get("CRASH_AFTER_SUBMIT"):  # dies between the submit and its record
        def crash(self, handles):
            os._exit(9)
        store.Store.record_submitted = crash

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "ran.txt"), "a") as f:
            f.write("x\\n")

    vg = VariantGenerator()
    vg.add("i", [0, 1, 2])
    for v in vg.variants():
        run_experiment_lite(stub_method_call=train, variant=v, variations=vg.variations(),
                            exp_prefix="crashy", mode="local", wait_subprocess=False)
""")


def test_a_seed_loop_killed_while_submitting_is_completed_never_duplicated(project):
    (project / "seed.py").write_text(CRASHING)
    env = dict(os.environ)
    env.pop("CHESTER_CONFIG_PATH", None)
    r = subprocess.run([sys.executable, "seed.py"], cwd=project, capture_output=True,
                       text=True, timeout=120, env={**env, "CRASH_AFTER_SUBMIT": "1"})
    assert r.returncode == 9, r.stderr
    again = _script(project, "seed.py")  # completes the launch that stopped
    assert _chester_lines(again.stderr) == [
        "chester: crashy@1 stopped while submitting: completing it (3 of 3 runs submitted "
        "now)"], again.stderr
    st = _wait(project, "crashy")
    assert [x["state"] for x in st["runs"]] == ["succeeded"] * 3 and st["sweep_ids"] == [1]
    assert list(_ran(project, "crashy").values()) == [1, 1, 1]
    # run once more, completed: the seed's rule, a new launch
    _script(project, "seed.py")
    assert len(_wait(project, "crashy")["runs"]) == 6
    assert list(_ran(project, "crashy").values()) == [1] * 6


def test_resume_takes_todays_values_as_a_mode():
    from chester import Resume
    from chester.errors import UserError

    assert [Resume.of(v) for v in (True, False, "auto", "incomplete", "retry", "retry-failed")
            ] == [Resume.VARIANTS, Resume.NEW, Resume.AUTO, Resume.INCOMPLETE, Resume.RETRY,
                  Resume.RETRY_FAILED]
    assert Resume.of(Resume.RETRY) is Resume.RETRY
    for bad in (1, 0, "yes", None):
        with pytest.raises(UserError, match="resume must be"):
            Resume.of(bad)


DIGEST = textwrap.dedent("""
    import sys
    from pathlib import Path
    from chester.config import load_config
    from chester.launcher.identity import function_digest, project_digest
    from helpers_mod import train

    def local(variant, log_dir, exp_name):
        return [1, {"a": 2}]

    cfg = load_config(Path(sys.argv[1]))
    print(project_digest(cfg.backend("local")), function_digest(train).hex(),
          function_digest(local).hex(), function_digest(lambda v, d, n: v).hex())
""")


def test_what_runs_is_the_same_in_every_process_for_unchanged_code(project):
    (project / "helpers_mod.py").write_text("def train(v, d, n):\n    return 1\n")
    (project / "digest.py").write_text(DIGEST)
    old = time.time() - 60  # files changed a moment ago are hashed again (not memoized)
    for f in ("helpers_mod.py", "digest.py", "chester.yaml"):
        os.utime(project / f, (old, old))
    outs = set()
    for seed in ("1", "2", "random"):
        r = subprocess.run([sys.executable, "digest.py", str(project / "chester.yaml")],
                           cwd=project, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1, outs
    memo = json.loads((project / ".chester" / "code-memo.json").read_text())["files"]
    assert "helpers_mod.py" in memo and "chester.yaml" in memo
    # a change of content is a change; a file the sync rules leave out is not
    (project / "chester.yaml").write_text((project / "chester.yaml").read_text()
                                          + "rsync_exclude: ['scratch/']\n")
    (project / "scratch").mkdir()
    r1 = subprocess.run([sys.executable, "digest.py", str(project / "chester.yaml")],
                        cwd=project, capture_output=True, text=True, timeout=60)
    (project / "scratch" / "big.bin").write_bytes(b"0" * 1000)
    r2 = subprocess.run([sys.executable, "digest.py", str(project / "chester.yaml")],
                        cwd=project, capture_output=True, text=True, timeout=60)
    assert r1.stdout.split()[0] == r2.stdout.split()[0] != outs.pop().split()[0]
