"""The project's code on the target: which files travel, and the rsync that sends them.

The rules are :mod:`chester.sync`'s (the same for rsync and for object-store snapshots),
plus the local log folder when it sits inside the project, plus every local file named in
the backend's ``secrets`` (a secret never travels with the code).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from chester.plugin.records import BackendConfig


def extra_excludes(backend: BackendConfig) -> tuple[str, ...]:
    """Excludes beyond the user's: the log folder inside the project, secrets files."""
    from chester.remote.paths import rel_under
    from chester.remote.shell import secret_files
    from chester.remote.sync import log_dir_exclude

    out = list(log_dir_exclude(backend.project_path, backend.log_dir))
    root = Path(backend.project_path).resolve()
    for p in secret_files(backend):
        rel = rel_under(Path(p).resolve(), root)
        if rel:
            out.append("/" + rel)
    return tuple(out)


def filter_args(backend: BackendConfig) -> list[str]:
    """rsync ``--include``/``--exclude`` arguments for the project's code."""
    from chester.remote.sync import rsync_filter_args

    return rsync_filter_args(backend.rsync_include, backend.rsync_exclude,
                             extra_excludes(backend))


def select(backend: BackendConfig, root: Path | None = None) -> list[tuple[str, Path]]:
    """The files (``(rel, path)``) of the project that travel, chosen by the same rules."""
    from chester.remote.sync import select_files

    return list(select_files(root or backend.project_path, backend.rsync_include,
                             backend.rsync_exclude, extra_excludes(backend)))


def _roots(backend: BackendConfig, remote_root: str,
           extra_dirs: Sequence[str]) -> list[tuple[Path, str]]:
    from chester.remote.paths import remote_path

    out = [(Path(backend.project_path), remote_root)]
    for d in extra_dirs:
        p = Path(os.path.expanduser(d))
        local = p if p.is_absolute() else Path(backend.project_path) / p
        out.append((local, remote_path(local, backend.project_path, remote_root)))
    return out


def footprint(backend: BackendConfig, extra_dirs: Sequence[str] = ()) -> tuple[int, int]:
    """Files and bytes a sync would send to an empty host (local, no network)."""
    files = size = 0
    for local, _remote in _roots(backend, "/", extra_dirs):
        for _rel, path in select(backend, local):
            files += 1
            try:
                size += path.stat().st_size
            except OSError:
                pass
    return files, size


def sync(backend: BackendConfig, transport: Any, remote_root: str, *,
         extra_dirs: Sequence[str] = (), filters: Sequence[str] | None = None,
         dry_run: bool = False) -> Any:
    """rsync the project (and ``extra_dirs``) to ``remote_root`` through ``transport`` (a
    :class:`chester.remote.ssh.Transport`). Never deletes anything on the host."""
    if filters is None:
        filters = filter_args(backend)
    stats = None
    for local, remote in _roots(backend, remote_root, extra_dirs):
        s = transport.rsync_push(local, remote, filter_args=filters, dry_run=dry_run)
        stats = s if stats is None else stats + s
    return stats


def display(target: Any, backend: BackendConfig, remote_root: str,
            filters: Sequence[str]) -> str:
    """The rsync command line a sync amounts to (for ``--dry-run``)."""
    ssh = ["ssh", *(["-F", target.ssh_config] if target.ssh_config else []),
           *(["-p", str(target.port)] if target.port else []),
           *(["-i", target.key_filename] if target.key_filename else []),
           *(["-l", target.user] if target.user else [])]
    return shlex.join(["rsync", "-e", shlex.join(ssh), "-rlptz", "--mkpath", *filters,
                       f"{backend.project_path}/",
                       f"{target.host}:{PurePosixPath(remote_root)}/"])


__all__ = ["display", "extra_excludes", "filter_args", "footprint", "select", "sync"]
