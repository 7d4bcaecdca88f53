"""The ``psc`` backend: SLURM with Pittsburgh Supercomputing Center Bridges-2's defaults.

Every default below can be overridden in chester.yaml, including through the seed's per-mode
keys (``remote_header``, ``modules``, ``cuda_module``, ``simg_path``, ``remote_mount_option``).
Facts and their sources: this distribution's README.
"""

from __future__ import annotations

from chester_backend_slurm.preset import Preset

NAME = "psc"
DEFAULTS = {
    "nodes": 1,
    # GPU runs: part of a V100-32GB node (cores and memory follow the GPUs)
    "partition": "GPU-shared",
    "gpu_directive": "gpus",
    "gpu_type": "v100-32",  # --gpus=v100-32:N
    "time": "48:00:00",
    # runs without GPUs: cores of a Regular Memory node (memory follows the cores)
    "cpu_resources": {"partition": "RM-shared", "ntasks_per_node": 4},
    "cuda_module": "cuda",
}


class PscBackend(Preset):
    """The ``psc`` backend: the slurm backend with this cluster's defaults."""

    name = NAME
    summary = "Pittsburgh Supercomputing Center Bridges-2 (SLURM)"
    defaults = DEFAULTS


PscOptions = PscBackend.options_cls
#: the preset under its earlier name (the class now; the plugin manager makes its instance)
plugin = PscBackend
