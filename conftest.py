"""Repo-wide pytest setup. The real-server fixtures (sshd_hosts, sshd_loopback, slurm_cluster,
slurm_cluster_noacct, slurm_factory, aws_endpoint, gpu_lab), the markers and the CI skip
check come from the ``chester_testinfra`` plugin (``testinfra/``), which the nox sessions
install; an environment without it uses this checkout's copy."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("chester_testinfra") is None:
    sys.path.insert(0, str(Path(__file__).parent / "testinfra" / "src"))

# a no-op when the installed package's pytest11 entry point has already loaded it
pytest_plugins = ["chester_testinfra.plugin"]
