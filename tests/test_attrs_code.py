"""chester.attrs_code: attrs' generated code kept between processes is the code attrs
compiles itself, and a cache file that cannot be used only means compiling again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: the code of every generated method of the classes a launch makes, as comparable data
_SCRIPT = r"""
import json, sys
if sys.argv[1] == "cached":
    from chester import attrs_code
    attrs_code.install()
import attr
import chester.launcher.launching
import chester.store
from chester.plugin.manager import build_plugin_manager
build_plugin_manager()

def parts(code):
    return [code.co_code.hex(), code.co_linetable.hex(), code.co_exceptiontable.hex(),
            code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
            code.co_filename, code.co_name, code.co_qualname, code.co_firstlineno,
            code.co_flags, code.co_stacksize, code.co_argcount, code.co_kwonlyargcount,
            [parts(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]]

out = {}
import gc
for obj in gc.get_objects():
    if isinstance(obj, type) and attr.has(obj) and obj.__module__.startswith("chester"):
        for name, f in vars(obj).items():
            code = getattr(f, "__code__", None)
            if code is not None and code.co_filename.startswith("<attrs generated"):
                out[f"{obj.__module__}.{obj.__qualname__}.{name}"] = parts(code)
print(json.dumps(out))
"""


def _methods(tmp_path: Path, mode: str, seed: str) -> dict:
    env = {**os.environ, "CHESTER_CACHE_DIR": str(tmp_path / "cache"), "PYTHONHASHSEED": seed}
    p = subprocess.run([sys.executable, "-c", _SCRIPT, mode], env=env, capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout)


def test_the_kept_code_is_the_code_attrs_compiles(tmp_path):
    compiled = _methods(tmp_path, "plain", "1")
    assert len(compiled) > 100  # every method of the launch's classes
    assert not (tmp_path / "cache").exists()  # nothing kept without install()
    first = _methods(tmp_path, "cached", "1")  # compiles, and keeps what it compiled
    kept = list((tmp_path / "cache").glob("attrs-code-*.marshal"))
    assert len(kept) == 1
    # another process, another hash seed (written into each __hash__): from the cache
    other_seed = _methods(tmp_path, "cached", "2")
    again = _methods(tmp_path, "cached", "1")
    assert first == compiled
    assert again == compiled
    assert other_seed == _methods(tmp_path, "plain", "2")
    assert other_seed != compiled  # the seeds differ: so does each __hash__'s constant


def test_a_damaged_cache_file_is_compiled_past_and_written_again(tmp_path):
    _methods(tmp_path, "cached", "1")
    (kept,) = (tmp_path / "cache").glob("attrs-code-*.marshal")
    size = kept.stat().st_size
    kept.write_bytes(kept.read_bytes()[: size // 2])  # cut short
    assert _methods(tmp_path, "cached", "1") == _methods(tmp_path, "plain", "1")
    assert kept.stat().st_size == size
    kept.write_bytes(b"not a cache")
    assert _methods(tmp_path, "cached", "3") == _methods(tmp_path, "plain", "3")


def test_a_cache_folder_that_cannot_be_written_is_no_error(tmp_path):
    (tmp_path / "cache").write_text("a file where the folder would be")
    env = {**os.environ, "CHESTER_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-c", _SCRIPT, "cached"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert json.loads(p.stdout)


def test_cache_files_of_environments_gone_are_pruned(tmp_path):
    """One file per environment: writing one keeps the 16 most recently used (and any
    used within a day), so throw-away venvs do not fill the cache folder."""
    cache = tmp_path / "cache"
    cache.mkdir()
    old = time.time() - 3 * 86400
    for i in range(20):
        f = cache / f"attrs-code-cpython-311-0-m4-{i:08x}.marshal"
        f.write_bytes(b"chester-attrs-code-2\n")
        os.utime(f, (old + i, old + i))
    _methods(tmp_path, "cached", "1")
    left = sorted(p.name for p in cache.glob("attrs-code-*.marshal"))
    assert len(left) == 16
    assert f"attrs-code-cpython-311-0-m4-{0:08x}.marshal" not in left  # the least recent
