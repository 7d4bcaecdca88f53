"""The only code that runs on targets: the worker, the queue runner, the target tool and the
run-folder records they share, what a run's payload unpickles with (``AttrDict``, a
``Command`` and the Hydra grammar it writes overrides with), the functions the conformance
suite launches, and the key/value logger runs may write their metrics with
(:mod:`chester.target.logger`, imported as ``chester.logger``). It imports the standard library, itself and cloudpickle,
nothing else: the runtime zip (:mod:`chester.remote.runtime`) carries this package,
``chester/__init__.py`` and cloudpickle.

``python -m chester.target status|cancel|tail ...`` is the target tool
(:mod:`chester.target.tool`); its functions are also reachable from here, as they were when
``chester.target`` was that module (``from chester.target import probe``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the target
if TYPE_CHECKING:
    from typing import Any

#: the public names of :mod:`chester.target.tool`, imported on first use
_TOOL = frozenset({"DISK_FULL_BYTES", "ORPHAN_GRACE_S", "STATUS_FIELDS", "cancel",
                   "cancel_many", "follow", "main", "probe"})


def __getattr__(name: str) -> Any:
    if name in _TOOL:
        from chester.target import tool

        return getattr(tool, name)
    if name == "to_status":
        # the old module's helper for backends, now launcher side: asked for on a launcher
        # only (this package itself never imports it)
        from chester.plugin.records import RunStatus

        return RunStatus.from_probe
    raise AttributeError(f"module 'chester.target' has no attribute {name!r}")
