"""chester preset: MIT Satori, IBM POWER9 with V100 GPUs (SLURM)."""

__version__ = "0.3.0"
