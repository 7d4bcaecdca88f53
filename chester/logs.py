"""Logging: structlog, configured only by the CLI or by an explicit :func:`configure` call.

Modules get their logger from :func:`get_logger`. Until someone configures logging (the CLI,
:func:`configure`, or the application's own ``structlog.configure``), chester logs as the
CLI does by default: warnings and errors to stderr, the rest dropped without importing
structlog, so that ``import chester``, quick commands and a script's ``chester.launch`` stay
fast. ``chester.logs.configure(level="info")`` shows what chester does step by step.
"""

from __future__ import annotations

import sys
from typing import Any

_pending: dict[str, Any] | None = None
_configured = False
_default: Any = None

#: methods below the default threshold (warning)
_QUIET = frozenset({"debug", "info", "msg", "log"})


def _drop(*_args: Any, **_kw: Any) -> None:
    return None


def _app_configured() -> bool:
    mod = sys.modules.get("structlog")
    return mod is not None and bool(mod.is_configured())


class _LazyLogger:
    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if _pending is not None:
            if name in _QUIET and _quiet_level(_pending) and not _app_configured():
                return _drop  # below the pending threshold: no need to set structlog up yet
            configure(**_pending)
        if _configured or _app_configured():
            import structlog

            return getattr(structlog.get_logger("chester"), name)
        if name in _QUIET:
            return _drop
        return getattr(_default_logger(), name)


def _quiet_level(kw: dict[str, Any]) -> bool:
    """The pending configuration drops debug and info lines."""
    return str(kw.get("level", "warning")).lower() in ("warning", "warn", "error", "critical")


def _default_logger() -> Any:
    """chester's own logger when nobody configured logging: warnings up, to stderr (it
    leaves structlog's global configuration alone)."""
    global _default
    if _default is None:
        import logging

        import structlog

        _default = structlog.wrap_logger(
            _StreamLogger(), processors=_processors(structlog, json=False, stream=None),
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return _default


def configure_lazily(**kw: Any) -> None:
    """Like :func:`configure`, applied when chester first logs (keeps quick commands quick)."""
    global _pending
    _pending = kw


def get_logger() -> Any:
    """A structlog logger, created lazily."""
    return _LazyLogger()


class _StreamLogger:
    """Writes each line to the stream current at the time (``sys.stderr`` by default), so a
    replaced or closed stream (tests, redirections) never breaks logging later."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr
        try:
            print(message, file=stream, flush=True)
        except ValueError:  # the stream was closed
            pass

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


def _processors(structlog: Any, *, json: bool, stream: Any) -> list[Any]:
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    return [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"), renderer]


def configure(*, level: str = "warning", json: bool = False, stream: Any = None) -> None:
    """Route chester's structlog output: pretty on a terminal, JSON lines when asked."""
    import logging

    import structlog

    global _pending, _configured
    _pending = None
    _configured = True
    structlog.configure(
        processors=_processors(structlog, json=json, stream=stream),
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.WARNING)),
        logger_factory=lambda *args: _StreamLogger(stream),
        cache_logger_on_first_use=False,
    )
