"""chester backend: run sweeps on SSH hosts (see docs/backends/ssh.md)."""

__version__ = "0.3.0"
