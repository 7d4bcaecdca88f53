"""The ``seuss`` backend: SLURM with Carnegie Mellon SEUSS cluster's defaults.

Every default below can be overridden in chester.yaml, including through the seed's per-mode
keys (``remote_header``, ``modules``, ``cuda_module``, ``simg_path``, ``remote_mount_option``).
"""

from __future__ import annotations

from chester_backend_slurm.preset import Preset

NAME = "seuss"
DEFAULTS = {
    "nodes": 1,
    "partition": "GPU",
    "gpu_directive": "gres",
    "cpus_per_task": 8,
    "mem": "80G",
    "time": "480:00:00",
    "modules": ("singularity",),
    "cuda_module": "cuda-91",
    "remote_mount_option": ("/usr/share/glvnd",),
}


class SeussBackend(Preset):
    """The ``seuss`` backend: the slurm backend with this cluster's defaults."""

    name = NAME
    summary = "Carnegie Mellon SEUSS cluster (SLURM)"
    defaults = DEFAULTS


SeussOptions = SeussBackend.options_cls
#: the preset under its earlier name (the class now; the plugin manager makes its instance)
plugin = SeussBackend
