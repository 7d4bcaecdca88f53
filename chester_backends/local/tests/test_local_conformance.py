"""The local backend against chester's conformance suite."""

import pytest

from chester.testing import BackendConformance, ConformanceEnv


class TestLocalConformance(BackendConformance):
    @pytest.fixture
    def chester_env(self, tmp_path, monkeypatch):
        monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
        return ConformanceEnv.create(
            tmp_path, backend="local",
            config={"backends": {"local": {"type": "local", "max_parallel": 2}}},
            timeout=60, poll_interval=0.2,
            broken_options={"python": "/nonexistent/python3"})
