"""The chester.testing conformance suite against a real sshd host."""

from __future__ import annotations

import pytest

from chester.testing import BackendConformance, ConformanceEnv


class TestSSHBackend(BackendConformance):
    @pytest.fixture
    def chester_env(self, tmp_path, sshd_hosts):
        h = sshd_hosts[0]
        remote = f"/remote/{tmp_path.name}"
        return ConformanceEnv.create(
            tmp_path, backend="gpu1", timeout=120, poll_interval=0.3,
            broken_options={"python": "/nonexistent/python3"},
            config={"backends": {"gpu1": {
                "type": "ssh", "host": h.alias, "remote_dir": remote,
                "ssh_config": sshd_hosts.ssh_config,
                "max_parallel": 4, "connect_timeout": 5}}})
