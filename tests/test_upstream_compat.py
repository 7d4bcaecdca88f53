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
import textwrap

import pytest
from chester_testinfra.helpers import run_chester

from chester.launcher import launch
from chester.store import Store
from chester.testing import fn_write_result
from chester.variants import VariantGenerator

MARKERS = ("chester_first_variant", "chester_last_variant")


@pytest.fixture
def env(local_env):
    return local_env


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


# -- upstream's examples and tests, on the local backend -------------------------------------
def _project(tmp_path, files: dict[str, str], config: str | None = None):
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".git").mkdir()
    if config is not None:
        (project / "chester.yaml").write_text(config)
    for name, text in files.items():
        (project / name).write_text(textwrap.dedent(text))
    return project


def _run(project, *argv, env=None):
    e = {k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"}
    r = subprocess.run([sys.executable, *argv], cwd=project, capture_output=True, text=True,
                       timeout=120, env={**e, **(env or {})})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r


#: a task as the seed's tests/train_mnist.py writes one (chester.logger, the variant's
#: hyperparameters with .get, a checkpoint in log_dir), without torch and MNIST
TRAIN = '''
    import os

    def run_training(variant, log_dir, exp_name):
        from chester import logger
        model_type = variant.get('model', 'mlp')
        epochs = variant.get('epochs', 5)
        logger.configure(dir=log_dir, format_strs=['csv', 'stdout'])
        logger.log(f"Starting experiment: {exp_name}")
        logger.log(f"Model: {model_type}, LR: {variant.get('learning_rate')}")
        for epoch in range(1, epochs + 1):
            logger.logkv('epoch', epoch)
            logger.logkv('train_loss', round(1.0 / epoch, 4))
            logger.logkv('test_acc', round(0.5 + epoch / 10, 4))
            logger.dumpkvs()
        with open(os.path.join(log_dir, 'best_model.pt'), 'w') as f:
            f.write('weights')
        logger.log("Training complete!")
        logger.reset()
        return {'best_acc': 0.7}
'''

#: the seed's tests/launch_mnist.py main loop for --mode local (config attributes, a fixed
#: exp_name and log_dir under config.LOG_DIR, the seed's flags)
LAUNCH_MNIST = '''
    import os, sys
    from chester.run_exp import run_experiment_lite, VariantGenerator
    from chester import config
    from train_mnist import run_training

    config_path = config.get_config_path()
    if config_path is None:
        sys.exit("ERROR: chester.yaml not found!")
    print(f"Using config: {config_path}")
    print(f"Project root: {config.PROJECT_PATH}")
    # the seed's tests/test_local.py test_config_loading
    assert isinstance(config.PROJECT_PATH, str) and isinstance(config.LOG_DIR, str)
    assert isinstance(config.HOST_ADDRESS, dict) and 'local' in config.HOST_ADDRESS
    vg = VariantGenerator()
    vg.add('model', ['mlp', 'cnn'] if '--grid' in sys.argv else ['mlp'])
    vg.add('hidden_dim', [128])
    vg.add('learning_rate', [0.001])
    vg.add('batch_size', [64])
    vg.add('epochs', [2])
    variants = vg.variants()
    for i, variant in enumerate(variants):
        exp_name = f"mnist_{variant.get('model')}_lr{variant.get('learning_rate')}_h{variant.get('hidden_dim')}"
        log_dir = os.path.join(config.LOG_DIR, 'mnist_test', exp_name)
        run_experiment_lite(stub_method_call=run_training, variant=variant, mode='local',
                            exp_prefix='mnist_test', exp_name=exp_name, log_dir=log_dir,
                            use_gpu=False, dry=False, auto_pull=False, auto_pull_interval=30)
    print(f"Launched {len(variants)} experiment(s).")
'''


def test_the_seeds_mnist_launcher_and_task_on_the_local_backend(tmp_path):
    """Its tests/launch_mnist.py --mode local (--grid) with tests/train_mnist.py's use of
    chester.config and chester.logger; its tests/chester.yaml.example's keys as config."""
    project = _project(tmp_path, {"train_mnist.py": TRAIN, "launch_mnist.py": LAUNCH_MNIST},
                       config="log_dir: data\npackage_manager: uv\nsync_on_launch: true\n"
                              "host_address: {local: '', gl: gl}\nssh_hosts: []\n"
                              "remote_dir: {local: /home/u/code/chester}\n"
                              "remote_log_dir: {local: /home/u/code/chester/data}\n")
    r = _run(project, "launch_mnist.py", "--grid")
    assert f"Using config: {project / 'chester.yaml'}" in r.stdout
    assert "Launched 2 experiment(s)." in r.stdout
    for model in ("mlp", "cnn"):
        run = project / "data" / "mnist_test" / f"mnist_{model}_lr0.001_h128"
        assert (run / ".done").exists(), sorted(p.name for p in run.iterdir())
        assert (run / "progress.csv").read_text() == \
            "epoch,train_loss,test_acc\n1,1.0,0.6\n2,0.5,0.7\n"
        out = (run / "stdout.log").read_text()
        assert f"Starting experiment: {run.name}" in out and "Training complete!" in out
        assert json.loads((run / "variant.json").read_text())["model"] == model


EXTRA_TASK = '''
    import json, os, time

    def run_test_task(variant, log_dir, exp_name):
        extra_dir = variant.get('extra_dir', None)
        log_data = {'exp_name': exp_name, 'variant': variant, 'status': 'started'}
        os.makedirs(log_dir, exist_ok=True)
        os.makedirs(extra_dir, exist_ok=True)
        with open(os.path.join(extra_dir, f'{exp_name}_dataset.json'), 'w') as f:
            json.dump({'exp_name': exp_name, 'data': [i * 2 for i in range(10)]}, f)
        time.sleep(variant.get('wait_seconds', 60))
        log_data['status'] = 'completed'
        with open(os.path.join(log_dir, 'test_output.json'), 'w') as f:
            json.dump(log_data, f, indent=2)
'''

LAUNCH_EXTRA = '''
    import os, sys
    from datetime import datetime
    from chester.run_exp import run_experiment_lite, VariantGenerator
    from chester import config
    from test_extra_pull import run_test_task

    exp_name = f"test_extra_pull_{datetime.now().strftime('%m%d_%H%M%S')}"
    vg = VariantGenerator()
    vg.add('wait_seconds', [1])
    vg.add('extra_dir', [os.path.join(config.PROJECT_PATH, 'data/generated_data')])
    for variant in vg.variants():  # "using VariantGenerator to set first/last variant flags"
        print("MARKED", variant.get('chester_first_variant'), variant.get('chester_last_variant'))
        run_experiment_lite(stub_method_call=run_test_task, variant=variant, mode='local',
                            exp_prefix='test_extra_pull', exp_name=exp_name, dry=False,
                            auto_pull=False, auto_pull_interval=15,
                            extra_pull_dirs=['data/generated_data'])
    print("EXP", exp_name)
'''


def test_the_seeds_extra_pull_launcher_on_the_local_backend(tmp_path):
    """Its tests/launch_test_extra_pull.py --mode local with tests/test_extra_pull.py: the
    task sees the variant without the markers (run_experiment_lite takes them out, as the
    seed did), and writes into the extra folder."""
    project = _project(tmp_path, {"test_extra_pull.py": EXTRA_TASK,
                                  "launch_test_extra_pull.py": LAUNCH_EXTRA}, config="")
    r = _run(project, "launch_test_extra_pull.py")
    assert "MARKED True True" in r.stdout  # the flags the seed's launcher relies on
    exp = r.stdout.split("EXP ")[1].strip()
    out = json.loads((project / "data" / "train" / "test_extra_pull" / exp /
                      "test_output.json").read_text())
    assert out["status"] == "completed"
    assert out["variant"] == {"wait_seconds": 1,
                              "extra_dir": str(project / "data" / "generated_data")}
    assert (project / "data" / "generated_data" / f"{exp}_dataset.json").exists()


LAUNCH_EXAMPLE = '''
    from chester.run_exp import run_experiment_lite, VariantGenerator

    def run_task(variant, log_dir, exp_name):
        print(f"Running {exp_name} in {log_dir}")
        print(f"  learning_rate={variant['learning_rate']}")
        print(f"  batch_size={variant['batch_size']}")

    vg = VariantGenerator()
    vg.add('learning_rate', [0.001, 0.01])
    vg.add('batch_size', [32, 64])
    for v in vg.variants():
        run_experiment_lite(stub_method_call=run_task, variant=v, mode='local',
                            exp_prefix='my_experiment')
'''


def test_upstreams_launch_example_without_a_config(tmp_path):
    """2.0's examples/chester/launch_example.py in a project with no chester.yaml: four
    runs named as the seed named them without ``variations``."""
    project = _project(tmp_path, {"launch_example.py": LAUNCH_EXAMPLE})
    _run(project, "launch_example.py")
    runs = sorted((project / "data" / "train" / "my_experiment").iterdir())
    assert [r.name for r in runs] == [f"{i}_my_experiment" for i in range(1, 5)]
    got = [(r / "stdout.log").read_text().splitlines()[1:] for r in runs]
    assert got == [[f"  learning_rate={lr}", f"  batch_size={bs}"]
                   for lr in (0.001, 0.01) for bs in (32, 64)]


#: 2.0's examples/chester/.chester/config.yaml, its keys as written there (its remote
#: backends' hosts are the author's own; its local backend's prepare script uses direnv,
#: left out here)
CONFIG_2_0 = """\
log_dir: data
package_manager: uv
hydra_config_path: configs
rsync_exclude:
  - outputs/
  - data
  - wandb
  - "*.mp4"
  - .venv
backends:
  local:
    type: local
  gl:
    type: slurm
    host: gl
    remote_dir: /home/houhd/code/cotrain_dynamics
    modules: [singularity]
    cuda_module: cuda/12.8.1
    slurm:
      partition: spgpu
      time: "72:00:00"
      nodes: 1
      gpus: 1
      cpus_per_gpu: 8
      mem_per_gpu: 64G
    singularity:
      image: /home/houhd/code/cotrain_dynamics/.containers/full-latest.sif
      mounts: [/usr/share/glvnd]
      gpu: true
  armdual:
    type: ssh
    host: armdual
    remote_dir: /home/houhd/code/cotrain_dynamics
"""


def test_upstreams_launch_example_with_its_chester_config_yaml(tmp_path):
    """2.0 keeps its config in ``.chester/config.yaml`` at the project's root: found there
    from the project and from a subfolder, with the folder holding ``.chester`` as the
    project (runs under its ``data/``); ``chester config`` says where it came from."""
    project = _project(tmp_path, {"launch_example.py": LAUNCH_EXAMPLE})
    (project / ".chester").mkdir()
    (project / ".chester" / "config.yaml").write_text(CONFIG_2_0)
    (project / "sub").mkdir()
    (project / "sub" / "launch_example.py").write_text(textwrap.dedent(LAUNCH_EXAMPLE).replace(
        "my_experiment", "from_sub"))
    _run(project, "launch_example.py")
    _run(project / "sub", "launch_example.py")
    for prefix in ("my_experiment", "from_sub"):
        runs = sorted((project / "data" / "train" / prefix).iterdir())
        assert [r.name for r in runs] == [f"{i}_{prefix}" for i in range(1, 5)]
        assert all((r / "stdout.log").read_text().startswith("Running ") for r in runs)
    assert not (project / ".chester" / "data").exists() and not (project / "sub" / "data").exists()
    shown = run_chester(["config"], cwd=project / "sub")
    assert shown.returncode == 0, shown.stderr
    assert str(project / ".chester" / "config.yaml") in shown.stdout, shown.stdout
    assert "armdual" in shown.stdout and "gl" in shown.stdout


def test_chester_2_backend_blocks_are_this_chesters_options(tmp_path):
    """2.0's per-backend ``slurm:`` and ``singularity:`` blocks and ``prepare:`` read as the
    options they mean; its unknown ``slurm:`` keys and ``extras`` are #SBATCH lines as 2.0
    wrote them; a 2.0 key this chester cannot honour is one line naming file, key and fix."""
    from chester.config import ConfigError, load_config

    text = CONFIG_2_0.replace("      mem_per_gpu: 64G\n", "      mem_per_gpu: 64G\n"
                              "      email_end: me@example.org\n      exclusive: true\n"
                              "      extras: {gpu_cmode: shared, requeue: false}\n"
                              ).replace("    host: armdual\n", "    host: armdual\n"
                                        "    prepare: .chester/backends/ssh-server/prepare.sh\n")
    conf = tmp_path / ".chester" / "config.yaml"
    conf.parent.mkdir()
    conf.write_text(text)
    cfg = load_config(conf)
    assert cfg.project_path == tmp_path
    gl = cfg.backend("gl").options
    assert (gl.partition, gl.time, gl.nodes, gl.gpus, gl.cpus_per_gpu, gl.mem_per_gpu) == (
        "spgpu", "72:00:00", 1, 1, 8, "64G")
    assert (gl.mail_user, gl.mail_type) == ("me@example.org", "END,FAIL")
    assert gl.sbatch == ("--exclusive", "--gpu_cmode=shared")
    assert gl.modules == ("singularity",) and gl.cuda_module == "cuda/12.8.1"
    c = gl.container
    assert (c.image, c.binds, c.nv, c.options) == (
        "/home/houhd/code/cotrain_dynamics/.containers/full-latest.sif", ("/usr/share/glvnd",),
        True, ("--fakeroot",))
    assert cfg.backend("armdual").options.prepare_script == \
        ".chester/backends/ssh-server/prepare.sh"
    conf.write_text(CONFIG_2_0.replace("      gpu: true\n", "      gpu: true\n"
                                       "      build_script: build.sh\n"))
    with pytest.raises(ConfigError) as e:
        load_config(conf).backend("gl")
    assert "backends.gl.singularity.build_script" in str(e.value) and str(conf) in str(e.value)
    assert "\n" not in str(e.value)


def test_upstreams_run_exp_tests_public_calls(tmp_path, monkeypatch):
    """2.0's tests/test_run_exp.py on the public API: the markers, a local dry run of a
    variant carrying both markers with a config of its .chester/config.yaml shape and a
    parameter this chester does not have (git_snapshot, warned and ignored), the None
    defaults, and VariantGenerator.derive."""
    import inspect

    from chester.run_exp import VariantGenerator as VG
    from chester.run_exp import run_experiment_lite

    chester_dir = tmp_path / ".chester"
    chester_dir.mkdir()
    (chester_dir / "config.yaml").write_text("log_dir: data\npackage_manager: python\n"
                                             "backends:\n  local:\n    type: local\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHESTER_CONFIG_PATH", str(chester_dir / "config.yaml"))
    from chester.config import reload_config

    reload_config()
    try:
        with pytest.warns(UserWarning, match="git_snapshot= is ignored"):
            run_experiment_lite(stub_method_call=lambda v, log_dir, e: None,
                                variant={"chester_first_variant": True,
                                         "chester_last_variant": True},
                                mode="local", exp_prefix="test", dry=True, git_snapshot=False)
    finally:
        monkeypatch.delenv("CHESTER_CONFIG_PATH")
        reload_config()
    sig = inspect.signature(run_experiment_lite)
    assert sig.parameters["env"].default is None
    assert sig.parameters["variations"].default is None
    vg = VG()
    vg.add("experiment.training.env.num_train_sim", [127, 1])
    vg.derive("experiment.training.env.num_train_real",
              lambda v: 128 - v["experiment.training.env.num_train_sim"])
    vg.derive("sim_scale", lambda v: 2.0 if v["experiment.training.env.num_train_sim"] >
              v["experiment.training.env.num_train_real"] else 1.0)
    vs = vg.variants()
    assert [(v["experiment.training.env.num_train_real"], v["sim_scale"]) for v in vs] == \
        [(1, 2.0), (127, 1.0)]
    assert vg.variations() == ["experiment.training.env.num_train_sim"]
    assert vs[0]["chester_first_variant"] and vs[-1]["chester_last_variant"]
