"""Run names and folders: the seed's ``<N>_<exp_prefix>_<...>`` names, made safe for paths."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from chester.plugin.errors import UserError
from chester.target.attrdict import MARKERS

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
MAX_NAME = 120
#: the longest file name most file systems take, in bytes
MAX_COMPONENT_BYTES = 255


def check_name(kind: str, value: object, *, path: bool = False, cleaned: bool = False) -> str:
    """Refuse a user-given name the run layout or a queue file cannot carry.

    ``kind`` names the argument in the one-line error. A plain name is one path component;
    with ``path`` it may hold ``/``-separated components (``sub_dir``), but never an absolute
    path, ``.`` or ``..`` (nothing may land outside ``log_dir``). No name may hold control
    characters (a newline would split a queue file's line), and no component may be longer
    than file systems allow. ``cleaned``: the name goes through :func:`safe_component`
    afterwards (``exp_name``), so only the control characters and emptiness are refused.
    """
    if not isinstance(value, str):
        raise UserError(f"{kind} must be a string, not {type(value).__name__} {value!r}")
    if not value or not value.strip():
        raise UserError(f"{kind} must not be empty")
    m = _CONTROL.search(value)
    if m:
        raise UserError(f"{kind} {value!r} holds the control character {m.group()!r}; "
                        "use letters, digits and . _ - = +")
    if cleaned:
        return value
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        raise UserError(f"{kind} {value!r} holds a character no file name can carry "
                        "(a lone surrogate)") from None
    if path:
        if value.startswith("/"):
            raise UserError(f"{kind} {value!r} must be a relative folder under log_dir, "
                            "not an absolute path")
        parts = [p for p in value.split("/") if p]
    else:
        if "/" in value:
            raise UserError(f"{kind} {value!r} must be one name, without '/'")
        parts = [value]
    for part in parts:
        if part in (".", ".."):
            raise UserError(f"{kind} {value!r} must not hold '.' or '..' (nothing may land "
                            "outside log_dir)")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise UserError(f"{kind} {value[:40]!r}... is longer than "
                            f"{MAX_COMPONENT_BYTES} bytes, which file systems refuse")
    return value


def check_path(kind: str, value: object) -> None:
    """A user-given folder (``log_dir``, ``run_dirs``): anything but control characters."""
    text = os.fspath(value)  # type: ignore[call-overload]
    m = _CONTROL.search(str(text))
    if m:
        raise UserError(f"{kind} {str(text)!r} holds the control character {m.group()!r}")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise UserError(f"{kind} {str(text)!r} holds a character no file name can carry") \
            from None


def safe_component(text: str) -> str:
    """A string usable as one path component on any target (no slashes, no shell meaning)."""
    out = _UNSAFE.sub("-", text).strip("-.")
    return out[:MAX_NAME] or "x"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "%g" % value
    return str(value)


def _label(value: Any) -> str:
    """A value's text in a run name: its ``str``, unless that shows a memory address (an
    object without its own ``__repr__``): then its type and a digest of its content, the
    same in every process."""
    text = str(value)
    if not _ADDRESS.search(text):
        return text
    from chester.variants.fingerprint import UnstableValue, hexdigest

    try:
        return f"{type(value).__name__}-{hexdigest(value)[:8]}"
    except UnstableValue:
        return type(value).__name__


def last_component(path: str) -> str:
    """``PurePosixPath(path).name`` without making a path object (a 1,000-run sweep names
    every run this way)."""
    if "/" not in path:
        return "" if path == "." else path
    for part in reversed(path.split("/")):
        if part and part != ".":
            return part
    return ""


def auto_suffix(exp_prefix: str, variant: dict, variations: Sequence[str]) -> str:
    """The seed's automatic name (without the number).

    For each varying key: strings add their last path component, true booleans add the key,
    numbers add ``key_value``; lists, ``None`` and false add nothing.
    """
    parts = [exp_prefix]
    for key in variations:
        if key not in variant or key in MARKERS:
            continue
        label = key.split(".")[-1]
        v = variant[key]
        if isinstance(v, (list, tuple, dict, set, frozenset)) or v is None:
            continue
        if isinstance(v, bool):
            if v:
                parts.append(label)
        elif isinstance(v, str):
            parts.append(last_component(v) or v)
        elif isinstance(v, (int, float)):
            parts.append(f"{label}_{_fmt(v)}")
        else:
            parts.append(f"{label}_{_label(v)}")
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
