"""The chester.testing conformance suite against the test lab (a real login host and two
GPU nodes over sshd, stand-in nvidia-smi)."""

from __future__ import annotations

import pytest
from chester_testinfra.gpulab import lab_backend

from chester.testing import BackendConformance, ConformanceEnv


class TestAutobotBackend(BackendConformance):
    @pytest.fixture
    def chester_env(self, tmp_path, gpu_lab):
        return ConformanceEnv.create(
            tmp_path, backend="lab", timeout=120, poll_interval=0.3,
            broken_options={"python": "/nonexistent/python3"},
            config={"backends": {"lab": lab_backend(gpu_lab, tmp_path / "shared" / "proj")}})
