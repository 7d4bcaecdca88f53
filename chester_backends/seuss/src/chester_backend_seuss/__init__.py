"""chester preset: Carnegie Mellon SEUSS cluster (SLURM)."""

__version__ = "0.3.0"
