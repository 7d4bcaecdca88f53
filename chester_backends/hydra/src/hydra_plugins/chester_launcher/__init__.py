"""Hydra launcher plugin ``hydra/launcher=chester``: each job of a multirun is a chester run."""

__version__ = "0.3.0"
