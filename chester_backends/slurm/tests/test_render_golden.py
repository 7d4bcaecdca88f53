"""Rendered job scripts, checked as golden files (``CHESTER_UPDATE_GOLDEN=1`` rewrites them).

No scheduler here: ``chester_prepare`` renders without touching any target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from chester_backend_slurm.options import SlurmOptions
from chester_backend_slurm.plugin import SlurmBackend

from chester import sweepspec
from chester.config import build_options
from chester.errors import UserError
from chester.testing import check_golden
from chester.types import BackendConfig, RunSpec

GOLDEN = Path(__file__).parent / "golden"
PROJECT = Path("/home/me/proj")
REMOTE = "/scratch/me/proj"


def chester_prepare(backend, runs, staging_dir):
    """The slurm backend's prepare, on an instance of its own (it touches no target)."""
    return SlurmBackend().chester_prepare(backend, runs, staging_dir)


def _backend(options: dict, **kw) -> BackendConfig:
    opts = build_options(SlurmOptions, options, path="test", key="backends.slurm")
    return BackendConfig(name="slurm", type="slurm", options=opts, project_path=PROJECT,
                         log_dir=PROJECT / "data", **kw)


def _runs(n: int, tmp_path: Path, **kw) -> list[RunSpec]:
    """``n`` runs whose folders are in one sweep spec, as ``chester.launch`` makes them."""
    remote = [f"{REMOTE}/data/train/exp/{i + 1}_exp" for i in range(n)]
    variants = kw.get("variants", [{"i": i} for i in range(n)])
    spec = tmp_path / f"runs-{len(list(tmp_path.glob('runs-*.spec')))}.spec"
    sweepspec.write(spec, b"fn", [(d, json.dumps(v).encode(), b"{}", b"")
                                  for d, v in zip(remote, variants, strict=True)])
    return [RunSpec(run_id=i + 1, token=f"tok{i:04d}", name=f"{i + 1}_exp", exp_prefix="exp",
                    local_dir=tmp_path / f"{i + 1}_exp", remote_dir=remote[i],
                    resources=kw.get("resources", [{}] * n)[i], spec_file=str(spec),
                    order_after=(f"tok{i - 1:04d}",) if kw.get("dependent") and i else ())
            for i in range(n)]


def _check(name: str, text: str) -> None:
    from chester.remote import runtime

    text = text.replace(runtime.build().name, "RUNTIME.pyz").replace(
        runtime.build().digest, "DIGEST")  # its digest follows the code
    text = text.replace("python=%d.%d." % sys.version_info[:2], "python=X.Y.")
    check_golden(GOLDEN / name, text)


def test_array_script_with_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "s3cr3t 'x'")
    backend = _backend({
        "remote_dir": REMOTE, "host": "me@login.example.edu", "python": "python",
        "partition": "spgpu", "time": "72:00:00", "nodes": 1, "gpus": 2, "cpus_per_gpu": 4,
        "mem_per_gpu": "80G", "account": "lab0", "qos": "normal", "constraint": "a40",
        "exclude": "gl[1000-1002]", "mail_user": "me@example.edu", "mail_type": "END,FAIL",
        "sbatch": ["--gpu_cmode=shared"], "array_throttle": 4,
        "remote_header": "#!/bin/bash -l\n#SBATCH --ntasks-per-node=$gpus\n",
        "modules": ["singularity", "gcc/11"], "cuda_module": "cuda/12.1.1",
        "use_singularity": True, "simg_path": "/images/train.sif",
        "remote_mount_option": "/usr/share/glvnd", "secrets": ["WANDB_API_KEY"],
        "env": {"OMP_NUM_THREADS": "4", "ODD": "$(whoami) `id`; echo 'hi'"}},
        package_manager="uv", prepare_commands=("echo prepared",))
    prepared = chester_prepare(backend, _runs(3, tmp_path), tmp_path / "stage")
    _check("array_everything.sbatch", prepared.scripts["job-0.sbatch"])
    _check("array_everything.submit.sh", prepared.scripts["submit.sh"])
    _check("array_everything.env.sh", prepared.scripts["env.sh"])
    # supervise: auto, the default: the supervisor job (the runs' account, partition and QOS,
    # one CPU, never their GPUs) is staged and submitted first
    _check("array_everything.supervise.sbatch", prepared.scripts["supervise.sbatch"])
    assert prepared.scripts["job-0.txt"].splitlines() == [r.remote_dir for r in prepared.runs]
    secrets = next(p for p in prepared.uploads if p.name == "secrets.sh")
    assert oct(secrets.stat().st_mode & 0o777) == "0o600"
    assert "s3cr3t" not in "".join(prepared.scripts.values())
    # the sweep's one spec travels with the scripts; no run folder is sent
    assert sorted(p.name for p in prepared.uploads) == \
        ["env.sh", "job-0.sbatch", "job-0.txt", "runs.spec", "secrets.sh", "submit-rest.sh",
         "supervise.json", "supervise.py", "supervise.sbatch"]
    spec = next(p for p in prepared.uploads if p.name == "runs.spec")
    assert sweepspec.runs_in(spec) == [r.remote_dir for r in prepared.runs]


def test_remote_header_gpus_come_from_the_variant_in_the_spec(tmp_path):
    backend = _backend({"remote_dir": REMOTE,
                        "remote_header": "#!/bin/bash\n#SBATCH --ntasks-per-node=$gpus\n"})
    prepared = chester_prepare(backend, _runs(2, tmp_path, variants=[{"gpus": 3}, {"gpus": 1}]),
                               tmp_path / "stage")
    assert "#SBATCH --ntasks-per-node=3\n" in prepared.scripts["job-0.sbatch"]


def test_chunks_dependent_and_serial(tmp_path):
    backend = _backend({"max_array_size": 2, "partition": "debug", "time": 5, "remote_dir": REMOTE})
    runs = _runs(5, tmp_path)
    prepared = chester_prepare(backend, runs, tmp_path / "a")
    kinds = [(j["kind"], len(j["tokens"])) for j in prepared.data["jobs"]]
    assert kinds == [("array", 2), ("array", 2), ("array", 1)]
    _check("plain_array.sbatch", prepared.scripts["job-2.sbatch"])

    dep = chester_prepare(backend, _runs(3, tmp_path, dependent=True), tmp_path / "b")
    assert [(j["kind"], j["after"]) for j in dep.data["jobs"]] == \
        [("single", None), ("single", 0), ("single", 1)]
    _check("dependent.submit.sh", dep.scripts["submit.sh"])

    res = [{"serial_group": "g"}, {"serial_group": "g"}, {"gpus": 1, "time": "1:00:00"}]
    serial = chester_prepare(backend, _runs(3, tmp_path, resources=res), tmp_path / "c")
    assert [(j["kind"], len(j["tokens"])) for j in serial.data["jobs"]] == \
        [("serial", 2), ("array", 1)]
    _check("serial.sbatch", serial.scripts["job-0.sbatch"])
    _check("per_run_override.sbatch", serial.scripts["job-1.sbatch"])


@pytest.mark.parametrize("bad", [
    {"partition": "debug\n#SBATCH --wrap=rm"}, {"time": " 5"}, {"sbatch": ["--x\ny"]},
    {"modules": ["ok", "bad\nmodule"]}, {"env": {"BAD NAME": "x"}},
    {"remote_header": "#!/bin/bash\nrm -rf /\n"},
])
def test_values_that_would_change_the_script_are_refused(tmp_path, bad):
    backend = _backend(bad)
    with pytest.raises(UserError):
        chester_prepare(backend, _runs(1, tmp_path), tmp_path / "s")


def test_unknown_resource_is_an_error(tmp_path):
    with pytest.raises(UserError, match="unknown resource"):
        chester_prepare(_backend({}), _runs(1, tmp_path, resources=[{"gpu": 1}]),
                        tmp_path / "s")
