"""Reading the run files the instance agent stores as segments (launcher side).

A file that only grows (a log, a metrics file) is stored as ``<rel>.chester-seg/<gen>/<offset>``
objects, each holding the bytes from ``offset`` on that one sync sent (see the agent). The file
is its newest generation's segments joined from offset 0, each starting where the one before
ended; a plain ``<rel>`` object is a file sent whole. Pull, ``chester logs`` and the agent of a
requeued instance all read a run folder this way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

# the layout is the agent's (it runs on the instance without chester, so it holds it)
from chester_backend_ec2.agent import SEG, copy_body, join_segments
from chester_backend_ec2.agent import parse_seg as parse

__all__ = ["SEG", "copy_body", "files", "list_file", "parse", "read"]


def files(objs: Iterable[Mapping[str, Any]], prefix: str) -> dict[str, dict[str, Any]]:
    """The files under ``prefix`` from a listing (``Key``, ``Size``, ``ETag``,
    ``LastModified``): ``{rel: {"Size", "ETag", "LastModified", "parts": [(offset, key,
    size), ...]}}``. A segmented file's ETag names its generation and segments, so it changes
    whenever a segment is added."""
    by_rel = {obj["Key"][len(prefix):]: obj for obj in objs}
    out: dict[str, dict[str, Any]] = {
        rel: {"Size": obj["Size"], "ETag": obj.get("ETag", ""),
              "LastModified": obj.get("LastModified"), "parts": [(0, obj["Key"], obj["Size"])]}
        for rel, obj in by_rel.items() if parse(rel) is None}
    for rel, (gen, segs) in join_segments(by_rel).items():
        parts: list[tuple[int, str, int]] = []
        size = 0
        h = hashlib.sha256(str(gen).encode())
        latest = None
        for offset, srel in segs:
            obj = by_rel[srel]
            if offset != size:
                break  # a gap: what follows cannot be placed
            parts.append((offset, obj["Key"], obj["Size"]))
            size += obj["Size"]
            h.update(f"{obj['Key']} {obj.get('ETag', '')}\n".encode())
            lm = obj.get("LastModified")
            latest = lm if latest is None or (lm is not None and lm > latest) else latest
        out[rel] = {"Size": size, "ETag": f"seg-{gen}-{len(parts)}-{h.hexdigest()[:16]}",
                    "LastModified": latest, "parts": parts}
    return out


def list_file(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """One file (``key``, whole or in segments) as :func:`files` describes it, or None."""
    objs = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        objs += [o for o in page.get("Contents", ())
                 if o["Key"] == key or o["Key"].startswith(key + SEG)]
    head = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    return files(objs, head).get(key[len(head):])


def read(s3: Any, bucket: str, parts: list[tuple[int, str, int]], offset: int = 0) -> bytes:
    """The file's bytes from ``offset`` on."""
    out = []
    for start, key, size in parts:
        if start + size <= offset or size == 0:
            continue
        skip = max(0, offset - start)
        kw = {"Range": f"bytes={skip}-"} if skip else {}
        out.append(s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read())
    return b"".join(out)
