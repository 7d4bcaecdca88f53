"""The slurm backend against chester's conformance suite, submitting through the loopback
sshd acting as the cluster's login host (run folders live in a separate remote folder)."""

import pytest

from chester.testing import BackendConformance, ConformanceEnv


class TestSlurmOverSSH(BackendConformance):
    @pytest.fixture
    def chester_env(self, tmp_path, slurm_local, login_host, make_config):
        remote = tmp_path / "remote"
        return ConformanceEnv.create(
            tmp_path, backend="slurm",
            config=make_config(host=login_host, remote_dir=str(remote)),
            timeout=120, poll_interval=0.3)
