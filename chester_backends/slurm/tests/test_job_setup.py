"""A job whose environment is wrong stops at once and says why, on the real test SLURM: a
module that does not load is the run's reason by name, a ``uv`` project without its
``.venv`` stops the launch before any ``sbatch``, and inside a container the activated
environment's Python is the one that runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chester.errors import BackendError
from chester.launcher import launch
from chester.testing import ConformanceEnv, fn_write_result
from chester.types import State

WAIT = 150


def test_a_module_that_does_not_load_is_the_runs_reason(tmp_path, slurm_local, make_config):
    env = ConformanceEnv.create(tmp_path, backend="slurm",
                                config=make_config(modules=["nosuchmodule/1.0"]))
    sweep = launch(fn_write_result, [{"i": 1}], backend="slurm", exp_prefix="mod",
                   config=env.config)
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
    run = sweep.runs[0]
    assert states[run.name] == State.FAILED
    assert "module load nosuchmodule/1.0 failed" in (run.reason or ""), run.reason
    assert not (run.log_dir / ".chester" / "status.json").exists()  # the worker never ran


def test_a_failing_prepare_command_is_named(tmp_path, slurm_local, make_config):
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        prepare_commands=["test -d /no/such/dataset"]))
    sweep = launch(fn_write_result, [{"i": 1}], backend="slurm", exp_prefix="prep",
                   config=env.config)
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
    run = sweep.runs[0]
    assert states[run.name] == State.FAILED
    assert "job setup failed" in (run.reason or "") and "/no/such/dataset" in run.reason


def test_uv_without_a_venv_stops_before_sbatch(tmp_path, slurm_local, make_config):
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        package_manager="uv"))
    with pytest.raises(BackendError, match=r"\.venv is missing") as exc:
        launch(fn_write_result, [{"i": 1}], backend="slurm", exp_prefix="nouv",
               config=env.config)
    assert "\n" not in str(exc.value)


def test_in_a_container_the_activated_environment_runs(tmp_path, slurm_local, make_config):
    """Apptainer replaces the host's PATH with the image's and prepends
    ``APPTAINERENV_PREPEND_PATH``; a stand-in does the same (it cannot be installed here)
    and runs the command on the host. The worker's ``python3`` is the environment's."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python3")
    image_bin = tmp_path / "image-bin"  # the image's PATH: a python3 that refuses to run
    image_bin.mkdir()
    (image_bin / "python3").write_text("#!/bin/sh\necho 'the image python ran' >&2; exit 9\n")
    (image_bin / "python3").chmod(0o755)
    shim = tmp_path / "bin" / "apptainer"
    shim.parent.mkdir()
    shim.write_text(f"""#!/bin/sh
shift
while [ $# -gt 0 ]; do case "$1" in -B|--bind) shift 2 ;; -*) shift ;; *) break ;; esac; done
shift
PATH="${{APPTAINERENV_PREPEND_PATH:+$APPTAINERENV_PREPEND_PATH:}}{image_bin}:/usr/bin:/bin"
export PATH
exec "$@"
""")
    shim.chmod(0o755)
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        python="python3", container={"image": "/images/x.sif", "runtime": str(shim)},
        env={"VIRTUAL_ENV": str(venv)}))
    sweep = launch(fn_which_python, [{"i": 1}], backend="slurm", exp_prefix="ctrpy",
                   config=env.config)
    states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
    run = sweep.runs[0]
    assert states[run.name] == State.SUCCEEDED, (run.reason, run.stderr_tail)
    got = json.loads((run.log_dir / "python.json").read_text())
    assert got["prefix_bin"] == str(venv / "bin")


def fn_which_python(variant, log_dir, exp_name):
    import json as _json
    import os as _os
    import shutil as _shutil

    with open(_os.path.join(log_dir, "python.json"), "w") as f:
        _json.dump({"prefix_bin": _os.path.dirname(_shutil.which("python3") or "")}, f)


def test_a_module_that_does_not_load_on_the_login_host_stops_before_sbatch(
        tmp_path, slurm_local, make_config, monkeypatch):
    """The test cluster has no module system: a ``module`` command stands in for Lmod (it
    knows only ``gcc/11``). The launch stops before any ``sbatch`` with one line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "module").write_text('#!/bin/sh\n[ "$1" = load ] && [ "$2" = gcc/11 ]\n')
    (bin_dir / "module").chmod(0o755)
    log = tmp_path / "sbatch.log"
    real = subprocess.run(["bash", "-c", "command -v sbatch"], capture_output=True,
                          text=True).stdout.strip()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        modules=["gcc/11", "nosuchmodule/1.0"]))
    with pytest.raises(BackendError, match=r"module load nosuchmodule/1\.0 failed") as exc:
        launch(fn_write_result, [{"i": 1}], backend="slurm", exp_prefix="modlogin",
               config=env.config)
    assert "\n" not in str(exc.value) and "module avail" in str(exc.value)
    assert not log.exists()  # nothing was submitted


def _logged_sbatch(bin_dir, log) -> None:
    real = subprocess.run(["bash", "-c", "command -v sbatch"], capture_output=True,
                          text=True).stdout.strip()
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    (bin_dir / "sbatch").chmod(0o755)


def test_the_login_host_check_runs_in_the_container_and_stops_before_sbatch(
        tmp_path, slurm_local, make_config, monkeypatch):
    """With a container, the check before the first ``sbatch`` runs the jobs' Python the
    way the jobs do: through the container runtime (a stand-in for apptainer), with the
    image and the jobs' binds. A Python the image does not have is one line naming the
    cluster, the command and the fix; nothing is submitted."""
    from chester.testing import container_calls, container_stand_in

    shim, calls = container_stand_in(tmp_path / "ctr")
    log = tmp_path / "sbatch.log"
    _logged_sbatch(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        container={"image": "/images/train.sif", "runtime": str(shim)},
        python="/opt/nowhere/python3"))
    with pytest.raises(BackendError) as exc:
        launch(fn_write_result, [{"i": 1}, {"i": 2}], backend="slurm", exp_prefix="ctrpy",
               config=env.config)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("slurm backend (")
    assert f"in the container (`{shim} exec -B " in msg, msg
    assert "/images/train.sif /opt/nowhere/python3`) did not run" in msg, msg
    assert "set `python:` to a Python" in msg, msg
    assert not log.exists()  # nothing was submitted
    (probe,) = container_calls(calls)  # the check, and nothing else, went through it
    i = probe.index("/images/train.sif")
    assert probe[0] == "exec" and probe[i + 1:i + 3] == ["/opt/nowhere/python3", "-c"]
    assert str(env.project) in [probe[k + 1] for k, a in enumerate(probe) if a == "-B"]


def test_a_container_runtime_not_on_the_login_host_stops_before_sbatch(
        tmp_path, slurm_local, make_config, monkeypatch):
    log = tmp_path / "sbatch.log"
    _logged_sbatch(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=make_config(
        container={"image": "/images/train.sif", "runtime": "/nonexistent/apptainer"}))
    with pytest.raises(BackendError, match=r"the container runtime '/nonexistent/apptainer' "
                                           r"is not on PATH") as exc:
        launch(fn_write_result, [{"i": 1}], backend="slurm", exp_prefix="ctrmissing",
               config=env.config)
    assert "\n" not in str(exc.value) and "`modules:`" in str(exc.value)
    assert not log.exists()
