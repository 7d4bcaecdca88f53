"""SHA-256 and BLAKE2b for chester's own small digests, without loading OpenSSL.

``import hashlib`` loads OpenSSL's libcrypto to offer every algorithm: some 3 ms of a
``chester launch``, whose digests (fingerprints, names, keys of what is remembered) are of a
few kilobytes each. CPython builds these two in as well (``_sha256``, ``_sha2`` from 3.12,
and ``_blake2``): the same digests, with no library to load. Where they are missing, they
come from hashlib. File contents are hashed with hashlib's (faster on long inputs).
"""

from __future__ import annotations

from typing import Any


def _builtin(*names: str) -> Any:
    import importlib

    for module, attr in (n.split(":") for n in names):
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(names[-1])


#: ``sha256(data=b"")``: CPython's own (up to 3.11 in ``_sha256``, from 3.12 in ``_sha2``)
sha256: Any = _builtin("_sha256:sha256", "_sha2:sha256", "hashlib:sha256")
#: ``blake2b(data=b"", *, digest_size=64, ...)``
blake2b: Any = _builtin("_blake2:blake2b", "hashlib:blake2b")

__all__ = ["blake2b", "sha256"]
