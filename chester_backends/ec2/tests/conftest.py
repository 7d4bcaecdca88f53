"""Fixtures of the ec2 backend tests (the machinery lives in ec2farm.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ec2farm import aws, ec2_backend, farm, moto_endpoint  # noqa: E402,F401
