"""The ``chester`` entry points, read from the distributions' metadata files without
importing a plugin, pluggy or attrs: what plugin discovery and ``chester plugins list``
start from.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

ENTRY_POINT_GROUP = "chester"
DISABLE_ENV = "CHESTER_DISABLE_PLUGINS"


def _blocked_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {n.strip() for n in raw.split(",") if n.strip()}


class EntryPoint:
    """One ``chester`` entry point: ``name = module:attr`` in a distribution's
    ``entry_points.txt``. ``folder``: the distribution's ``.dist-info``/``.egg-info``
    folder; ``dist``: an ``importlib.metadata.Distribution`` where importlib.metadata found
    it. (A plain class: each attrs class costs a compile at every command's start.)"""

    __slots__ = ("name", "value", "folder", "dist")

    def __init__(self, name: str, value: str, folder: str | None = None,
                 dist: Any = None) -> None:
        self.name, self.value, self.folder, self.dist = name, value, folder, dist

    def __repr__(self) -> str:
        return f"EntryPoint({self.name!r}, {self.value!r})"

    def load(self) -> Any:
        import importlib

        m = _EP_VALUE.match(self.value)
        if m is None:
            raise ValueError(f"entry point {self.name} = {self.value!r} is not module:attr")
        obj: Any = importlib.import_module(m.group("module"))
        for part in filter(None, (m.group("attr") or "").split(".")):
            obj = getattr(obj, part)
        return obj


#: ``module[:attr] [extras]``, as the entry points specification (and importlib) reads it
_EP_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


def _entry_points() -> list[EntryPoint]:
    """The ``chester`` entry points on ``sys.path``, one per name (the first found)."""
    eps = _scan_entry_points()
    if eps is None:
        from importlib import metadata

        eps = [EntryPoint(ep.name, ep.value, dist=ep.dist)
               for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    seen: dict[str, EntryPoint] = {}
    for ep in eps:
        seen.setdefault(ep.name, ep)  # one dist can appear twice on odd sys.paths
    return sorted(seen.values(), key=lambda e: e.name)


def _scan_entry_points() -> list[EntryPoint] | None:
    """The entry points of the distributions in ``sys.path``'s folders, found as
    ``importlib.metadata`` finds them (each folder's ``*.dist-info``/``*.egg-info``, the
    first of a name winning) without importing it: ``importlib.metadata`` and the email
    package it loads cost more than the rest of plugin discovery, at every ``chester``
    command. None where this does not cover ``sys.path`` (a zip or an egg on it, or an
    import hook that finds distributions itself): importlib.metadata then reads it."""
    from importlib.machinery import PathFinder

    if any(getattr(f, "find_distributions", None) is not None and f is not PathFinder
           for f in sys.meta_path):
        return None
    found: list[EntryPoint] = []
    names: set[str] = set()
    for entry in sys.path:
        root = entry or "."
        if root.lower().endswith(".egg"):
            return None
        try:
            children = os.listdir(root)
        except NotADirectoryError:
            return None  # a zip file
        except OSError:
            continue  # not there (python3XX.zip usually is not)
        for child in children:
            low = child.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            name = re.sub(r"[-_.]+", "_", low.rpartition(".")[0].partition("-")[0])
            if name in names:
                continue
            names.add(name)
            folder = os.path.join(root, child)
            try:
                with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            found += [EntryPoint(n, v, folder) for n, v in _group(text, ENTRY_POINT_GROUP)]
    return found


def _group(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of one ``[group]`` of an ``entry_points.txt``."""
    out: list[tuple[str, str]] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group:
            key, sep, value = line.partition("=")
            if sep:
                out.append((key.strip(), value.strip()))
    return out


def _name_version(ep: EntryPoint) -> tuple[str | None, str | None]:
    """The distribution's name and version from the head of its METADATA.

    Reading ``Distribution.name``/``.version`` parses the whole file (long description
    included) with the email parser; Name and Version are single header lines before the
    first blank line.
    """
    text = ""
    if ep.folder is not None:
        for meta in ("METADATA", "PKG-INFO"):
            try:
                with open(os.path.join(ep.folder, meta), encoding="utf-8") as f:
                    text = f.read()
                break
            except (OSError, UnicodeDecodeError):
                continue
    elif ep.dist is not None:
        text = ep.dist.read_text("METADATA") or ep.dist.read_text("PKG-INFO") or ""
    else:
        return None, None
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version"):
            found.setdefault(key, value.strip())
    if len(found) < 2:  # an odd file: let importlib.metadata read it
        from importlib import metadata

        dist = ep.dist or (metadata.PathDistribution.at(ep.folder) if ep.folder else None)
        if dist is None:
            return None, None
        return dist.name, dist.version
    return found["Name"], found["Version"]
