"""One version for every distribution."""

import re
from pathlib import Path

import tomllib

import chester

ROOT = Path(__file__).resolve().parents[1]


def _pyprojects():
    yield ROOT / "pyproject.toml"
    yield from sorted((ROOT / "chester_backends").glob("*/pyproject.toml"))


def test_every_distribution_has_the_core_version():
    versions = {}
    for p in _pyprojects():
        data = tomllib.loads(p.read_text())
        versions[data["project"]["name"]] = data["project"]["version"]
    assert len(versions) >= 2
    assert set(versions.values()) == {chester.__version__}, versions


def test_pins_between_distributions_match_the_version():
    for p in _pyprojects():
        data = tomllib.loads(p.read_text())
        deps = list(data["project"].get("dependencies", []))
        for extra in data["project"].get("optional-dependencies", {}).values():
            deps += extra
        for dep in deps:
            m = re.match(r"(chester-(?:ml|backend-[a-z0-9-]+))\s*==\s*([0-9.]+)", dep)
            if m:
                assert m.group(2) == chester.__version__, (p, dep)


def test_backend_packages_carry_the_version():
    for init in (ROOT / "chester_backends").glob("*/src/chester_backend_*/__init__.py"):
        m = re.search(r'__version__\s*=\s*"([^"]+)"', init.read_text())
        assert m and m.group(1) == chester.__version__, init
