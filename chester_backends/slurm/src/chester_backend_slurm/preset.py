"""Cluster presets: a backend type that is SLURM with one cluster's defaults.

A preset distribution's plugin module is three lines::

    from chester_backend_slurm.plugin import (chester_cancel, chester_logs, chester_prepare,
                                              chester_pull, chester_status, chester_submit)
    from chester_backend_slurm.preset import preset
    GlOptions, chester_backends = preset("gl", "Great Lakes (UMich)", {...defaults...})

The lifecycle hooks are the slurm backend's own functions; only the options class (its
defaults) differs. Values from ``chester.yaml`` — the seed's per-mode keys included — win
over the defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chester.plugins import hookimpl
from chester.types import BackendSpec
from chester_backend_slurm.options import preset_options_cls
from chester_backend_slurm.plugin import backend_spec


def preset(name: str, summary: str, defaults: Mapping[str, Any]
           ) -> tuple[type, Callable[[], list[BackendSpec]]]:
    """(options class, ``chester_backends`` hook implementation) of a cluster preset."""
    options_cls = preset_options_cls(name, defaults)
    spec = backend_spec(name, summary, options_cls)

    @hookimpl
    def chester_backends() -> list[BackendSpec]:
        return [spec]

    return options_cls, chester_backends
