"""chester: launch ML parameter sweeps anywhere, track every run, bring the results home.

Quick start::

    import chester
    from chester import VariantGenerator

    def train(variant, log_dir, exp_name):
        ...

    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.01])
    sweep = chester.launch(train, vg, backend="local", exp_prefix="lr-sweep")
    sweep.wait()

Attributes are imported lazily so that ``import chester`` (and the worker on every
target) stays cheap.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.3.0"

_LAZY = {
    "launch": ("chester.launcher", "launch"),
    "relaunch": ("chester.launcher", "relaunch"),
    "sweep": ("chester.sweeps", "sweep"),
    "Sweep": ("chester.sweeps", "Sweep"),
    "Run": ("chester.sweeps", "Run"),
    "VariantGenerator": ("chester.variants", "VariantGenerator"),
    "variant": ("chester.variants", "variant"),
    "AttrDict": ("chester.attrdict", "AttrDict"),
    "hookimpl": ("chester.plugins", "hookimpl"),
    "State": ("chester.types", "State"),
    "run_experiment_lite": ("chester.run_exp", "run_experiment_lite"),
    "preempted": ("chester.worker", "preempted"),
    "requeue": ("chester.worker", "requeue"),
    "attempt": ("chester.worker", "attempt"),
}

__all__ = sorted(_LAZY) + ["__version__"]


#: submodules reachable as attributes without importing them first (``chester.logs.configure``)
_SUBMODULES = frozenset({"logs", "config", "testing"})


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return import_module(f"chester.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        if name == "sweep" and not callable(value):  # pragma: no cover
            raise AttributeError(name)
        return value
    raise AttributeError(f"module 'chester' has no attribute {name!r}")
