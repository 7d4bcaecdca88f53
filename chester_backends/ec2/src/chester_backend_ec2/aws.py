"""boto3 clients and error translation (boto3 is imported here, lazily, on first use)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from chester.plugin.errors import BackendError, ConnectError, TransientBackendError

#: Error codes worth repeating the call for.
TRANSIENT_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "SlowDown",
    "InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
    "Unavailable", "503", "500", "InsufficientInstanceCapacity",
})


def client(kind: str, options: Any) -> Any:
    """A new boto3 client; ``endpoint_url`` applies to S3 only (S3-compatible stores). The
    backend keeps the clients it made (:class:`Clients`)."""
    import boto3
    from botocore.config import Config

    endpoint = options.endpoint_url if kind == "s3" else None
    kw: dict[str, Any] = {"config": Config(retries={"max_attempts": 4, "mode": "standard"},
                                           connect_timeout=10, read_timeout=60)}
    if options.region:
        kw["region_name"] = options.region
    if endpoint:
        kw["endpoint_url"] = endpoint
    return boto3.session.Session().client(kind, **kw)


class Clients:
    """The boto3 clients of one backend instance, one per service, region, endpoint and
    credentials (the environment's ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and
    ``AWS_PROFILE`` at the time of the call), made on first use and reused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[tuple, Any] = {}

    def get(self, kind: str, options: Any) -> Any:
        key = (kind, options.region, options.endpoint_url if kind == "s3" else None,
               os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID"),
               os.environ.get("AWS_PROFILE"))
        with self._lock:
            c = self._made.get(key)
            if c is None:
                c = self._made[key] = client(kind, options)
            return c


def reset_clients() -> None:
    """Nothing to reset: clients live on the backend instance that made them (a new
    instance, or a new plugin manager, starts without any)."""


def where(c: Any) -> str:
    try:
        return c.meta.endpoint_url
    except AttributeError:  # pragma: no cover
        return "AWS"


@contextlib.contextmanager
def errors(what: str, c: Any, *, sent: bool = True) -> Iterator[None]:
    """Translate botocore errors into chester's. ``sent=False``: nothing changed yet."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        ReadTimeoutError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    host = where(c)
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        msg = f"ec2 backend: {what} at {host} failed: {code}: " \
              f"{exc.response.get('Error', {}).get('Message', '')}"
        if code in TRANSIENT_CODES:
            raise TransientBackendError(msg) from None
        raise BackendError(msg) from None
    except (NoCredentialsError, NoRegionError) as exc:
        raise BackendError(f"ec2 backend: {what} at {host}: {exc} (configure boto3's "
                           "credentials/region: environment, ~/.aws, SSO or a role)") from None
    except EndpointConnectionError as exc:
        cls = ConnectError if not sent else TransientBackendError
        raise cls(f"ec2 backend: {what}: cannot reach {host}: {exc}") from None
    except (BotoConnectionError, HTTPClientError, ReadTimeoutError) as exc:
        raise TransientBackendError(f"ec2 backend: {what} at {host}: {exc}") from None
    except BotoCoreError as exc:
        raise BackendError(f"ec2 backend: {what} at {host}: {exc}") from None
