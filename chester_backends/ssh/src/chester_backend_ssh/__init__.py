"""chester backend: run sweeps on SSH hosts (see docs/backends/ssh.md)."""

__version__ = "0.3.0"

from chester_backend_ssh.transport import RunResult, SSHTarget, SyncStats, Transport

__all__ = ["RunResult", "SSHTarget", "SyncStats", "Transport"]
