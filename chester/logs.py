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


def configure(*, level: str = "warning", json: bool = False, stream: Any = None) -> None:
    """Route chester's structlog output: pretty on a terminal, JSON lines when asked."""
    import logging

    import structlog

    global _pending
    _pending = None
    stream = stream or sys.stderr
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.WARNING)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
