"""Checks for a cluster preset (see :mod:`chester_backend_slurm.preset`), for its own tests.

A preset author can call them from the preset distribution's tests; they need no SLURM and
no SSH (the job script is rendered, not submitted)::

    from chester_backend_slurm.testing import (check_registered_with_defaults,
                                               check_seed_keys_override)
    from chester_backend_gl.plugin import DEFAULTS, GlOptions

    def test_registered_with_its_defaults():
        check_registered_with_defaults("gl", GlOptions, DEFAULTS)

    def test_seed_keys_override_the_preset(tmp_path):
        check_seed_keys_override("gl", tmp_path)

Each check fails with an ``AssertionError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chester.config import load_config
from chester.plugin.manager import build_plugin_manager
from chester.plugin.records import RunSpec
from chester_backend_slurm.plugin import SlurmBackend

__all__ = ["check_registered_with_defaults", "check_seed_keys_override"]


def check_registered_with_defaults(name: str, options_cls: type,
                                   defaults: Mapping[str, Any]) -> None:
    """The backend type ``name`` is installed with ``options_cls`` as its options, runs job
    arrays, and ``options_cls()`` holds every value of ``defaults``."""
    entry = build_plugin_manager().get_backend(name)
    assert entry.spec.options_cls is options_cls, entry.spec.options_cls
    assert entry.spec.capabilities.supports_arrays
    opts = options_cls()
    for key, value in defaults.items():
        assert getattr(opts, key) == value, (key, getattr(opts, key), value)


def check_seed_keys_override(name: str, tmp_path: Path) -> str:
    """The seed's per-mode keys for mode ``name`` in a ``chester.yaml`` under ``tmp_path``
    (``host_address``, ``remote_dir``, ``modules``, ``cuda_module``, ``simg_path``,
    ``remote_mount_option``, ``remote_header``) win over the preset's defaults, in the
    options and in the rendered job script. Returns that script (for more checks)."""
    (tmp_path / ".git").mkdir(exist_ok=True)
    cfg_path = tmp_path / "chester.yaml"
    cfg_path.write_text(
        f"host_address: {{{name}: me@login.example.edu}}\n"
        f"remote_dir: {{{name}: /home/me/proj}}\n"
        f"modules: {{{name}: [apptainer]}}\n"
        f"cuda_module: {{{name}: cuda/99}}\n"
        f"simg_path: {{{name}: /images/x.sif}}\n"
        f"remote_mount_option: {{{name}: /data}}\n"
        f"remote_header: {{{name}: \"#!/bin/bash\\n#SBATCH --partition=mine\\n\"}}\n")
    manager = build_plugin_manager()
    backend = load_config(cfg_path).backend(name, manager)
    o = backend.options
    assert (o.host, o.remote_dir) == ("me@login.example.edu", "/home/me/proj")
    assert o.modules == ("apptainer",) and o.cuda_module == "cuda/99"
    assert o.simg_path == "/images/x.sif" and o.remote_mount_option == ("/data",)
    run = RunSpec(run_id=1, token="t1", name="1_x", exp_prefix="x", local_dir=tmp_path / "r",
                  remote_dir="/home/me/proj/data/train/x/1_x", resources={"gpus": 1})
    # the slurm backend's rendering (the preset's required options are not this check's)
    prepared = SlurmBackend().chester_prepare(backend, [run], tmp_path / "stage")
    script = prepared.scripts["job-0.sbatch"]
    assert "#SBATCH --partition=mine" in script
    default_partition = getattr(manager.get_backend(name).spec.options_cls(), "partition", None)
    if default_partition:
        assert f"--partition={default_partition}" not in script
    assert "module load apptainer" in script and "module load cuda/99" in script
    return script
