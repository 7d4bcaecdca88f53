"""The code attrs generates for classes, compiled once and kept between processes.

attrs writes each class's methods (``__init__``, ``__repr__``, ``__eq__``, ...) as Python
source and compiles it when the class is made: about half the time a class takes to make,
and a ``chester launch`` makes some 45 classes. The compiled code depends only on that
source (and the interpreter), so after :func:`install` a process that finds the same source
in the cache file runs the code an earlier process compiled, as :mod:`marshal` kept it,
instead of compiling it again; the classes are exactly the same. A source not in the cache
is compiled as attrs compiles it, and the cache file is written again when the process
ends.

The cache is a file in chester's cache folder (``$CHESTER_CACHE_DIR``, else
``$XDG_CACHE_HOME/chester``), one per interpreter and environment, holding each source's
digest and its code; the 16 most recently used files are kept, and any used within a day.
A file that cannot be read or written only means compiling as before; nothing is said
about it.
"""

from __future__ import annotations
import __future__

import marshal
import os
import re
import sys
from typing import Any

from chester.digests import blake2b

#: what a cache file starts with: the format of the entries after it
_MAGIC = b"chester-attrs-code-2\n"
#: entries a cache file keeps beyond those its last writer used (sources of classes as they
#: were before the code changed go once there are more)
KEEP = 1000
#: cache files kept (one per interpreter and environment), besides any used within a day
KEEP_FILES = 16

_installed = False

#: attrs writes a class's hash seed into its ``__hash__`` as a number: the ``hash()`` of the
#: class's name, which differs from process to process (string hashing is randomized)
_SEED = re.compile(r"hash\(\(\n *(-?\d+),")
def _stand_in(seed: str) -> str:
    """What stands for the seed in the cached code: nines, as many characters as the seed
    (so every position in the code, its line table too, is the seed's)."""
    return "-" + "9" * (len(seed) - 1) if seed.startswith("-") else "9" * len(seed)


def _with_seed(code: Any, stand_in: int, seed: int) -> Any:
    """``code`` (and the functions it defines) with the seed in place of its stand-in."""
    consts = tuple(seed if type(c) is int and c == stand_in
                   else _with_seed(c, stand_in, seed) if isinstance(c, _CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_consts=consts)


_CodeType = type(_with_seed.__code__)


def cache_file() -> str:
    """This interpreter's cache file, in chester's cache folder
    (:func:`chester.config.cache_root`, which this module does not import: that would make
    classes before the cache is in place)."""
    folder = os.environ.get("CHESTER_CACHE_DIR")
    if folder:
        folder = os.path.expanduser(folder)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                  ".cache")
        folder = os.path.join(base, "chester")
    env = blake2b(f"{sys.prefix}\0{sys.executable}".encode("utf-8", "surrogateescape"),
                  digest_size=4).hexdigest()  # one file per environment
    tag = f"{sys.implementation.cache_tag}-{sys.hexversion:x}-m{marshal.version}-{env}"
    return os.path.join(folder, f"attrs-code-{tag}.marshal")


def _load(path: str) -> dict[tuple[str, bytes], bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(_MAGIC):
            return {}
        entries = marshal.loads(data[len(_MAGIC):])
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    try:
        os.utime(path)  # used now: pruning keeps the most recently used files
    except OSError:
        pass
    return entries if isinstance(entries, dict) else {}


def _save(path: str, known: dict[tuple[str, bytes], bytes], new: dict[tuple[str, bytes], bytes],
          used: set[tuple[str, bytes]]) -> None:
    if not new:
        return
    if len(known) + len(new) > KEEP:
        known = {k: v for k, v in known.items() if k in used}
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(_MAGIC + marshal.dumps({**known, **new}))
        os.replace(tmp, path)
    except (OSError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    # one file per environment: those of environments gone (a throw-away venv) go in time
    from pathlib import Path

    from chester.config import prune_cache, prune_temporaries

    folder = Path(path).parent
    prune_cache(folder, "attrs-code-", ".marshal", keep=KEEP_FILES)
    prune_temporaries(folder)


def install() -> None:
    """From now on, attrs' generated code comes from the cache when its source is there
    (once per process; does nothing when attrs compiles in a way this does not know)."""
    global _installed
    if _installed:
        return
    _installed = True
    import attr._make as make

    original = getattr(make, "_compile_and_eval", None)
    code = getattr(original, "__code__", None)
    if code is None or code.co_varnames[:4] != ("script", "globs", "locs", "filename"):
        return
    # compiled as attrs compiles it: with the future flags of attrs' own module
    flags = code.co_flags & __future__.annotations.compiler_flag
    path = cache_file()
    known = _load(path)
    new: dict[tuple[str, bytes], bytes] = {}
    used: set[tuple[str, bytes]] = set()

    def compile_and_eval(script: str, globs: dict[str, Any] | None,
                         locs: Any = None, filename: str = "") -> None:
        m = _SEED.search(script)
        if m is not None:  # the code is kept with a stand-in for this process's seed
            stand_in = _stand_in(m[1])
            script = f"{script[:m.start(1)]}{stand_in}{script[m.end(1):]}"
        key = (filename, blake2b(script.encode("utf-8", "surrogatepass"),
                                         digest_size=20).digest())
        try:
            compiled = marshal.loads(known[key])
            if type(compiled) is not _CodeType:
                raise TypeError(key)
            used.add(key)
        except (KeyError, ValueError, EOFError, TypeError):  # not kept (or kept damaged)
            compiled = compile(script, filename, "exec", flags=flags, dont_inherit=True)
            new[key] = marshal.dumps(compiled)
        eval(compiled if m is None else _with_seed(compiled, int(stand_in), int(m[1])),
             globs, locs)

    make._compile_and_eval = compile_and_eval
    import atexit

    atexit.register(_save, path, known, new, used)
