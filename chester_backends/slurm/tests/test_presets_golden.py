"""Each cluster preset's job script for a GPU run, a CPU run and a run with per-run
overrides, as golden files (``CHESTER_UPDATE_GOLDEN=1`` rewrites them); conflicting
directives are errors at prepare, before anything is sent; a required option left unset is a
blocker of the prepared sweep (a dry run shows the scripts, a launch stops before the submit)."""

from __future__ import annotations

import pytest

from chester.config import load_config
from chester.errors import UserError
from chester.plugins import build_plugin_manager
from chester.types import RunSpec

from .test_render_golden import _check

PRESETS = ("gl", "psc", "satori", "seuss")
CASES = {"gpu": {"gpus": 1}, "cpu": {},
         "override": {"gpus": 2, "mem": "100G", "cpus_per_task": 12, "time": "1:00:00"}}


def _prepare(tmp_path, name: str, resources: dict, **options):
    pytest.importorskip(f"chester_backend_{name}")
    (tmp_path / ".git").mkdir(exist_ok=True)
    opts = {"type": name, "host": "me@login.example.edu", "remote_dir": "/scratch/me/proj",
            **({"account": "lab0"} if name == "gl" else {}), **options}
    cfg = tmp_path / "chester.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"backends": {name: opts}}))
    manager = build_plugin_manager()
    backend = load_config(cfg).backend(name, manager)
    run = RunSpec(run_id=1, token="t1", name="1_x", exp_prefix="x", local_dir=tmp_path / "r",
                  remote_dir="/scratch/me/proj/data/train/x/1_x", resources=resources)
    plugin = manager.get_backend(name).plugin  # the preset's instance
    return plugin.chester_prepare(backend=backend, runs=[run], staging_dir=tmp_path / "stage")


def _directives(script: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith("#SBATCH")
            and not ln.startswith(("#SBATCH --job-name", "#SBATCH --output"))]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", PRESETS)
def test_preset_scripts(tmp_path, name, case):
    prepared = _prepare(tmp_path, name, CASES[case])
    script = prepared.scripts["job-0.sbatch"]
    _check(f"preset_{name}_{case}.sbatch", "\n".join(_directives(script)) + "\n")
    flags = [d.split()[1].split("=")[0] for d in _directives(script)]
    assert not ({"--mem", "--mem-per-gpu"} <= set(flags)), flags
    assert not ({"--cpus-per-task", "--cpus-per-gpu"} <= set(flags)), flags


def test_gl_cpu_runs_go_to_the_cpu_partition(tmp_path):
    lines = _directives(_prepare(tmp_path, "gl", {}).scripts["job-0.sbatch"])
    assert "#SBATCH --partition=standard" in lines
    assert "#SBATCH --cpus-per-task=4" in lines and "#SBATCH --mem=16G" in lines
    assert not any("gpu" in ln for ln in lines)


def test_psc_asks_for_typed_gpus_on_gpu_shared(tmp_path):
    lines = _directives(_prepare(tmp_path, "psc", {"gpus": 2}).scripts["job-0.sbatch"])
    assert "#SBATCH --partition=GPU-shared" in lines and "#SBATCH --gpus=v100-32:2" in lines


def test_gl_without_account_renders_and_blocks_the_submit_in_one_line(tmp_path):
    # the scripts are rendered (a dry run shows them), the missing option is a blocker
    prepared = _prepare(tmp_path, "gl", {"gpus": 1}, account=None)
    assert _directives(prepared.scripts["job-0.sbatch"])
    [line] = prepared.blockers
    assert "account is required" in line and "backends.gl.account" in line
    assert "\n" not in line
    assert _prepare(tmp_path, "gl", {"gpus": 1}).blockers == ()


def test_a_per_run_value_replaces_the_per_gpu_default(tmp_path):
    lines = _directives(_prepare(tmp_path, "gl", {"gpus": 1, "mem": "30G"})
                        .scripts["job-0.sbatch"])
    assert "#SBATCH --mem=30G" in lines and not any("mem-per-gpu" in ln for ln in lines)
    assert "#SBATCH --cpus-per-gpu=4" in lines  # untouched: no per-run cpus


def test_a_configured_value_replaces_the_presets_default(tmp_path):
    lines = _directives(_prepare(tmp_path, "gl", {"gpus": 1}, cpus_per_task=8)
                        .scripts["job-0.sbatch"])
    assert "#SBATCH --cpus-per-task=8" in lines and not any("cpus-per-gpu" in ln for ln in lines)


def test_both_of_a_pair_at_one_level_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="both mem and mem_per_gpu"):
        _prepare(tmp_path, "gl", {"gpus": 1, "mem": "30G", "mem_per_gpu": "10G"})
    with pytest.raises(UserError, match="both cpus_per_task and cpus_per_gpu"):
        _prepare(tmp_path, "gl", {"gpus": 1}, cpus_per_task=8, cpus_per_gpu=2)


#: site options stock SLURM does not know (Great Lakes' own sbatch plugin adds it)
SITE_ONLY = ("--gpu_cmode",)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_scripts_pass_sbatch_test_only(tmp_path, slurm_factory, name):
    """Each preset's GPU, CPU and override scripts, as rendered, are accepted by
    ``sbatch --test-only`` on a test cluster with the presets' partitions and typed GPUs
    (only site-specific options are left out, and named here)."""
    import os
    import subprocess

    from chester_testinfra import InfraUnavailable, skip_or_fail

    try:
        c = slurm_factory.get(max_array_size=1001, accounting=False, presets=True)
    except InfraUnavailable as e:
        skip_or_fail(f"slurm: {e}")
    for case, res in sorted(CASES.items()):
        (tmp_path / case).mkdir()
        prepared = _prepare(tmp_path / case, name, res)
        text = "\n".join(ln for ln in prepared.scripts["job-0.sbatch"].splitlines()
                         if not ln.startswith(tuple(f"#SBATCH {o}" for o in SITE_ONLY)))
        script = tmp_path / case / "job.sbatch"
        script.write_text(text.replace("/scratch/me/proj", str(tmp_path / case)) + "\n")
        r = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True,
                           text=True, env={**os.environ, **c.env}, timeout=60)
        assert r.returncode == 0 and "to start at" in r.stderr, (name, case, r.stderr)
    # and the cluster does judge: a GPU type it does not have is refused
    bad = tmp_path / "bad.sbatch"
    bad.write_text("#!/bin/bash\n#SBATCH --partition=GPU-shared\n#SBATCH --gpus=h100:1\n"
                   "true\n")
    r = subprocess.run(["sbatch", "--test-only", str(bad)], capture_output=True, text=True,
                       env={**os.environ, **c.env}, timeout=60)
    assert r.returncode != 0, r.stderr
