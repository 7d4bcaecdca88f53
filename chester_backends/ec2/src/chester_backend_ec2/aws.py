"""boto3 clients and error translation (boto3 is imported here, lazily, on first use)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from chester.plugin.errors import BackendError, ConnectError, TransientBackendError

_lock = threading.Lock()
_clients: dict[tuple, Any] = {}

#: Error codes worth repeating the call for.
TRANSIENT_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "SlowDown",
    "InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
    "Unavailable", "503", "500", "InsufficientInstanceCapacity",
})


def client(kind: str, options: Any) -> Any:
    """A cached boto3 client; ``endpoint_url`` applies to S3 only (S3-compatible stores)."""
    endpoint = options.endpoint_url if kind == "s3" else None
    key = (kind, options.region, endpoint, os.environ.get("AWS_ENDPOINT_URL"),
           os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))
    with _lock:
        c = _clients.get(key)
        if c is None:
            import boto3
            from botocore.config import Config

            kw: dict[str, Any] = {"config": Config(retries={"max_attempts": 4, "mode": "standard"},
                                                   connect_timeout=10, read_timeout=60)}
            if options.region:
                kw["region_name"] = options.region
            if endpoint:
                kw["endpoint_url"] = endpoint
            c = boto3.session.Session().client(kind, **kw)
            _clients[key] = c
    return c


def reset_clients() -> None:
    with _lock:
        _clients.clear()


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
