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

The modules live in subpackages (``chester.target``, ``chester.variants``,
``chester.plugin``, ``chester.launcher``, ``chester.compat``, ``chester.remote``); the
names they had before (``chester.types``, ``chester.worker``, ...) still import, as the
very same module objects, through the finder below. This file travels in the target
runtime too: it imports nothing but the standard library.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

__version__ = "0.3.0"

_LAZY = {
    "launch": ("chester.launcher.launching", "launch"),
    "relaunch": ("chester.launcher.launching", "relaunch"),
    "sweep": ("chester.launcher.sweeps", "sweep"),
    "Sweep": ("chester.launcher.sweeps", "Sweep"),
    "Run": ("chester.launcher.sweeps", "Run"),
    "VariantGenerator": ("chester.variants.generator", "VariantGenerator"),
    "variant": ("chester.variants.generator", "variant"),
    "AttrDict": ("chester.target.attrdict", "AttrDict"),
    "hookimpl": ("chester.plugin.manager", "hookimpl"),
    "State": ("chester.plugin.records", "State"),
    "run_experiment_lite": ("chester.compat.run_exp", "run_experiment_lite"),
    "preempted": ("chester.target.worker", "preempted"),
    "requeue": ("chester.target.worker", "requeue"),
    "attempt": ("chester.target.worker", "attempt"),
}

__all__ = sorted(_LAZY) + ["__version__"]

#: A module's name before the modules moved into subpackages -> its name now. Importing
#: the old name gives the module of the new one (``sys.modules[old] is sys.modules[new]``),
#: so imports, pickles (``chester.command.Command``) and ``python -m chester.worker`` made
#: for earlier versions keep working. (``chester.target``, ``chester.variants`` and
#: ``chester.launcher`` are packages now that keep the old modules' public names.)
_MOVED = {
    "chester.attrdict": "chester.target.attrdict",
    "chester.command": "chester.target.command",
    "chester.hydra_grammar": "chester.target.hydra_grammar",
    "chester.rundir": "chester.target.rundir",
    "chester.runner": "chester.target.runner",
    "chester.sweepspec": "chester.target.sweepspec",
    "chester.testing_functions": "chester.target.testing_functions",
    "chester.worker": "chester.target.worker",
    "chester.fingerprint": "chester.variants.fingerprint",
    "chester.naming": "chester.variants.naming",
    "chester.overrides": "chester.variants.overrides",
    "chester.dispatch": "chester.plugin.dispatch",
    "chester.errors": "chester.plugin.errors",
    "chester.hookspecs": "chester.plugin.hookspecs",
    "chester.plugins": "chester.plugin.manager",
    "chester.retry": "chester.plugin.retry",
    "chester.scaffold": "chester.plugin.scaffold",
    "chester.testing": "chester.plugin.testing",
    "chester.types": "chester.plugin.records",
    "chester.monitor": "chester.launcher.monitor",
    "chester.sweeps": "chester.launcher.sweeps",
    "chester.auto_pull": "chester.compat.auto_pull",
    "chester.run_exp": "chester.compat.run_exp",
    "chester.sync": "chester.remote.sync",
}


class _MovedModuleLoader:
    """Loads an old name by importing the new one and handing out that very module."""

    def __init__(self, new: str, real: Any) -> None:
        self.new, self.real = new, real  # real: the new module's spec

    def create_module(self, spec: Any) -> Any:
        module = import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self.spec  # the import system set the old name's spec on it

    # what runpy (``python -m OLD``) and tracebacks ask a loader
    def get_code(self, _name: str) -> Any:
        return self.real.loader.get_code(self.new)

    def get_source(self, _name: str) -> Any:
        return self.real.loader.get_source(self.new)

    def get_filename(self, _name: str) -> Any:
        return self.real.origin

    def is_package(self, _name: str) -> bool:
        return False


class _MovedModuleFinder:
    """A ``sys.meta_path`` finder for the names in ``_MOVED`` only (one dict lookup for any
    other import)."""

    _chester_moved = True

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
        new = _MOVED.get(name)
        if new is None:
            return None
        from importlib.machinery import ModuleSpec
        from importlib.util import find_spec

        real = find_spec(new)
        if real is None or real.loader is None:
            return None
        spec = ModuleSpec(name, _MovedModuleLoader(new, real),  # type: ignore[arg-type]
                          origin=real.origin)
        spec.has_location = real.has_location
        return spec


# one finder, also when this module is executed again (importlib.reload, a test's re-import)
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "_chester_moved", False)]
sys.meta_path.insert(0, _MovedModuleFinder())


#: submodules reachable as attributes without importing them first (``chester.logs.configure``)
_SUBMODULES = frozenset({"logs", "config", *(old.rpartition(".")[2] for old in _MOVED)})


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
