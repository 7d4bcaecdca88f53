"""Helpers of the core tests; the ones the backends' tests share too live in
``chester_testinfra.helpers`` and are imported here."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from chester_testinfra.helpers import (  # noqa: F401
    CHESTER,
    SEED_EXAMPLE,
    make_project,
    run_chester,
    run_seed_example,
    stop_monitor,
)


def write_plugin_dist(site: Path, dist: str, entry_points: dict[str, str],
                      modules: dict[str, str] | None = None, version: str = "1.0") -> None:
    """Install a tiny distribution (dist-info + modules) into ``site`` by hand."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "[chester]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps)
    for name, src in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(src))


def uv(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m uv ARGS`` (checked); skip the test (fail it under CI) without uv."""
    try:
        import uv as _uv  # noqa: F401
    except ImportError:
        import pytest

        if os.environ.get("CI") == "true":
            pytest.fail("uv is needed to build wheels and make venvs")
        pytest.skip("uv not installed")
    return subprocess.run([sys.executable, "-m", "uv", *args], check=True, capture_output=True,
                          text=True, **kw)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 nor True; NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (a != a and b != b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(ka, kb) and same(a[ka], b[kb])
                                          for ka, kb in zip(a, b, strict=True))
    return a == b


#: a Hydra app that records the config and argv it was given in its run folder's got.pkl
HYDRA_APP = '''
import os, pickle, sys
import hydra
from omegaconf import OmegaConf

@hydra.main(version_base=None, config_path=None)
def main(cfg):
    got = {"cfg": OmegaConf.to_container(cfg, resolve=False), "argv": sys.argv[1:]}
    with open(os.path.join(os.environ["CHESTER_LOG_DIR"], "got.pkl"), "wb") as f:
        pickle.dump(got, f)

if __name__ == "__main__":
    main()
'''
