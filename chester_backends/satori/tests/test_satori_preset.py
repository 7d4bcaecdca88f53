"""The ``satori`` preset: registered, SLURM with satori's defaults, overridable by seed keys."""

from chester_backend_satori.plugin import DEFAULTS, SatoriOptions
from chester_backend_slurm.testing import check_registered_with_defaults, check_seed_keys_override


def test_registered_with_its_defaults():
    check_registered_with_defaults("satori", SatoriOptions, DEFAULTS)


def test_seed_keys_override_the_preset(tmp_path):
    check_seed_keys_override("satori", tmp_path)
