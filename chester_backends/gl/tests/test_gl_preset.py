"""The ``gl`` preset: registered, SLURM with gl's defaults, overridable by seed keys."""

from chester_backend_gl.plugin import DEFAULTS, GlOptions
from chester_backend_slurm.testing import check_registered_with_defaults, check_seed_keys_override


def test_registered_with_its_defaults():
    check_registered_with_defaults("gl", GlOptions, DEFAULTS)


def test_seed_keys_override_the_preset(tmp_path):
    check_seed_keys_override("gl", tmp_path)
