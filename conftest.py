"""Repo-wide pytest setup: the real-server fixtures of ``tests/infra`` (sshd_hosts,
sshd_loopback, slurm_cluster, slurm_cluster_noacct, slurm_factory, aws_endpoint)."""

import sys
from pathlib import Path

# `tests.infra` must import whatever the import mode and the working directory
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["tests.infra.plugin"]
