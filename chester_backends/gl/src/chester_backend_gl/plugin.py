"""The ``gl`` backend: SLURM with University of Michigan Great Lakes's defaults.

Every default below can be overridden in chester.yaml, including through the seed's per-mode
keys (``remote_header``, ``modules``, ``cuda_module``, ``simg_path``, ``remote_mount_option``).
Facts and their sources: this distribution's README.
"""

from __future__ import annotations

from chester_backend_slurm.preset import Preset

NAME = "gl"
DEFAULTS = {
    "nodes": 1,
    "partition": "spgpu",  # A40 GPUs; "gpu" is the V100 partition
    "gpu_directive": "gpus",
    "cpus_per_gpu": 4,
    "mem_per_gpu": "80G",
    "time": "72:00:00",
    "gpu_sbatch": ("--gpu_cmode=shared",),  # a Great Lakes option, for GPU runs
    # runs without GPUs go to the CPU partition; the cluster's own default would be
    # 1 core and 768 MB
    "cpu_resources": {"partition": "standard", "cpus_per_task": 4, "mem": "16G"},
    "modules": ("singularity",),
    "cuda_module": "cuda/12.1.1",
    "remote_mount_option": ("/usr/share/glvnd",),
}
REQUIRED = {"account": "your Slurm account; `my_accounts` on a login node lists yours"}


class GlBackend(Preset):
    """The ``gl`` backend: the slurm backend with this cluster's defaults."""

    name = NAME
    summary = "University of Michigan Great Lakes (SLURM)"
    defaults = DEFAULTS
    required = REQUIRED


GlOptions = GlBackend.options_cls
#: the preset under its earlier name (the class now; the plugin manager makes its instance)
plugin = GlBackend
