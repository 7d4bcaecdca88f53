"""``other_python`` finds another interpreter on this machine, as the tests that need one ask."""

from __future__ import annotations

import os
import subprocess
import sys

from chester_testinfra.pythons import other_python, pythons


def _version(python: str) -> tuple[int, int]:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_another_file_that_is_a_real_interpreter():
    here = os.path.realpath(sys.executable)
    assert here in {p.realpath for p in pythons()}  # this one is found too...
    py = other_python()
    assert py != here and os.path.realpath(py) == py  # ...and never handed out
    with open(py, "rb") as f:
        assert f.read(4) == b"\x7fELF"  # not a shim script
    assert _version(py) >= (3, 10)


def test_a_bare_one_of_this_minor_version():
    py = other_python(same_minor=True, bare=True)
    assert _version(py) == sys.version_info[:2]
    r = subprocess.run([py, "-c", "import chester"], capture_output=True, cwd="/",
                       env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
    assert r.returncode != 0
