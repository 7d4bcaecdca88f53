"""Cluster presets: a backend type that is SLURM with one cluster's defaults.

A preset is one :class:`Preset` object, registered as a plugin (pluggy takes a class
instance whose methods are the hook implementations). A preset distribution's plugin module
is::

    from chester_backend_slurm.preset import Preset
    DEFAULTS = {...}
    plugin = Preset("gl", "University of Michigan Great Lakes (SLURM)", DEFAULTS)
    GlOptions = plugin.options_cls

with the entry point ``gl = "chester_backend_gl.plugin:plugin"``. The lifecycle hooks are
the slurm backend's own; only the options class (its defaults) differs. Values from
``chester.yaml`` — the seed's per-mode keys included — win over the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from chester.plugin.errors import UserError
from chester.plugin.manager import hookimpl
from chester.plugin.records import (
    BackendConfig,
    BackendSpec,
    PreparedSweep,
    PullPatterns,
    PullResult,
    RunHandle,
    RunSpec,
    RunStatus,
)
from chester_backend_slurm import plugin as slurm
from chester_backend_slurm.options import preset_options_cls


class Preset:
    """The plugin of one cluster preset: the slurm backend's hooks under its own name."""

    def __init__(self, name: str, summary: str, defaults: Mapping[str, Any],
                 required: Mapping[str, str] | None = None):
        self.name = name
        self.defaults = dict(defaults)
        #: options the cluster needs and no default can give: name -> how to find its value
        self.required = dict(required or {})
        self.options_cls = preset_options_cls(name, defaults)
        self.spec = slurm.backend_spec(name, summary, self.options_cls)

    def __repr__(self) -> str:
        return f"<chester slurm preset {self.name!r}>"

    def missing(self, backend: BackendConfig) -> tuple[str, ...]:
        """Each required option left unset: one line naming it, the file and the fix."""
        return tuple(f"{self.name} backend {backend.name!r}: {key} is required on this "
                     f"cluster; set backends.{backend.name}.{key} in chester.yaml ({how})"
                     for key, how in self.required.items()
                     if getattr(backend.options, key, None) in (None, ""))

    def check_required(self, backend: BackendConfig) -> None:
        """A required option left unset is one line naming it, the file and the fix."""
        for line in self.missing(backend):
            raise UserError(line)

    @hookimpl
    def chester_backends(self) -> list[BackendSpec]:
        return [self.spec]

    @hookimpl
    def chester_prepare(self, backend: BackendConfig, runs: Sequence[RunSpec],
                        staging_dir: Path) -> PreparedSweep:
        # rendered whatever is missing (a dry run shows it); the launch stops on a blocker
        prepared = slurm.chester_prepare(backend=backend, runs=runs, staging_dir=staging_dir)
        missing = self.missing(backend)
        return attrs.evolve(prepared, blockers=prepared.blockers + missing) if missing \
            else prepared

    @hookimpl
    def chester_submit(self, backend: BackendConfig,
                       prepared: PreparedSweep) -> list[RunHandle]:
        self.check_required(backend)  # the launcher stops before; a direct caller here
        return slurm.chester_submit(backend=backend, prepared=prepared)

    @hookimpl
    def chester_status(self, backend: BackendConfig,
                       handles: Sequence[RunHandle]) -> dict[str, RunStatus]:
        return slurm.chester_status(backend=backend, handles=handles)

    @hookimpl
    def chester_cancel(self, backend: BackendConfig,
                       handles: Sequence[RunHandle]) -> dict[str, bool]:
        return slurm.chester_cancel(backend=backend, handles=handles)

    @hookimpl
    def chester_pull(self, backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                     patterns: PullPatterns) -> list[PullResult]:
        return slurm.chester_pull(backend=backend, handles=handles, dest=dest,
                                  patterns=patterns)

    @hookimpl
    def chester_logs(self, backend: BackendConfig, handle: RunHandle, follow: bool,
                     stream: str, out: TextIO) -> bool:
        return slurm.chester_logs(backend=backend, handle=handle, follow=follow, stream=stream,
                                  out=out)


__all__ = ["Preset"]
