"""Logging: structlog, configured only by the CLI or by an explicit :func:`configure` call.

Modules get their logger from :func:`get_logger`, which imports structlog on first use so
that ``import chester`` and quick commands stay fast.
"""

from __future__ import annotations

import sys
from typing import Any

_pending: dict[str, Any] | None = None


class _LazyLogger:
    __slots__ = ("_bound",)

    def __init__(self) -> None:
        self._bound: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._bound is None:
            import structlog

            if _pending is not None:
                configure(**_pending)
            self._bound = structlog.get_logger("chester")
        return getattr(self._bound, name)


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


def configure(*, level: str = "warning", json: bool = False, stream: Any = None) -> None:
    """Route chester's structlog output: pretty on a terminal, JSON lines when asked."""
    import logging

    import structlog

    global _pending
    _pending = None
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.WARNING)),
        logger_factory=lambda *args: _StreamLogger(stream),
        cache_logger_on_first_use=False,
    )
