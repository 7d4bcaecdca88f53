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

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` costs more to import than the rest of this file
    from typing import Any
del TYPE_CHECKING

__version__ = "0.3.0"

_LAZY = {
    "launch": ("chester.launcher.launching", "launch"),
    "relaunch": ("chester.launcher.relaunching", "relaunch"),
    "Resume": ("chester.launcher.request", "Resume"),
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
    "chester.logger": "chester.target.logger",  # the earlier chester's key/value logger
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


def _moved_spec(name: str, new: str) -> Any:
    """The spec of an old module name: loading it imports the new module and hands out that
    very object; runpy (``python -m OLD``) gets the new module's code from it."""
    from importlib.machinery import ModuleSpec
    from importlib.util import find_spec

    try:
        real = find_spec(new)
    except ModuleNotFoundError:  # not here (an older chester's flat module may be)
        return None
    if real is None or real.loader is None:
        return None

    class Loader:
        def create_module(self, spec: Any) -> Any:
            self.module = import_module(new)
            self.spec = self.module.__spec__
            return self.module

        def exec_module(self, module: Any) -> None:
            module.__spec__ = self.spec  # the import system set the old name's spec on it

        def get_code(self, _name: str) -> Any:  # what runpy runs for `python -m OLD`
            return real.loader.get_code(new)  # type: ignore[union-attr]

    spec = ModuleSpec(name, Loader(), origin=real.origin)  # type: ignore[arg-type]
    spec.has_location = real.has_location
    return spec


def _find_moved(name: str, path: Any = None, target: Any = None) -> Any:
    """A ``sys.meta_path`` finder's ``find_spec`` for the old names only: one dict lookup
    for any other import."""
    new = _MOVED.get(name)
    return None if new is None else _moved_spec(name, new)


# One finder first on sys.meta_path, also when this file runs again (importlib.reload, a
# test's fresh import). A finder is any object with find_spec: a SimpleNamespace (the type
# of sys.implementation) holding the function costs no class to build at every start.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "chester_moved", False)]
_namespace: Any = type(sys.implementation)  # types.SimpleNamespace, without importing types
sys.meta_path.insert(0, _namespace(find_spec=_find_moved, chester_moved=True))
del _namespace

_zipimport = sys.modules.get("zipimport")  # there whenever this file came from a zip
if _zipimport is not None and isinstance(__spec__.loader, _zipimport.zipimporter):
    # The target runtime (chester-<digest>.pyz) holds chester.target only. A run that
    # imports the rest of chester (a module of an installed package that imports
    # chester.config at its top) finds it in a chester installed beside, if any: that
    # package's folder comes after the runtime's.
    import os

    for _entry in sys.path:
        _dir = os.path.join(_entry or ".", "chester")
        if _dir not in __path__ and os.path.isfile(os.path.join(_dir, "__init__.py")):
            __path__.append(_dir)


#: submodules reachable as attributes without importing them first (``chester.logs.configure``;
#: the old names of moved modules, ``chester.sweeps``, as well)
_SUBMODULES = frozenset({"logs", "config"})


def __getattr__(name: str) -> object:
    if name in _SUBMODULES or f"chester.{name}" in _MOVED:
        return import_module(f"chester.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        if name == "sweep" and not callable(value):  # pragma: no cover
            raise AttributeError(name)
        return value
    raise AttributeError(f"module 'chester' has no attribute {name!r}")
