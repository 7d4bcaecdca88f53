"""Routing hook calls to the plugin that owns a backend, with retries for network hooks."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import attrs

from chester.plugin import retry
from chester.plugin.errors import HookNotImplementedError, UserError
from chester.plugin.hookspecs import LIFECYCLE_HOOKS, NETWORK_HOOKS
from chester.plugin.manager import ChesterPluginManager, get_plugin_manager
from chester.plugin.records import BackendConfig


class RetryScope:
    """One call of a lifecycle hook through :meth:`Dispatcher.call`, whatever the number of
    attempts it takes: the same object during every attempt of that call, another for the
    next call. A backend that goes on where a failed attempt stopped (``chester_logs``: the
    byte of the log it had written up to) keeps its progress under it
    (:meth:`chester.remote.backend.Backend.log_cursor`); it is dropped with the call."""

    __slots__ = ("hook", "__weakref__")

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def __repr__(self) -> str:
        return f"<chester retry scope of {self.hook} at {id(self):#x}>"


_SCOPE: ContextVar[RetryScope | None] = ContextVar("chester_retry_scope", default=None)


def retry_scope() -> RetryScope | None:
    """The :class:`RetryScope` of the hook call running now, or None outside one (a hook
    called directly, not through a dispatcher: no attempt of it is ever repeated)."""
    return _SCOPE.get()


@attrs.define
class Dispatcher:
    """Calls lifecycle hooks on exactly one backend's plugin.

    Other backend plugins are left out of the call (pluggy ``subset_hook_caller``), while
    plugins that provide no backend (observers, wrappers) still see it.
    """

    _manager: ChesterPluginManager = attrs.field(factory=get_plugin_manager)
    sleep: Callable[[float], None] = time.sleep
    attempts: int = retry.DEFAULT_ATTEMPTS
    max_delay_s: float = retry.DEFAULT_MAX_DELAY_S
    _callers: dict[tuple[str, str], Any] = attrs.Factory(dict)

    @property
    def manager(self) -> ChesterPluginManager:
        return self._manager

    def _caller(self, backend_type: str, hook: str) -> Any:
        key = (backend_type, hook)
        if key not in self._callers:
            entry = self._manager.get_backend(backend_type)
            others = {e.plugin for e in self._manager.backends().values()
                      if e.plugin is not entry.plugin}
            self._callers[key] = self._manager.pm.subset_hook_caller(hook, remove_plugins=others)
        return self._callers[key]

    def call(self, hook: str, backend: BackendConfig, **kwargs: Any) -> Any:
        """Call ``hook`` on ``backend``'s plugin; retry network hooks per DESIGN rules.
        Every attempt of one call runs in one :class:`RetryScope` (:func:`retry_scope`)."""
        if hook not in LIFECYCLE_HOOKS:
            raise ValueError(f"{hook} is not a lifecycle hook")
        if backend.members:
            return self._pool_call(hook, backend, kwargs)
        caller = self._caller(backend.type, hook)
        scope = _SCOPE.set(RetryScope(hook))
        try:
            return self._call(hook, caller, backend, kwargs)
        finally:
            _SCOPE.reset(scope)

    def _pool_call(self, hook: str, pool: BackendConfig, kwargs: dict[str, Any]) -> Any:
        """A hook on a pool's runs, called on each run's member (its handle names it: the
        launcher records a pool run's handle under its member's name) and the answers
        merged. Runs are prepared and submitted member by member by the launcher
        (:mod:`chester.launcher.placing`), never through the pool itself."""
        members = {m.name: m for m in pool.members}

        def member_of(handle: Any) -> BackendConfig:
            m = members.get(handle.backend)
            if m is None:
                raise UserError(
                    f"run {handle.token} of pool {pool.name!r} is on {handle.backend!r}, "
                    f"which is no longer one of its members ({', '.join(members)}); add it "
                    "back to the pool's members to reach that run")
            return m

        if "handle" in kwargs:
            return self.call(hook, member_of(kwargs["handle"]), **kwargs)
        if "handles" not in kwargs:
            raise UserError(f"{hook} on pool {pool.name!r}: a pool's runs are placed and "
                            "submitted on its members by chester.launch, not on the pool")
        groups: dict[str, list[Any]] = {}
        for h in kwargs["handles"]:
            groups.setdefault(member_of(h).name, []).append(h)
        answers = [self.call(hook, members[name], **{**kwargs, "handles": hs})
                   for name, hs in groups.items()]
        if hook == "chester_pull":
            return [res for a in answers for res in a]
        if hook == "chester_spend":
            from chester.plugin.records import Spend

            return sum(answers, Spend())
        merged: dict[str, Any] = {}
        for a in answers:
            merged.update(a)
        return merged

    def _call(self, hook: str, caller: Any, backend: BackendConfig,
              kwargs: dict[str, Any]) -> Any:
        def once() -> Any:
            result = caller(backend=backend, **kwargs)
            if result is None:
                raise HookNotImplementedError(backend.name, hook)
            return result

        if hook not in NETWORK_HOOKS:
            return once()
        retry_on: Any = retry.TransientBackendError
        if hook == "chester_submit":
            caps = self._manager.get_backend(backend.type).spec.capabilities
            retry_on = retry.submit_retry_on(caps.idempotent_submit)
        # the first attempt runs bare: the retry machinery (tenacity) is set up only when it
        # fails with an error worth retrying, and then replays that failure as its attempt 1
        started = time.monotonic()
        try:
            return once()
        except retry_on as exc:
            if self.attempts <= 1:
                raise
            first: list[BaseException] = [exc]
        policy = retry.network_retry(
            op=hook, backend=backend.name, retry_on=retry_on, attempts=self.attempts,
            max_delay_s=max(0.0, self.max_delay_s - (time.monotonic() - started)),
            sleep=self.sleep)

        def replay() -> Any:
            if first:
                raise first.pop()
            return once()

        return policy(replay)


__all__ = ["Dispatcher", "RetryScope", "retry_scope"]
