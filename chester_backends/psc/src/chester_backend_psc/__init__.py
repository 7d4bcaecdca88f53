"""chester preset: Pittsburgh Supercomputing Center Bridges-2 (SLURM)."""

__version__ = "0.3.0"
