"""Run folders on both sides: which files travel, and how local and remote folders map.

The launcher places a run's remote folder at the same path under the backend's
``remote_dir`` as its local folder has under the project (the earlier chester's rule). When
that holds for a whole set of runs, one rsync moves them all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

from chester.target import rundir as rd

#: run-folder files the launcher writes locally and a submit sends (without a sweep spec)
RUN_FILES = (rd.VARIANT_JSON, rd.RUN_JSON, rd.PAYLOAD)
#: never pulled back: the launcher has them already, or they only matter on the target
PULL_EXCLUDES = (rd.PAYLOAD, "claim.lock")

H = TypeVar("H")


def rel_under(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``root`` as a POSIX string (``""`` for the root itself), or
    None when it is not under it. Both are normalised; nothing touches the file system."""
    p = os.path.normpath(os.fspath(path))
    r = os.path.normpath(os.fspath(root))
    if p == r:
        return ""
    prefix = r if r.endswith("/") else r + "/"
    return p[len(prefix):] if p.startswith(prefix) else None


def remote_path(local: str | os.PathLike[str], project: str | os.PathLike[str],
                remote_root: str) -> str:
    """Where a local path under the project lives on the target (an absolute local path
    outside the project keeps its path)."""
    rel = rel_under(local, project)
    if rel is None:
        return os.fspath(local)
    return str(PurePosixPath(remote_root) / rel) if rel else remote_root


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (parents made), or copy it across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_run_files(runs: Iterable[tuple[str, str]], tree: Path, base: str = "/") -> list[str]:
    """Link each run's files (``(local_dir, remote_dir)`` pairs) into ``tree`` under their
    remote paths relative to ``base``; return the staged files relative to ``tree``."""
    out: list[str] = []
    for local_dir, remote_dir in runs:
        rel_dir = rel_under(remote_dir, base)
        if rel_dir is None:
            raise ValueError(f"{remote_dir} is not under {base}")
        for f in RUN_FILES:
            src = Path(local_dir) / f
            if not src.exists():
                continue
            rel = f"{rel_dir}/{f}" if rel_dir else f
            link_or_copy(src, tree / rel)
            out.append(rel)
    return out


def pull_groups(items: Sequence[tuple[H, str, str]], remote_root: str | None,
                local_root: str | os.PathLike[str]
                ) -> Iterator[tuple[str, Path, list[tuple[H, str]]]]:
    """Group runs ``(handle, remote_dir, local_dir)`` into rsync calls.

    Runs laid out the same way under ``remote_root`` and ``local_root`` form one group
    ``(remote_root, local_root, [(handle, rel), ...])``; any other run is a group of its
    own parent folders. Each group is one rsync."""
    groups: dict[tuple[str, str], list[tuple[H, str]]] = {}
    for h, rdir, ldir in items:
        rrel = rel_under(rdir, remote_root) if remote_root else None
        lrel = rel_under(ldir, local_root)
        if rrel and rrel == lrel:
            groups.setdefault((remote_root or "/", os.fspath(local_root)), []).append((h, rrel))
        else:
            rparent = str(PurePosixPath(rdir).parent)
            lparent = str(Path(ldir).parent)
            groups.setdefault((rparent, lparent), []).append((h, PurePosixPath(rdir).name))
    for (rroot, lroot), members in groups.items():
        yield rroot, Path(lroot), members


def pull_filter_args(rels: Sequence[str], include: Sequence[str] = (),
                     exclude: Sequence[str] = ()) -> list[str]:
    """rsync filter rules that send only the folders ``rels`` (relative to the rsync
    source), their ``include`` patterns first, never :data:`PULL_EXCLUDES` or ``exclude``."""
    args: list[str] = []
    for rel in rels:
        for pat in include:
            args.append(f"--include=/{rel}/**{pat}" if "/" not in pat else
                        f"--include=/{rel}/{pat.lstrip('/')}")
    args += [f"--exclude={p}" for p in exclude]
    args += [f"--exclude={p.split('/')[-1]}" for p in PULL_EXCLUDES]
    parents: set[str] = set()
    for rel in rels:
        parts = rel.split("/")
        for k in range(1, len(parts)):
            parents.add("/".join(parts[:k]))
    args += [f"--include=/{p}/" for p in sorted(parents)]
    args += [f"--include=/{rel}/***" for rel in rels]
    args.append("--exclude=*")
    return args


def arrived(local_dir: str | os.PathLike[str]) -> bool:
    """A pulled run is complete when its worker's end record (or the seed's ``.done``) is
    home: a record of a run still going, or no record at all, is not."""
    d = Path(local_dir)
    rec = rd.read_json(d / rd.STATUS)
    if isinstance(rec, dict) and rec.get("ended_at") is not None:
        return True
    return (d / rd.DONE).exists()


__all__ = ["PULL_EXCLUDES", "RUN_FILES", "arrived", "link_or_copy", "pull_filter_args",
           "pull_groups", "rel_under", "remote_path", "stage_run_files"]
