"""The ``satori`` backend: SLURM with MIT Satori, IBM POWER9 with V100 GPUs's defaults.

Every default below can be overridden in chester.yaml, including through the seed's per-mode
keys (``remote_header``, ``modules``, ``cuda_module``, ``simg_path``, ``remote_mount_option``).
Satori's nodes are ppc64le: images, wheels and environments must be built for POWER9.
Facts and their sources: this distribution's README.
"""

from __future__ import annotations

from chester_backend_slurm.preset import Preset

NAME = "satori"
DEFAULTS = {
    "nodes": 1,
    "partition": "sched_system_all",
    "gpu_directive": "gres",
    "cpus_per_task": 4,
    "mem": "40G",
    "time": "12:00:00",
    "modules": ("singularity",),
    "cuda_module": "cuda/10.2",
    "remote_mount_option": ("/usr/share/glvnd",),
}


class SatoriBackend(Preset):
    """The ``satori`` backend: the slurm backend with this cluster's defaults."""

    name = NAME
    summary = "MIT Satori, IBM POWER9 (ppc64le) with V100 GPUs (SLURM)"
    defaults = DEFAULTS


SatoriOptions = SatoriBackend.options_cls
#: the preset under its earlier name (the class now; the plugin manager makes its instance)
plugin = SatoriBackend
