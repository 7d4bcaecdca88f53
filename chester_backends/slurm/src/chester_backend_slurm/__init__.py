"""chester's SLURM backend: whole sweeps as job arrays, directly or through a login host."""

__version__ = "0.3.0"
