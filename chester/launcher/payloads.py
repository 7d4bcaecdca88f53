"""What a run's folder holds before it starts: ``variant.json``, ``.chester/run.json`` and the
payload (the function's pickle, then the exact variant's), written into each run folder or,
for backends with the ``sweep_spec`` capability, into one sweep spec for the launch.

Also the other way: a payload's function part replaced by the current code's (what
:func:`chester.relaunch` submits), without unpickling the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from chester.store import RunRow
from chester.target import rundir as rd
from chester.target.attrdict import AttrDict, without_markers

# one encoder each, made once (json.dumps makes a new one per call when given options)
_json_variant_text = json.JSONEncoder(ensure_ascii=False, default=repr).encode
_json_variant_ascii = json.JSONEncoder(default=repr).encode
_json_text = json.JSONEncoder(ensure_ascii=False).encode


def _json_variant(variant: dict) -> bytes:
    """``variant.json``'s bytes: UTF-8, or ``\\u`` escapes where a string holds what UTF-8
    cannot carry (a lone surrogate); the function gets the exact value from the pickle."""
    try:
        return _json_variant_text(variant).encode()
    except UnicodeEncodeError:
        return _json_variant_ascii(variant).encode()


def _write_new(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


_PLAIN_SCALARS = (str, int, float, bool, bytes, type(None))


def _plain(value: Any, depth: int = 0) -> bool:
    """Only built-in data inside (what plain pickle stores by value, whoever loads it)."""
    if type(value) in _PLAIN_SCALARS:
        return True
    if depth > 50:
        return False
    if type(value) in (list, tuple):
        return all(_plain(v, depth + 1) for v in value)
    if type(value) is dict or type(value) is AttrDict:
        return all(type(k) in _PLAIN_SCALARS and _plain(v, depth + 1) for k, v in value.items())
    return False


def pickle_variant(variant: AttrDict) -> bytes:
    """Plain pickle for plain data (fast), cloudpickle for anything else (objects of the
    launching script, lambdas). Both load with ``cloudpickle.load``."""
    if _plain(variant):
        return pickle.dumps(variant, protocol=pickle.DEFAULT_PROTOCOL)
    import cloudpickle

    return cloudpickle.dumps(variant)


def pickle_fn(fn: Callable) -> bytes:
    """The run's callable: a command (plain pickle: its class is chester's) or a function
    (cloudpickle, imported only then)."""
    from chester.target.command import Command

    if type(fn) is Command:
        return pickle.dumps(fn, protocol=pickle.DEFAULT_PROTOCOL)
    import io

    buf = io.BytesIO()
    _pickler_keeping_files()(buf).dump(fn)
    return buf.getvalue()


def _pickler_keeping_files() -> type:
    """cloudpickle's pickler, except that code pickled by value keeps its file's name:
    cloudpickle writes ``<dynamic-code>`` instead, and a traceback of the launching script's
    function would not say where the failing line is."""
    global _KEEP_FILES
    if _KEEP_FILES is None:
        import types
        from collections import ChainMap

        import cloudpickle
        from cloudpickle import cloudpickle as impl

        def code_reduce(code: types.CodeType) -> Any:
            ctor, args = impl._code_reduce(code)
            return ctor, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)

        class KeepFiles(cloudpickle.Pickler):  # type: ignore[misc]
            dispatch_table = ChainMap({types.CodeType: code_reduce},
                                      cloudpickle.Pickler.dispatch_table)

        _KEEP_FILES = KeepFiles
    return _KEEP_FILES


_KEEP_FILES: type | None = None


def pickle_reference(module: str, qualname: str) -> bytes:
    """A pickle of the global ``module.qualname``, made without importing it: the target
    imports the code that is there when the run starts."""
    def text(s: str) -> bytes:
        b = s.encode("utf-8", "surrogatepass")
        return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE

    return b"\x80\x04" + text(module) + text(qualname) + b"\x93."  # PROTO 4, STACK_GLOBAL, STOP


def split_payload(data: bytes, fn_size: int | None = None) -> tuple[bytes, bytes]:
    """A payload's two pickles, ``(function, variant)``; ``fn_size`` is the first one's
    length when known (``run.json``'s ``fn_bytes``), else the pickle is read (not run) to
    find where it stops."""
    if fn_size is None:
        import pickletools

        for op, _arg, pos in pickletools.genops(data):
            if op.name == "STOP":
                fn_size = int(pos or 0) + 1
                break
        else:
            raise ValueError("no complete pickle in the payload")
    return data[:fn_size], data[fn_size:]


def run_files(rows: Sequence[RunRow], variants: Sequence[dict], *, project_dir: str,
              env: Mapping[str, str], attempt: int | None,
              fn_size: int) -> list[tuple[RunRow, bytes, bytes, bytes]]:
    """Each run's (row, ``variant.json``, ``.chester/run.json``, variant pickle).

    ``attempt`` None: each row's own attempt (a run submitted again counts on)."""
    # run.json is {"token", "name", "run_id", "attempt", then what every run shares}
    shared = _json_text({"project_dir": project_dir, "env": dict(env), "fn_bytes": fn_size})
    return [(row,
             _json_variant({**without_markers(variant), "exp_name": row.name}),
             f'{{"token": {_json_text(row.token)}, "name": {_json_text(row.name)}, '
             f'"run_id": {int(row.id)}, '
             f'"attempt": {int(attempt or getattr(row, "attempt", None) or 1)}, '
             f'{shared[1:]}'.encode(),
             pickle_variant(AttrDict(variant)))
            for row, variant in zip(rows, variants, strict=True)]


@contextlib.contextmanager
def ship_local_modules(project_dir: str | os.PathLike) -> Iterator[list[Any]]:
    """While pickling, send by value the project's modules the target could not import by
    name: a module beside a script in a subfolder (``scripts/helpers.py`` imported as
    ``helpers``) is on the launcher's ``sys.path`` but not on the target's, where only the
    project root is. Modules importable from the root, and installed ones, go by name."""
    import sys

    import cloudpickle

    by_value = by_value_test(project_dir)
    shipped = [mod for name, mod in list(sys.modules.items())
               if by_value(name, getattr(mod, "__file__", None))]
    registered = []
    for mod in shipped:
        try:
            cloudpickle.register_pickle_by_value(mod)
        except ValueError:
            continue
        registered.append(mod)
    try:
        yield registered
    finally:
        for mod in registered:
            try:
                cloudpickle.unregister_pickle_by_value(mod)
            except ValueError:
                pass


def by_value_test(project_dir: str | os.PathLike) -> Callable[[str, str | None], bool]:
    """``test(name, path)``: is the module ``name`` (its file ``path``) one the target cannot
    import by name — in the project, but not where the project root's ``sys.path`` entry
    finds it?"""
    import sys

    root = os.path.realpath(project_dir)
    # the interpreter's own and installed modules go by name: skipped before any realpath
    # (unless the project itself lives there)
    prefixes = {os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                               sys.base_exec_prefix)}
    elsewhere = tuple(p for p in prefixes if not os.path.join(root, "").startswith(p))

    def test(name: str, path: str | None) -> bool:
        if not path or name in ("__main__", "chester") or name.startswith("chester."):
            return False
        if path.startswith(elsewhere):
            return False
        real = os.path.realpath(path)
        if not real.startswith(root + os.sep) or "site-packages" in real.split(os.sep):
            return False
        rel = name.replace(".", os.sep)
        # the target imports it from the project root
        return real not in (os.path.join(root, rel + ".py"),
                            os.path.join(root, rel, "__init__.py"))

    return test


def write_run_folders(rows: Sequence[RunRow], *, fn: Callable, variants: Sequence[dict],
                      project_dir: str, env: Mapping[str, str],
                      attempt: int | None = None) -> None:
    """Write ``variant.json`` and ``.chester/`` (run record, payload 0600) into each run folder.

    The function is pickled once for the whole batch; each payload is that pickle followed
    by the pickle of the run's variant (the worker loads both from one file). The folders
    are new and not yet submitted, so plain writes are enough: a launcher that dies here
    leaves the runs ``new`` and the next launch writes them again.
    """
    fn_bytes = pickle_fn(fn)
    files = run_files(rows, variants, project_dir=project_dir, env=env, attempt=attempt,
                      fn_size=len(fn_bytes))
    for parent in {os.path.dirname(os.fspath(row.local_dir)) for row, *_ in files}:
        os.makedirs(parent, exist_ok=True)
    for row, variant_json, run_json, variant_pickle in files:
        d = os.fspath(row.local_dir)
        for sub in (d, os.path.join(d, rd.META)):
            try:
                os.mkdir(sub)
            except FileExistsError:
                pass
        _write_new(os.path.join(d, rd.VARIANT_JSON), variant_json)
        _write_new(os.path.join(d, rd.PAYLOAD), fn_bytes + variant_pickle, 0o600)
        _write_new(os.path.join(d, rd.RUN_JSON), run_json)


def write_sweep_spec(path: str | os.PathLike, rows: Sequence[RunRow], *, fn: Callable,
                     variants: Sequence[dict], project_dir: str, env: Mapping[str, str],
                     attempt: int | None = None) -> int:
    """The same files as :func:`write_run_folders`, for every run, in one sweep spec
    (:mod:`chester.sweepspec`) keyed by each run's folder on the target. Returns its size."""
    from chester.target import sweepspec

    fn_bytes = pickle_fn(fn)
    files = run_files(rows, variants, project_dir=project_dir, env=env, attempt=attempt,
                      fn_size=len(fn_bytes))
    return sweepspec.write(path, fn_bytes,
                           ((row.remote_dir, vj, rj, vp) for row, vj, rj, vp in files))


def write_run_folder(row: RunRow, *, fn: Callable, variant: dict, project_dir: str,
                     env: Mapping[str, str], attempt: int | None = None) -> None:
    """One run folder (see :func:`write_run_folders`)."""
    write_run_folders([row], fn=fn, variants=[variant], project_dir=project_dir, env=env,
                      attempt=attempt)


__all__ = ["by_value_test", "pickle_fn", "pickle_reference", "pickle_variant", "run_files",
           "ship_local_modules", "split_payload", "write_run_folder", "write_run_folders",
           "write_sweep_spec"]
