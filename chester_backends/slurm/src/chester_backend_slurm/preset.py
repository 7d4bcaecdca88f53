"""Cluster presets: a backend type that is SLURM with one cluster's defaults.

A preset is the slurm backend's class, :class:`~chester_backend_slurm.plugin.SlurmBackend`,
configured with the cluster's defaults: every hook is the slurm backend's own, only the
options class (its defaults) and the options a user must set differ. A preset
distribution's plugin module is::

    from chester_backend_slurm.preset import Preset

    DEFAULTS = {...}

    class GlBackend(Preset):
        name = "gl"
        summary = "University of Michigan Great Lakes (SLURM)"
        defaults = DEFAULTS
        required = {"account": "your Slurm account; `my_accounts` lists yours"}

    GlOptions = GlBackend.options_cls

with the entry point ``gl = "chester_backend_gl.plugin:GlBackend"`` (the plugin manager
makes its instance). ``Preset("gl", SUMMARY, DEFAULTS, REQUIRED)`` is the same preset as an
instance, for a plugin module that registers one. Values from ``chester.yaml`` — the seed's
per-mode keys included — win over the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from chester.plugin.errors import UserError
from chester.plugin.manager import hookimpl
from chester.plugin.records import BackendConfig, PreparedSweep, RunHandle, RunSpec
from chester_backend_slurm.options import preset_options_cls
from chester_backend_slurm.plugin import SlurmBackend


class Preset(SlurmBackend):
    """A cluster preset: the slurm backend under its own name with the cluster's defaults.

    Subclass it with the class attributes ``name``, ``summary``, ``defaults`` (SlurmOptions
    fields) and ``required`` (options the cluster needs and no default can give: name -> how
    to find its value); the options class is made once per subclass (``options_cls``). Or
    make an instance: ``Preset(name, summary, defaults, required)``."""

    defaults: Mapping[str, Any] = MappingProxyType({})
    required: Mapping[str, str] = MappingProxyType({})

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__ or "defaults" in cls.__dict__:
            cls.options_cls = preset_options_cls(cls.name, cls.defaults)

    def __init__(self, name: str | None = None, summary: str | None = None,
                 defaults: Mapping[str, Any] | None = None,
                 required: Mapping[str, str] | None = None) -> None:
        super().__init__()
        if name is not None:  # the instance form: this one preset
            self.name = name
            self.summary = summary or f"{name} (SLURM)"
            self.defaults = dict(defaults or {})
            self.required = dict(required or {})
            self.options_cls = preset_options_cls(name, self.defaults)

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
    def chester_prepare(self, backend: BackendConfig, runs: Sequence[RunSpec],
                        staging_dir: Path) -> PreparedSweep:
        # rendered whatever is missing (a dry run shows it); the launch stops on a blocker
        prepared = super().chester_prepare(backend=backend, runs=runs, staging_dir=staging_dir)
        missing = self.missing(backend)
        return attrs.evolve(prepared, blockers=prepared.blockers + missing) if missing \
            else prepared

    @hookimpl
    def chester_submit(self, backend: BackendConfig, prepared: PreparedSweep
                       ) -> list[RunHandle]:
        self.check_required(backend)  # the launcher stops before; a direct caller here
        return super().chester_submit(backend=backend, prepared=prepared)


__all__ = ["Preset"]
