"""One file that holds the specs of many runs; the worker writes each run's folder from it.

Backends whose capabilities say ``sweep_spec`` (SLURM arrays) get one such file per launch
instead of a folder per run written by the launcher: a 1,000-run sweep is then one file to
write and ship, not 1,000 folders of three files. On the target, ``python -m chester.worker
RUN_DIR --spec FILE`` first writes ``RUN_DIR`` from the file, exactly as the launcher would
have (``variant.json``, ``.chester/run.json``, ``.chester/payload.pkl``), then runs it; a
later attempt of the same submission finds the folder written and leaves it as it is, and a
run submitted again (a new token) gets its folder's records written anew.

Layout: a magic line, the length of a JSON index as a decimal line, the index, then the
blob. The index maps each run folder (normalised path on the target) to the offsets of its
three parts in the blob; the function's pickle sits once at the start of the blob. A worker
reads the index and its own parts only, so the file may hold large variants.

This module must import nothing heavy: it runs on every target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from chester.target import rundir as rd

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` costs more to import than this module
    from typing import Any, BinaryIO

MAGIC = b"chester-sweep-spec 1\n"

#: One run's entry: (run folder on the target, variant.json, run.json, variant pickle).
Entry = tuple[str, bytes, bytes, bytes]


class SpecError(Exception):
    """The spec file is missing, damaged, or does not hold the asked run."""


def write(path: str | os.PathLike[str], fn_pickle: bytes, entries: Iterable[Entry]) -> int:
    """Write the spec of ``entries`` (mode 0600: it holds pickles); return its size."""
    index: dict[str, list[int]] = {}
    parts: list[bytes] = [fn_pickle]
    offset = len(fn_pickle)
    for run_dir, variant_json, run_json, variant_pickle in entries:
        key = os.path.normpath(run_dir)
        if key in index:
            raise ValueError(f"two runs share the folder {run_dir!r}")
        index[key] = [offset, len(variant_json), len(run_json), len(variant_pickle)]
        parts += (variant_json, run_json, variant_pickle)
        offset += len(variant_json) + len(run_json) + len(variant_pickle)
    head = json.dumps({"fn": len(fn_pickle), "runs": index}, ensure_ascii=False,
                      separators=(",", ":")).encode()
    data = b"".join([MAGIC, b"%d\n" % len(head), head, *parts])
    _write_once(os.fspath(path), data, 0o600)
    return len(data)


def read_entry(path: str | os.PathLike[str], run_dir: str) -> tuple[bytes, bytes, bytes, bytes]:
    """(function pickle, variant.json, run.json, variant pickle) of one run."""
    key = os.path.normpath(os.fspath(run_dir))
    try:
        with open(path, "rb") as f:
            fn_size, where, base = _entry(path, f, key)
            if where is None:
                raise SpecError(f"{path} holds no run in {key}")
            f.seek(base)
            fn_pickle = f.read(fn_size)
            offset, n_vjson, n_rjson, n_vpickle = (int(x) for x in where)
            f.seek(base + offset)
            blob = f.read(n_vjson + n_rjson + n_vpickle)
    except OSError as exc:
        raise SpecError(f"cannot read the sweep spec {path}: {exc}") from None
    if len(fn_pickle) != fn_size or len(blob) != n_vjson + n_rjson + n_vpickle:
        raise SpecError(f"{path} is cut short")
    return (fn_pickle, blob[:n_vjson], blob[n_vjson:n_vjson + n_rjson],
            blob[n_vjson + n_rjson:])


#: The last spec read, by the file it came from (device, inode, size, mtime), and its parsed
#: index once a second entry was read from it: a queue runner reads one spec for each of its
#: runs and parses its index once; a worker reads one entry and parses none of it.
_LAST_INDEX: list[Any] = [None, None]


def _entry(path: str | os.PathLike[str], f: BinaryIO, key: str
           ) -> tuple[int, list[int] | None, int]:
    """(function pickle size, ``key``'s entry or None, blob offset) of the open spec ``f``."""
    st = os.fstat(f.fileno())
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if _LAST_INDEX[0] == ident and _LAST_INDEX[1] is not None:
        fn_size, runs, base = _LAST_INDEX[1]
        return fn_size, runs.get(key), base
    if f.readline() != MAGIC:
        raise SpecError(f"{path} is not a chester sweep spec")
    try:
        size = int(f.readline())
        head = f.read(size)
        if _LAST_INDEX[0] != ident:  # the first entry read from this file: look it up
            _LAST_INDEX[:] = [ident, None]
            found = _find(head, key)
            if found is not None:
                return found[0], found[1], f.tell()
        index = json.loads(head)
        parsed = (int(index["fn"]), index["runs"], f.tell())
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{path}: damaged index ({exc})") from None
    _LAST_INDEX[:] = [ident, parsed]
    return parsed[0], parsed[1].get(key), parsed[2]


def _find(head: bytes, key: str) -> tuple[int, list[int]] | None:
    """(function pickle size, ``key``'s entry) found in the index's text without parsing
    all of it (a spec of n runs is read by n workers), or None to parse it.

    :func:`write` writes ``{"fn":N,"runs":{"KEY":[a,b,c,d],...}}`` without spaces. An
    absolute path holding none of what JSON escapes (``"``, backslash, control characters)
    stands in that text as itself in quotes, and ``,"KEY":[`` is then found only where that
    key starts: inside another key a ``"`` is escaped (a backslash before it, never a
    ``,``), and a key's closing quote is followed by ``:``, not by the ``/`` a path starts
    with."""
    if not key.startswith("/") or '"' in key or "\\" in key or any(c < " " for c in key):
        return None
    if not head.startswith(b'{"fn":'):
        return None
    comma = head.find(b",")
    if comma < 0 or not head.startswith(b',"runs":{"', comma):
        return None
    try:
        needle = b'"' + key.encode() + b'":['
    except UnicodeEncodeError:  # a name no spec holds (write() encodes strictly)
        return None
    if head.startswith(needle, comma + 9):  # the first run
        at = comma + 9
    else:
        at = head.find(b"," + needle, comma + 9) + 1
        if at == 0:
            return None
    start = at + len(needle)
    try:
        entry = [int(x) for x in head[start:head.index(b"]", start)].split(b",")]
        fn_size = int(head[6:comma])
    except ValueError:
        return None
    return (fn_size, entry) if len(entry) == 4 else None


def runs_in(path: str | os.PathLike[str]) -> Sequence[str]:
    """The run folders a spec holds (for tools and tests)."""
    with open(path, "rb") as f:
        if f.readline() != MAGIC:
            raise SpecError(f"{path} is not a chester sweep spec")
        head = json.loads(f.read(int(f.readline())))
    return list(head["runs"])


def _write_once(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def materialize(path: str | os.PathLike[str], run_dir: str) -> bool:
    """Write ``run_dir``'s spec files from the sweep spec unless they are there already.

    ``.chester/run.json`` is written last: its presence means the folder is whole. Returns
    True when the folder was written now.
    """
    run_dir = os.path.abspath(run_dir)
    there = rd.read_json(os.path.join(run_dir, rd.RUN_JSON))
    fn_pickle, variant_json, run_json, variant_pickle = read_entry(path, run_dir)
    if there is not None:
        try:
            want = json.loads(run_json)
        except ValueError:
            raise SpecError(f"{path}: damaged run record for {run_dir}") from None
        if (there.get("token"), there.get("attempt")) == (want.get("token"), want.get("attempt")):
            return False  # this submission's folder, written by an earlier attempt
        # a run submitted again (``chester relaunch``): its new record replaces the old one
    os.makedirs(os.path.join(run_dir, rd.META), exist_ok=True)
    _write_once(os.path.join(run_dir, rd.VARIANT_JSON), variant_json, 0o644)
    _write_once(os.path.join(run_dir, rd.PAYLOAD), fn_pickle + variant_pickle, 0o600)
    _write_once(os.path.join(run_dir, rd.RUN_JSON), run_json, 0o644)
    return True
