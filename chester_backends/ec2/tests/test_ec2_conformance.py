"""The ec2 backend against chester's conformance suite (moto + the farm playing EC2)."""

import pytest
from ec2farm import ec2_config  # type: ignore[import-not-found]

from chester.testing import BackendConformance, ConformanceEnv


class TestEc2Conformance(BackendConformance):
    @pytest.fixture
    def chester_env(self, tmp_path, farm):
        return ConformanceEnv.create(tmp_path, backend="ec2", config=ec2_config(),
                                     timeout=90, poll_interval=0.3,
                                     broken_options={"python": "/nonexistent/python3"})
