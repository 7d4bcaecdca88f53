# ruff: noqa: UP006, UP045  (OmegaConf reads typing.Dict / Optional on every supported version)
"""The ``hydra/launcher=chester`` config (Hydra imports every module of its plugins).

No ``from __future__ import annotations`` here: OmegaConf reads the annotations at runtime
and Hydra loads this module without registering it in ``sys.modules`` first."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035

from hydra.core.config_store import ConfigStore


@dataclass
class ChesterLauncherConf:
    _target_: str = "hydra_plugins.chester_launcher.launcher.ChesterLauncher"
    #: a chester backend: ``local``, a ``backends:`` entry of chester.yaml, an installed type
    backend: str = "local"
    #: the chester sweep's name (``chester status NAME``); default: the Hydra job's name
    exp_prefix: Optional[str] = None
    #: passed to the backend (e.g. ``gpus``, ``time``, ``partition`` on SLURM)
    resources: Dict[str, Any] = field(default_factory=dict)
    #: environment variables of every job
    env: Dict[str, str] = field(default_factory=dict)
    #: give up waiting after this many seconds (None: no limit)
    timeout: Optional[float] = None
    #: seconds between status polls (None: the backend's own poll_interval)
    poll_interval: Optional[float] = None


ConfigStore.instance().store(group="hydra/launcher", name="chester", node=ChesterLauncherConf,
                             provider="chester_launcher")
