"""A fake AWS (S3, EC2, IAM, ...) for the tests: moto's server, in-process, on 127.0.0.1.

Nothing is set globally: merge ``endpoint.env`` into the environment of what you test
(``AWS_ENDPOINT_URL`` sends every boto3 client and the aws CLI to the fake), or build
clients with ``endpoint.client("s3")``. ``endpoint.reset()`` wipes all state.

moto hands out public-looking instance addresses (54.x, 10.x): never connect to them.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass, field
from typing import Any

REGION = "us-east-1"


@dataclass(eq=False)
class AwsEndpoint:
    url: str  # http://127.0.0.1:PORT
    host: str
    port: int
    region: str = REGION
    env: dict[str, str] = field(default_factory=dict)
    _server: Any = field(default=None, repr=False)

    def reset(self) -> None:
        """Wipe every bucket, instance, ... (``POST /moto-api/reset``)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    def client(self, service: str, **kw: Any) -> Any:
        """A boto3 client for ``service`` pointed at this endpoint (boto3 imported here)."""
        import boto3

        kw.setdefault("region_name", self.region)
        return boto3.client(service, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            **kw)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def start_aws() -> AwsEndpoint:
    """Start moto's ``ThreadedMotoServer`` on 127.0.0.1 with a free port."""
    from moto.server import ThreadedMotoServer

    # werkzeug prints one line per request to stderr unless its logger is configured
    wz = logging.getLogger("werkzeug")
    if wz.level == logging.NOTSET:
        wz.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket is bound and the server is about to serve
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        # never ask the instance metadata service (169.254.169.254) for anything
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return AwsEndpoint(url=url, host=host, port=int(port), env=env, _server=server)
