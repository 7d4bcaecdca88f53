"""Plugin manager: entry-point discovery, plugin records and the backend registry.

Nothing happens at import time; :func:`get_plugin_manager` builds (and caches) the manager.
"""

from __future__ import annotations

import sys
from types import FunctionType, MethodType, ModuleType
from typing import Any

import attrs
import pluggy

from chester.logs import get_logger
from chester.plugin.entrypoints import (  # noqa: F401  (their earlier home)
    _EP_VALUE,
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    EntryPoint,
    _blocked_names,
    _entry_points,
    _group,
    _name_version,
    _scan_entry_points,
)
from chester.plugin.errors import PluginConflictError, UnknownBackendError
from chester.plugin.hookspecs import PROJECT, ChesterSpecs
from chester.plugin.records import BackendSpec

#: The one public marker for hook implementations.
hookimpl = pluggy.HookimplMarker(PROJECT)


log = get_logger()


@attrs.frozen(kw_only=True)
class PluginRecord:
    """What ``chester plugins list`` shows about one plugin."""

    name: str
    distribution: str | None
    version: str | None
    module: str
    status: str  # active | blocked | error
    backends: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    error: str | None = None
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d.pop("traceback")
        d["backends"] = list(self.backends)
        d["hooks"] = list(self.hooks)
        return d


@attrs.frozen(kw_only=True)
class BackendEntry:
    """A backend type with the plugin and distribution that provide it."""

    spec: BackendSpec
    plugin: Any
    plugin_name: str
    distribution: str | None


@attrs.define
class ChesterPluginManager:
    """The pluggy manager plus chester's own records of what was loaded."""

    pm: pluggy.PluginManager
    records: dict[str, PluginRecord] = attrs.Factory(dict)
    _backends: dict[str, BackendEntry] | None = None
    _conflicts: dict[str, list[BackendEntry]] = attrs.Factory(dict)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(self, plugin: object, name: str, *, distribution: str | None = None,
                 version: str | None = None) -> None:
        """Register a plugin object by hand (tests, scripts): a module, an instance (a
        backend instance built with what the test needs), or a class (one instance of it
        is made, as for an entry point)."""
        plugin = instantiate(plugin)
        self.pm.register(plugin, name=name)
        self.records[name] = self._record_for(plugin, name, distribution, version, "active")
        self._backends = None

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.records.pop(name, None)
        self._backends = None

    def _record_for(self, plugin: object, name: str, distribution: str | None,
                    version: str | None, status: str) -> PluginRecord:
        hooks = tuple(sorted(h.name for h in (self.pm.get_hookcallers(plugin) or [])))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        return PluginRecord(name=name, distribution=distribution, version=version,
                            module=module, status=status, hooks=hooks)

    # -- backends -------------------------------------------------------------------------
    def _collect(self) -> dict[str, BackendEntry]:
        if self._backends is not None:
            return self._backends
        found: dict[str, list[BackendEntry]] = {}
        for impl in self.pm.hook.chester_backends.get_hookimpls():
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            rec = self.records.get(plugin_name)
            dist = rec.distribution if rec else None
            try:
                specs: Any = impl.function() or ()
            except Exception as exc:  # a plugin's own bug must not take the others down
                self._mark_error(plugin_name, exc)
                continue
            for spec in specs:
                found.setdefault(spec.name, []).append(
                    BackendEntry(spec=spec, plugin=impl.plugin, plugin_name=plugin_name,
                                 distribution=dist)
                )
        backends: dict[str, BackendEntry] = {}
        self._conflicts = {}
        for name, entries in found.items():
            if len(entries) > 1:
                self._conflicts[name] = entries
            backends[name] = entries[0]
        for name, rec in list(self.records.items()):
            names = tuple(sorted(n for n, e in backends.items() if e.plugin_name == name))
            self.records[name] = attrs.evolve(rec, backends=names)
        self._backends = backends
        return backends

    def _mark_error(self, plugin_name: str, exc: BaseException) -> None:
        rec = self.records.get(plugin_name)
        if rec is not None:
            self.records[plugin_name] = attrs.evolve(
                rec, status="error", error=f"{type(exc).__name__}: {exc}",
                traceback=_format(exc))

    def backends(self) -> dict[str, BackendEntry]:
        """All backend types by name (conflicting names included, see :meth:`get_backend`)."""
        return dict(self._collect())

    def get_backend(self, type_name: str) -> BackendEntry:
        """The entry for one backend type, or a clear error."""
        backends = self._collect()
        if type_name in self._conflicts:
            owners = ", ".join(
                f"{e.distribution or e.plugin_name} (plugin {e.plugin_name!r})"
                for e in self._conflicts[type_name]
            )
            raise PluginConflictError(
                f"backend {type_name!r} is provided by more than one plugin: {owners}; "
                f"uninstall one or block it with {DISABLE_ENV}=<plugin name>"
            )
        if type_name not in backends:
            raise UnknownBackendError(unknown_backend_message(type_name, sorted(backends),
                                                              self.records.get(type_name)))
        return backends[type_name]

    def conflicts(self) -> dict[str, list[BackendEntry]]:
        self._collect()
        return dict(self._conflicts)


#: The backend distributions this project publishes (chester-backend-<type>): an unknown
#: type suggests a package only when it is one of these, never a name that does not exist.
KNOWN_BACKENDS = ("autobot", "ec2", "gl", "local", "psc", "satori", "seuss", "slurm", "ssh")


def unknown_backend_message(type_name: str, installed: list[str],
                            record: PluginRecord | None = None,
                            configured: list[str] | None = None) -> str:
    """One line: what is installed, the nearest name ("did you mean"), and which package to
    install when the type is one of chester's own backends (:data:`KNOWN_BACKENDS`)."""
    if record is not None and record.status == "error":
        return (f"backend {type_name!r}: its plugin failed to load ({record.error}); "
                f"reinstall its package (pip install --force-reinstall "
                f"{record.distribution or 'chester-backend-' + type_name})")
    if record is not None and record.status == "blocked":
        return f"backend {type_name!r} is blocked by {DISABLE_ENV}"
    import difflib

    have = ", ".join(installed) if installed else "none"
    names = list(dict.fromkeys([*(configured or []), *installed, *KNOWN_BACKENDS]))
    close = difflib.get_close_matches(type_name, names, n=1, cutoff=0.6)
    msg = f"unknown backend type {type_name!r} (installed: {have})"
    if close and close[0] != type_name:
        msg += f"; did you mean {close[0]!r}?"
        if close[0] in KNOWN_BACKENDS and close[0] not in installed \
                and close[0] not in (configured or []):
            msg += f" (install it with: pip install chester-backend-{close[0]})"
    elif type_name in KNOWN_BACKENDS:
        msg += f"; install it with: pip install chester-backend-{type_name}"
    else:
        msg += ("; a backend of another type comes from its plugin's package (see "
                "`chester plugins list`), or name a configured backend")
    return msg


def _format(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


class _LazyModule(ModuleType):
    """Stands for a module until one of its attributes is read, then imports it and hands
    out the real module's attributes. Looking at the stand-in itself (its type, its
    ``__class__``, missing dunders: what pluggy's hook discovery and ``inspect`` do) imports
    nothing."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        real = self.__dict__.get("_chester_module")
        if real is None:
            import importlib

            real = self.__dict__["_chester_module"] = importlib.import_module(self.__name__)
        return getattr(real, attr)


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, imported on first attribute access.

    For plugin modules: the entry point is imported whenever chester starts (``chester
    plugins list`` included), so heavy helpers the hooks need can wait until a hook runs::

        render = lazy_module("chester_backend_foo.render")
    """
    if name in sys.modules:
        return sys.modules[name]
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return _LazyModule(name)


def _marked_names(plugin: Any, marker: str) -> set[str] | None:
    """The names under which ``plugin`` (an instance of a class) may hold a hook
    implementation, a superset of those pluggy finds: in its own ``__dict__`` and in every
    class of its MRO, each function that carries pluggy's ``marker`` and each static, class
    or bound method (all pluggy can call a hook), and every slot. None for a class or a
    module (pluggy looks at those in more places)."""
    if isinstance(plugin, (type, ModuleType)):
        return None
    try:
        own = object.__getattribute__(plugin, "__dict__")
    except AttributeError:
        own = {}
    mro = type.__dict__["__mro__"].__get__(type(plugin))
    names: set[str] = set()
    for d in (own if isinstance(own, dict) else {}, *(vars(c) for c in mro)):
        for name, value in d.items():
            if isinstance(value, FunctionType):
                if marker in value.__dict__:
                    names.add(name)
            elif isinstance(value, (staticmethod, classmethod, MethodType)):
                names.add(name)
    for c in mro:
        slots = vars(c).get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    return names


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager; registering a plugin object looks closely (pluggy's static lookup,
    some 3 ms for chester's own plugins) only at the names that can be hooks: see
    :func:`_marked_names`. What is registered is the same."""

    _names: set[str] | None = None

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        self._names = _marked_names(plugin, self.project_name + "_impl")
        try:
            return super().register(plugin, name)
        finally:
            self._names = None

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if self._names is not None and name not in self._names:
            return None
        return super().parse_hookimpl_opts(plugin, name)


def instantiate(plugin: Any) -> Any:
    """What is registered for an entry point's object: a class (a backend class, see
    :mod:`chester.remote.backend`) becomes one instance of it, made here, so every plugin
    manager holds its own backend instances and their state; a module or an instance is
    registered as it is."""
    return plugin() if isinstance(plugin, type) else plugin


def build_plugin_manager(*, load_entry_points: bool = True) -> ChesterPluginManager:
    """Make a fresh plugin manager and load every installed plugin.

    An entry point naming a class registers a new instance of it (:func:`instantiate`):
    each manager has its own backend instances. A plugin that fails to import (or whose
    class cannot be made) is recorded with status ``error``; the others still load.
    Plugins named in ``CHESTER_DISABLE_PLUGINS`` (comma-separated) are recorded as
    ``blocked`` and not imported.
    """
    pm = _PluginManager(PROJECT)
    pm.add_hookspecs(ChesterSpecs)
    cpm = ChesterPluginManager(pm=pm)
    if not load_entry_points:  # an empty manager (tests fill it): not even the core's types
        return cpm
    _register_core(cpm)
    blocked = _blocked_names()
    for ep in _entry_points():
        dist, version = _name_version(ep)
        if ep.name in blocked:
            pm.set_blocked(ep.name)
            cpm.records[ep.name] = PluginRecord(name=ep.name, distribution=dist, version=version,
                                                module=ep.value, status="blocked")
            continue
        try:
            plugin = instantiate(ep.load())
            pm.register(plugin, name=ep.name)
        except Exception as exc:
            log.warning("plugin_load_failed", plugin=ep.name, error=str(exc))
            cpm.records[ep.name] = PluginRecord(
                name=ep.name, distribution=dist, version=version, module=ep.value,
                status="error", error=f"{type(exc).__name__}: {exc}",
                traceback=_format(exc))
            continue
        cpm.records[ep.name] = cpm._record_for(plugin, ep.name, dist, version, "active")
    pm.check_pending()
    return cpm


def _register_core(cpm: ChesterPluginManager) -> None:
    """The backend types the core itself provides: ``pool`` (:mod:`chester.plugin.pool`)."""
    import chester
    from chester.plugin.pool import PoolPlugin

    plugin = PoolPlugin()
    cpm.pm.register(plugin, name="chester.pool")
    cpm.records["chester.pool"] = cpm._record_for(plugin, "chester.pool", "chester-ml",
                                                  chester.__version__, "active")


_manager: ChesterPluginManager | None = None


def get_plugin_manager() -> ChesterPluginManager:
    """The process-wide plugin manager, built on first use."""
    global _manager
    if _manager is None:
        _manager = build_plugin_manager()
    return _manager


def set_plugin_manager(manager: ChesterPluginManager | None) -> None:
    """Replace (or with ``None``, reset) the process-wide manager; for tests and embedding."""
    global _manager
    _manager = manager
