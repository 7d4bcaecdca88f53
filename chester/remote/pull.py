"""Bringing run folders home over SSH: one rsync per layout, a progress bar, and a
:class:`~chester.types.PullResult` per run that says ``complete`` only when the run's end
record arrived."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chester.plugin.records import PullPatterns, PullResult, RunHandle
from chester.remote import paths
from chester.remote.progress import Progress


def pull_runs(label: str, transport: Any, handles: Sequence[RunHandle], remote_root: str,
              dest: Path, patterns: PullPatterns) -> list[PullResult]:
    """rsync every run of ``handles`` home through ``transport`` (a
    :class:`chester.remote.ssh.Transport`): runs laid out under ``remote_root`` as under
    ``dest`` go in one rsync (``--files-from``), ``--update``, never deleting; files and
    bytes are counted per run."""
    if not handles:
        return []
    filters = [f"--include={p}" for p in patterns.include]
    filters += [f"--exclude={p}" for p in paths.PULL_EXCLUDES]
    filters += [f"--exclude={p}" for p in patterns.exclude]
    per: dict[str, list[int]] = {h.token: [0, 0] for h in handles}
    seen_runs: set[str] = set()
    items = [(h, h.remote_dir, h.local_dir) for h in handles]
    for rroot, lroot, members in paths.pull_groups(items, remote_root, Path(dest)):
        prefixes = sorted(((rel.rstrip("/") + "/", h.token) for h, rel in members),
                          key=lambda x: -len(x[0]))
        with Progress(label, len(members)) as bar:

            def progress(name: str, size: int, prefixes=prefixes, bar=bar) -> None:
                for pre, tok in prefixes:
                    if name.startswith(pre):
                        per[tok][0] += 1
                        per[tok][1] += size
                        if tok not in seen_runs:
                            seen_runs.add(tok)
                            bar.advance()
                        return

            transport.rsync_pull(rroot, lroot, filter_args=filters,
                                 files_from=[rel for _, rel in members], progress=progress)
    for local, remote in patterns.extra_dirs:
        transport.rsync_pull(remote, Path(local), filter_args=filters)
    return [PullResult(token=h.token, files=per[h.token][0], bytes=per[h.token][1],
                       complete=paths.arrived(h.local_dir)) for h in handles]


__all__ = ["pull_runs"]
