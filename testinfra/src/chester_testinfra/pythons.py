"""Other Python interpreters on this machine, for the tests that need a target Python other
than the one running the tests (one without chester installed, or simply another file).

Found on ``PATH``, in ``/usr/bin`` and ``/usr/local/bin``, among pyenv's versions and uv's
installed Pythons (``uv python list --only-installed``): real executables only, never a
script standing in for one (a pyenv shim can start another Python tomorrow).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from . import skip_or_fail

#: the oldest Python chester supports (requires-python)
OLDEST = (3, 10)


@dataclass(frozen=True)
class Python:
    path: str  # an executable file (not a script)
    realpath: str
    version: tuple[int, int, int]

    @property
    def minor(self) -> tuple[int, int]:
        return self.version[0], self.version[1]


def _candidates() -> list[str]:
    found: list[str] = []
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/local/bin"]:
        found += glob.glob(os.path.join(d, "python3*"))
    found += glob.glob(os.path.expanduser("~/.pyenv/versions/*/bin/python3*"))
    uv = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")
    if os.access(uv, os.X_OK):
        try:
            out = subprocess.run([uv, "python", "list", "--only-installed",
                                  "--output-format", "json"], capture_output=True, text=True,
                                 timeout=30).stdout
            found += [p["path"] for p in json.loads(out or "[]") if p.get("path")]
        except (OSError, subprocess.TimeoutExpired, ValueError, TypeError, KeyError):
            pass
    return [p for p in found if re.fullmatch(r"python3(\.\d+)?", os.path.basename(p))]


def _is_binary(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def pythons() -> tuple[Python, ...]:
    """Every Python found (one per real file), newest first; this process's own included."""
    seen: dict[str, Python] = {}
    for path in _candidates():
        real = os.path.realpath(path)
        if real in seen or not os.access(real, os.X_OK) or not _is_binary(real):
            continue
        try:
            r = subprocess.run([real, "-I", "-c", "import sys; print(*sys.version_info[:3])"],
                               capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        parts = r.stdout.split()
        if r.returncode != 0 or len(parts) != 3:
            continue
        seen[real] = Python(path, real, (int(parts[0]), int(parts[1]), int(parts[2])))
    return tuple(sorted(seen.values(), key=lambda p: p.version, reverse=True))


def _imports_chester(python: str) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([python, "-c", "import chester"], capture_output=True, cwd="/",
                          env=env, timeout=60).returncode == 0


def other_python(*, same_minor: bool = False, bare: bool = False,
                 why: str = "another Python") -> str:
    """A Python other than the one running the tests (another file), supported by chester;
    one of this minor version first. ``same_minor``: only one of this minor version.
    ``bare``: only one that cannot import chester. Skips the test (fails it under CI) when
    this machine has none."""
    here = os.path.realpath(sys.executable)
    mine = sys.version_info[:2]
    found = [p for p in pythons() if p.realpath != here and p.minor >= OLDEST and
             (p.minor == mine or not same_minor)]
    found.sort(key=lambda p: p.minor != mine)  # this minor version first, newest first
    for p in found:
        if not bare or not _imports_chester(p.realpath):
            return p.realpath
    minor = "Python %d.%d" % mine if same_minor else "Python >= %d.%d" % OLDEST
    skip_or_fail(f"needs {why}: a {minor} other than {here}"
                 f"{' without chester installed' if bare else ''}, and this machine has none")
    raise AssertionError("not reached")
