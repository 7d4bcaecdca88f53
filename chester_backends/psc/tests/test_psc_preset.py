"""The ``psc`` preset: registered, SLURM with psc's defaults, overridable by seed keys."""

from chester_backend_psc.plugin import DEFAULTS, PscOptions
from chester_backend_slurm.testing import check_registered_with_defaults, check_seed_keys_override


def test_registered_with_its_defaults():
    check_registered_with_defaults("psc", PscOptions, DEFAULTS)


def test_seed_keys_override_the_preset(tmp_path):
    check_seed_keys_override("psc", tmp_path)
