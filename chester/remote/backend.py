"""The base of chester's backend plugins: a backend is a class, registered as an instance.

pluggy takes a class instance as a plugin: its methods marked with
:data:`chester.hookimpl` are the hook implementations. The entry point of a backend
distribution names its class (``ssh = "chester_backend_ssh.plugin:SSHBackend"``); the
plugin manager makes one instance of it per manager (one per process for the ``chester``
command; a test builds its own). What a backend keeps between calls — a scheduler's pacing,
caches, clients, where a log copy has got to — lives on that instance, never in module
globals::

    class FooBackend(Backend):
        name = "foo"

        def spec(self) -> BackendSpec:
            return BackendSpec(name=self.name, summary="runs on Foo", options_cls=FooOptions)

        @hookimpl
        def chester_status(self, backend, handles):
            ...

:class:`chester.remote.hosted.HostedShellBackend` is the base of backends that reach one
login host over SSH (ssh, autobot). A backend may still be a module of plain functions
marked with ``hookimpl`` (its entry point names the module); it then keeps its own state.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from chester.plugin.manager import hookimpl

if TYPE_CHECKING:
    from chester.plugin.records import BackendConfig, BackendSpec, RunHandle, RunStatus
    from chester.remote.follow import LogCursor


class Backend:
    """What every backend class shares: its spec(s) as the ``chester_backends`` hook, a
    lock for its state, and where each ``chester_logs`` call has got to in its log
    (:meth:`log_cursor`), so that a retried call goes on from that byte.

    Subclasses set :attr:`name` and implement :meth:`spec` (or override
    ``chester_backends`` to provide several types), and the lifecycle hooks they support,
    as methods marked with :data:`chester.hookimpl`. Hook methods take no default
    arguments. An instance must be cheap to make (``chester plugins list`` makes one of
    every backend): open clients and connections when a hook first needs them."""

    #: the backend type (entry-point name) this class provides
    name: str = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cursors: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], LogCursor]] = \
            weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<chester backend {self.name or type(self).__name__!r}>"

    def spec(self) -> BackendSpec:
        """The backend type's spec: name, summary, options class, capabilities."""
        raise NotImplementedError(f"{type(self).__name__} must define spec()")

    @hookimpl
    def chester_backends(self) -> Sequence[BackendSpec]:
        return [self.spec()]

    def watch_ends(self, backend: BackendConfig, handles: Sequence[RunHandle],
                   sink: Callable[[str, RunStatus], None]) -> Any:
        """While :meth:`chester.Sweep.wait` waits on ``handles``: something that hands each
        run's final status to ``sink(token, status)`` (from any thread) as soon as the target
        records it, with a ``close()`` that ends it, an ``alive`` flag and, optionally, a
        ``failed`` flag (it ended with an error: the wait does not start it again); or None
        (this default): the wait sees ends at its polls only. Never asks a scheduler."""
        return None

    def log_cursor(self, handle: RunHandle, stream: str, out: TextIO) -> LogCursor:
        """Where this ``chester_logs`` call has got to in the run's log: a
        :class:`~chester.remote.follow.LogCursor` writing to ``out``. Every attempt of one
        call through the dispatcher (:func:`chester.plugin.dispatch.retry_scope`) gets the
        same cursor, so an attempt after a dropped link goes on from the byte the last one
        wrote up to; the next call starts again at 0. Call :meth:`LogCursor.close` when the
        log is over."""
        from chester.plugin.dispatch import retry_scope
        from chester.remote.follow import LogCursor

        scope = retry_scope()
        if scope is None:
            return LogCursor(out)
        with self._lock:
            cursors = self._cursors.setdefault(scope, {})
            cur = cursors.get((handle.token, stream))
            if cur is None or cur.out is not out:
                cur = cursors[(handle.token, stream)] = LogCursor(out)
            return cur


def hook_function(cls: type[Backend], name: str, module: str) -> Any:
    """For a backend module's ``__getattr__``: its hooks under the module-level names they
    had when the backend was a module of functions (``chester_backend_ssh.plugin.
    chester_prepare(backend=..., ...)``). Each call runs on a new instance of ``cls``, so
    nothing is kept from one call to the next; a plugin manager's own instance keeps it."""
    import functools

    method = getattr(cls, name, None) if name.startswith("chester_") else None
    if method is None or not callable(method):
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    @functools.wraps(method, updated=())
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(cls(), name)(*args, **kwargs)

    return call


__all__ = ["Backend", "hook_function"]
