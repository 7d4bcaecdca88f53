"""What each pull brought home, so that no later pull overwrites a file changed here since.

rsync's ``--update`` keeps a local file that is newer than the host's, but it compares
whole seconds: a local edit that lands in the same second as the host's write looks no newer
and is overwritten. So every folder a pull fills (a run's folder) keeps a record of the files
the pull wrote there, in ``<folder>/.chester/pulled.json``: each file's size and modification
time (to the nanosecond, as the file system keeps it) right after it arrived. At the next
pull, a recorded file whose size or time differ from its record was changed here since it
arrived: it is left out of the transfer, whatever either clock says, and keeps its record
(and so stays left out) until it is removed here.

Files no pull brought (nothing recorded to compare with) follow ``--update`` alone, and so do
chester's own records under ``.chester/`` (the target writes them; chester rewrites some
locally on a relaunch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

RECORD = ".chester/pulled.json"
_OWN = ".chester/"


def _load(folder: Path) -> dict[str, list[int]]:
    try:
        with open(folder / RECORD, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def changed_here(dest: Path, folders: Sequence[str]) -> list[str]:
    """Files under ``dest`` (paths relative to it) that a pull brought into one of
    ``folders`` and that were changed here since: a pull must leave them alone."""
    out: list[str] = []
    for folder in folders:
        base = dest / folder if folder else dest
        for rel, was in _load(base).items():
            now = _stat(base / rel)
            if now is not None and now != was:
                out.append(f"{folder.rstrip('/')}/{rel}" if folder else rel)
    return out


def remember(dest: Path, folders: Sequence[str], names: Iterable[str]) -> None:
    """Record the files a pull just wrote (``names``, relative to ``dest``, as rsync
    listed them) in the record of the folder each belongs to."""
    prefixes = sorted(((f.rstrip("/") + "/" if f else "", f) for f in folders),
                      key=lambda x: -len(x[0]))
    by_folder: dict[str, list[str]] = {}
    for name in names:
        for pre, folder in prefixes:
            if name.startswith(pre):
                rel = name[len(pre):]
                if rel and not rel.startswith(_OWN):
                    by_folder.setdefault(folder, []).append(rel)
                break
    for folder, rels in by_folder.items():
        base = dest / folder if folder else dest
        record = _load(base)
        for rel in rels:
            st = _stat(base / rel)
            if st is not None:
                record[rel] = st
        _write(base / RECORD, record)


def _write(path: Path, files: dict[str, list[int]]) -> None:
    """Replace the record at once: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"files": files}, f)
    os.replace(tmp, path)


def exclude_rule(rel: str) -> bytes:
    """An rsync filter pattern that matches the one path ``rel`` (relative to the
    transfer's root), whatever characters it holds."""
    if any(c in rel for c in "*?["):  # rsync reads backslashes as escapes only then
        rel = "".join("\\" + c if c in "*?[\\" else c for c in rel)
    return os.fsencode("/" + rel)


__all__ = ["RECORD", "changed_here", "exclude_rule", "remember"]
