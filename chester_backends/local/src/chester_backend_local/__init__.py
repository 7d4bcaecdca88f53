"""chester's local backend: runs on this machine, detached, with a cap on parallel runs."""

__version__ = "0.3.0"
