"""Run names and folders: the seed's ``<N>_<exp_prefix>_<...>`` names, made safe for paths."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
MAX_NAME = 120


def safe_component(text: str) -> str:
    """A string usable as one path component on any target (no slashes, no shell meaning)."""
    out = _UNSAFE.sub("-", text).strip("-.")
    return out[:MAX_NAME] or "x"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "%g" % value
    return str(value)


def auto_suffix(exp_prefix: str, variant: dict, variations: Sequence[str]) -> str:
    """The seed's automatic name (without the number).

    For each varying key: strings add their last path component, true booleans add the key,
    numbers add ``key_value``; lists, ``None`` and false add nothing.
    """
    parts = [exp_prefix]
    for key in variations:
        if key not in variant:
            continue
        label = key.split(".")[-1]
        v = variant[key]
        if isinstance(v, (list, tuple, dict)) or v is None:
            continue
        if isinstance(v, bool):
            if v:
                parts.append(label)
        elif isinstance(v, str):
            parts.append(PurePosixPath(v).name or v)
        elif isinstance(v, (int, float)):
            parts.append(f"{label}_{_fmt(v)}")
        else:
            parts.append(f"{label}_{v}")
    return safe_component("_".join(parts))


def map_remote(local: Path, project_path: Path, remote_root: str) -> str:
    """The seed's mapping: the run folder's path under the project, re-rooted at
    ``remote_root``. A folder outside the project keeps its absolute path."""
    return remote_mapper(project_path, remote_root)(local)


def remote_mapper(project_path: Path, remote_root: str) -> Callable[[str | Path], str]:
    """:func:`map_remote` for many folders: the project and each parent folder are resolved
    once (a sweep's runs share one parent), not once per run."""
    project = os.path.realpath(project_path)
    root = str(PurePosixPath(remote_root))
    parents: dict[str, str] = {}

    def resolve(local: str) -> str:
        parent, name = os.path.split(local)
        if not name or name in (".", "..") or os.path.islink(local):
            return os.path.realpath(local)
        real = parents.get(parent)
        if real is None:
            real = parents[parent] = os.path.realpath(parent)
        return os.path.join(real, name)

    def mapped(local: str | Path) -> str:
        real = resolve(os.path.abspath(os.fspath(local)))
        if real == project:
            return remote_root
        if not real.startswith(project.rstrip("/") + "/"):
            return str(local)
        return f"{root}/{real[len(project.rstrip('/')) + 1:]}".replace("//", "/")

    return mapped
