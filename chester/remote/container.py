"""Singularity/Apptainer wrapping of the worker command, the same on every shell backend.

Only the worker's Python runs in the image; the project folder, the run folders and the
runtime are bound into it, so chester's records land in the run folder on the host, where
the status readers look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chester.plugin.errors import UserError
from chester.remote.options import Container


def resolve(options: Any, resources: Mapping[str, Any] | None = None, *,
            backend: str = "") -> Container | None:
    """The container a run uses: ``container``, else the seed's ``use_singularity`` +
    ``simg_path`` (a run's ``use_singularity`` resource overrides the option)."""
    use = (resources or {}).get("use_singularity")
    if use is False:
        return None
    c: Container | None = getattr(options, "container", None)
    if c is not None:
        return c
    if not (use or getattr(options, "use_singularity", False)):
        return None
    image = getattr(options, "simg_path", None)
    if not image:
        raise UserError(f"{backend or 'backend'}: use_singularity needs simg_path (the image), "
                        "or set container: {image: PATH}")
    runtime = getattr(options, "singularity_command", "singularity") or "singularity"
    if runtime.rstrip("/").rsplit("/", 1)[-1] not in ("apptainer", "singularity"):
        raise UserError(f"{backend or 'backend'}: singularity_command must be singularity or "
                        f"apptainer, not {runtime!r}")
    return Container(image=image, binds=tuple(getattr(options, "remote_mount_option", ()) or ()),
                     runtime=runtime)


def wrap(argv: list[str], container: Container | None, *, binds: Iterable[str] = (),
         gpus: bool = False) -> list[str]:
    """``argv`` run inside ``container`` (unchanged without one).

    ``binds`` are folders the run needs (project, run folders, runtime); with ``nv`` unset,
    ``--nv`` is passed when the run has GPUs."""
    if container is None:
        return list(argv)
    out = [container.runtime, "exec"]
    seen: list[str] = []
    for b in (*container.binds, *binds):
        if b and b not in seen:
            seen.append(b)
    for b in seen:
        out += ["-B", b]
    if container.nv if container.nv is not None else gpus:
        out.append("--nv")
    out += list(container.options)
    out.append(container.image)
    return out + list(argv)


def env_lines(container: Container | None) -> list[str]:
    """Shell lines, run on the host before :func:`wrap`'s command, that put the activated
    environment's ``bin`` (``VIRTUAL_ENV``, else ``CONDA_PREFIX``) first on ``PATH`` inside
    the container. Singularity and Apptainer replace the host's ``PATH`` with the image's,
    so ``python3`` would otherwise be the image's, without the project's packages; both
    read ``*ENV_PREPEND_PATH``. The environment must lie under a bound folder (a project's
    ``.venv`` does: the project is bound)."""
    if container is None:
        return []
    return ['chester_env_bin="${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"',
            'if [ -n "$chester_env_bin" ]; then export '
            'APPTAINERENV_PREPEND_PATH="$chester_env_bin/bin" '
            'SINGULARITYENV_PREPEND_PATH="$chester_env_bin/bin"; fi']


__all__ = ["env_lines", "resolve", "wrap"]
