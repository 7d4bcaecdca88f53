"""Retry policies for calls that cross a network (tenacity)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chester.logs import get_logger
from chester.plugin.errors import ConnectError, TransientBackendError

if TYPE_CHECKING:
    import tenacity

log = get_logger()

DEFAULT_ATTEMPTS = 5
DEFAULT_MAX_DELAY_S = 120.0


def network_retry(
    *,
    op: str,
    backend: str | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = TransientBackendError,
    attempts: int = DEFAULT_ATTEMPTS,
    max_delay_s: float = DEFAULT_MAX_DELAY_S,
    initial_wait_s: float = 1.0,
    max_wait_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tenacity.Retrying:
    """A tenacity policy: exponential backoff with jitter, bounded in attempts and time.

    Only ``retry_on`` errors are retried; the last one is re-raised as it was. Each retry is
    logged as ``retrying`` with the operation, attempt, sleep and error.
    """
    import tenacity

    def _before_sleep(rs: tenacity.RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        log.warning(
            "retrying", op=op, backend=backend, attempt=rs.attempt_number,
            sleep_s=round(rs.next_action.sleep, 2) if rs.next_action else None,
            exc_type=type(exc).__name__ if exc else None, error=str(exc) if exc else None,
        )

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(max_delay_s),
        wait=tenacity.wait_exponential_jitter(initial=initial_wait_s, max=max_wait_s),
        retry=tenacity.retry_if_exception_type(retry_on),
        reraise=True,
        before_sleep=_before_sleep,
        sleep=sleep,
    )


def submit_retry_on(idempotent_submit: bool) -> tuple[type[BaseException], ...]:
    """Which errors a submit may be retried on: it must never start a run twice."""
    return (TransientBackendError,) if idempotent_submit else (ConnectError,)


def call_with_retry(policy: tenacity.Retrying, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run ``fn`` under ``policy``."""
    return policy(fn, *args, **kw)
