"""The launcher side: :func:`launch` (:mod:`.launching`: a validated
:class:`~.request.LaunchRequest` carried out in named steps), what a launch runs
(:mod:`.identity`), the run folders' payloads (:mod:`.payloads`), :func:`relaunch`
(:mod:`.relaunching`), the :class:`~chester.launcher.sweeps.Sweep` handle (:mod:`.sweeps`)
and waiting for sweeps (:mod:`.monitor`).

The names ``chester.launcher`` had as a module are read from :mod:`.launching` on first
use, so importing :mod:`.sweeps` alone (``chester status``) does not load the launch code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chester.launcher.launching import (
        FAILED_STATES,
        RETRY_STATES,
        SUBMIT_FAILED,
        LaunchRequest,
        Resume,
        fingerprint,
        launch,
        legacy_fingerprint,
        relaunch,
        run_request,
        write_run_folder,
        write_run_folders,
        write_sweep_spec,
    )

__all__ = ["FAILED_STATES", "RETRY_STATES", "SUBMIT_FAILED", "LaunchRequest", "Resume",
           "fingerprint", "launch", "legacy_fingerprint", "relaunch", "run_request",
           "write_run_folder", "write_run_folders", "write_sweep_spec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from chester.launcher import launching

        return getattr(launching, name)
    raise AttributeError(f"module 'chester.launcher' has no attribute {name!r}")
