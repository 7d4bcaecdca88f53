"""The ``seuss`` preset: registered, SLURM with seuss's defaults, overridable by seed keys."""

from chester_backend_seuss.plugin import DEFAULTS, SeussOptions
from chester_backend_slurm.testing import check_registered_with_defaults, check_seed_keys_override


def test_registered_with_its_defaults():
    check_registered_with_defaults("seuss", SeussOptions, DEFAULTS)


def test_seed_keys_override_the_preset(tmp_path):
    check_seed_keys_override("seuss", tmp_path)
