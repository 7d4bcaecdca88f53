"""The ``psc`` backend: SLURM with Pittsburgh Supercomputing Center Bridges-2's defaults.

Every default below can be overridden in chester.yaml, including through the seed's per-mode
keys (``remote_header``, ``modules``, ``cuda_module``, ``simg_path``, ``remote_mount_option``).
"""

from __future__ import annotations

from chester_backend_slurm.preset import Preset

NAME = "psc"
DEFAULTS = {
    "partition": "RM",  # CPU; GPU runs: partition GPU-shared
    "ntasks_per_node": 18,
    "gpu_directive": "gres",
    "mem": "64G",
    "time": "48:00:00",
    "modules": ("singularity",),
    "cuda_module": "cuda/9.0",
}

plugin = Preset(NAME, "Pittsburgh Supercomputing Center Bridges-2 (SLURM)", DEFAULTS)
PscOptions = plugin.options_cls
