"""chester preset: University of Michigan Great Lakes (SLURM)."""

__version__ = "0.3.0"
