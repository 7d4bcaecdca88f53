"""What ``chester plugins list`` shows, kept between commands while nothing it was read from
changed, so that listing the plugins imports none of them (nor pluggy, nor attrs).

The listing (each plugin's distribution, version, status, backends and hooks, and the
backend names two plugins claim) is made by loading every plugin (:mod:`chester.plugin.
manager`), then kept in ``<cache>/chester/plugins-<n>.json`` (one file per Python
environment) with what it was read from: the Python, the folders on ``sys.path`` that hold
distributions and their modification times (a package installed or removed changes its
folder's), the entry
points, the plugins blocked by ``CHESTER_DISABLE_PLUGINS``, and the size and modification
time of every module file of chester and of each plugin's package. The next listing reads
the kept one when all of that is the same, and loads the plugins again otherwise. A
listing in which a plugin failed to load is never kept: its error is read anew each time.
``chester plugins list --verbose`` always loads them.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from typing import Any

from chester.plugin.entrypoints import EntryPoint, _blocked_names, _entry_points

#: listings kept (for other ``sys.path``s of the same environment)
KEEP = 4


def _cache_file() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    env = zlib.crc32(f"{sys.prefix}\0{sys.executable}".encode("utf-8", "surrogateescape"))
    return os.path.join(base, "chester", f"plugins-{env:08x}.json")


def _py_files(root: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of each ``.py`` file under ``root`` (a module file: itself)."""
    if os.path.isfile(root):
        st = os.stat(root)
        return [(root, st.st_size, st.st_mtime_ns)]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out.append((path, st.st_size, st.st_mtime_ns))
    return out


def _package_of(ep: EntryPoint) -> str | None:
    """The folder (or module file) of the top-level package an entry point names, found on
    ``sys.path`` as the import system finds a plain package; None when it is not there (an
    import hook finds it: the listing is then not kept)."""
    top = ep.value.split(":")[0].strip().split(".")[0]
    for entry in sys.path:
        root = entry or "."
        folder = os.path.join(root, top)
        if os.path.isfile(os.path.join(folder, "__init__.py")):
            return folder
        if os.path.isfile(folder + ".py"):
            return folder + ".py"
    return None


def _key(eps: list[EntryPoint]) -> dict[str, Any] | None:
    """What a listing was read from (see the module's text); None when it cannot be told."""
    import chester

    folders = []
    for entry in sys.path:  # the folders of installed distributions, with their times
        try:  # (another folder, the current one of `python -m chester.cli` say, is left
            # out: the plugins' packages found in it are in the key below)
            if any(n.endswith((".dist-info", ".egg-info")) for n in os.listdir(entry or ".")):
                folders.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            pass
    files = _py_files(os.path.dirname(chester.__file__ or ""))
    plugins = []
    for ep in eps:
        where = _package_of(ep)
        if where is None:
            return None
        plugins.append([ep.name, ep.value, ep.folder, where])
        files += _py_files(where)
    return {"python": sys.version, "path": folders, "plugins": plugins,
            "blocked": sorted(_blocked_names()), "files": files}


def _kept() -> list[dict[str, Any]]:
    try:
        with open(_cache_file(), encoding="utf-8") as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return []
    return [k for k in kept if isinstance(k, dict)] if isinstance(kept, list) else []


def cached() -> dict[str, Any] | None:
    """The kept listing, when nothing it was read from changed; else None."""
    key = _key(_entry_points())
    if key is None:
        return None
    key = json.loads(json.dumps(key))  # (its tuples are lists once read back from JSON)
    for kept in _kept():
        if kept.get("key") == key and isinstance(kept.get("listing"), dict):
            return kept["listing"]
    return None


def of_manager(mgr: Any) -> dict[str, Any]:
    """The listing of a plugin manager that loaded the plugins (``backends()`` called)."""
    records = sorted(mgr.records.values(), key=lambda r: r.name)
    conflicts = [[name, [e.distribution or e.plugin_name for e in entries]]
                 for name, entries in mgr.conflicts().items()]
    return {"records": [r.to_json() for r in records], "conflicts": conflicts}


def keep(listing: dict[str, Any]) -> None:
    """Keep ``listing`` for the next command, unless a plugin failed to load (best effort:
    a cache folder that cannot be written only means the next listing loads them again)."""
    if any(r.get("status") == "error" for r in listing["records"]):
        return
    key = _key(_entry_points())
    if key is None:
        return
    path = _cache_file()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        key = json.loads(json.dumps(key))
        # a few kept, newest first: `python -m chester.cli` and the `chester` script see
        # another first folder on sys.path
        kept = [{"key": key, "listing": listing},
                *(k for k in _kept() if k.get("key") != key)][:KEEP]
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(kept, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


__all__ = ["cached", "keep", "of_manager"]
