"""``chester.launch``: turn a function and a sweep into tracked runs on a backend."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chester.config import ChesterConfig, get_config
from chester.launcher.sweeps import Sweep
from chester.logs import get_logger
from chester.plugin.dispatch import Dispatcher
from chester.plugin.errors import UserError
from chester.plugin.records import RunSpec, RunStatus, State
from chester.store import RunRow, Store
from chester.target import rundir as rd
from chester.target.attrdict import MARKERS, AttrDict, without_markers
from chester.variants import VariantGenerator, expand
from chester.variants.naming import (
    auto_suffix,
    check_name,
    check_path,
    remote_mapper,
    safe_component,
)

log = get_logger()

# one encoder each, made once (json.dumps makes a new one per call when given options)
_json_legacy = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
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


def _variations(variants: Any, vlist: list[dict]) -> list[str]:
    if isinstance(variants, VariantGenerator):
        return variants.variations()
    keys: list[str] = []
    for v in vlist:
        for k in v:
            if k not in keys and k not in MARKERS:
                keys.append(k)
    out = []
    for k in keys:
        vals = {_value_key(v.get(k)) for v in vlist}
        if len(vals) > 1:
            out.append(k)
    return out


_SCALARS = (str, int, float, bool, type(None), bytes)


def _value_key(value: Any) -> Any:
    from chester.variants.fingerprint import UnstableValue, digest

    if type(value) in _SCALARS:
        return (type(value), repr(value))
    try:
        return digest(value)
    except UnstableValue:
        return id(value)


def fingerprint(exp_prefix: str, backend: str, batch_dir: Path, vlist: list[dict],
                names: Sequence[str] | None) -> str:
    """What makes a launch "the same sweep again": prefix, backend, folder, names and
    variants. Stable for any picklable value across processes (:mod:`chester.fingerprint`);
    raises :class:`~chester.fingerprint.UnstableValue` for a value pickle could not store."""
    from chester.variants.fingerprint import digest

    h = hashlib.sha256(b"chester-fingerprint-2\0")
    h.update(json.dumps([exp_prefix, backend, str(batch_dir), list(names or [])]).encode())
    for v in vlist:
        h.update(digest(without_markers(v)))
    return h.hexdigest()


def legacy_fingerprint(exp_prefix: str, backend: str, batch_dir: Path, vlist: list[dict],
                       names: Sequence[str] | None) -> str | None:
    """The fingerprint earlier versions stored, for plain JSON data only (where it was
    stable), so a sweep launched by them is still found; ``None`` for anything else."""
    h = hashlib.sha256()
    h.update(json.dumps([exp_prefix, backend, str(batch_dir), list(names or [])]).encode())
    try:
        for v in vlist:
            h.update(_json_legacy(without_markers(v)).encode())
            h.update(b"\0")
    except (TypeError, ValueError):
        return None
    return h.hexdigest()


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


def _pickle_variant(variant: AttrDict) -> bytes:
    """Plain pickle for plain data (fast), cloudpickle for anything else (objects of the
    launching script, lambdas). Both load with ``cloudpickle.load``."""
    if _plain(variant):
        return pickle.dumps(variant, protocol=pickle.DEFAULT_PROTOCOL)
    import cloudpickle

    return cloudpickle.dumps(variant)


def _pickle_fn(fn: Callable) -> bytes:
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


def _run_files(rows: Sequence[RunRow], variants: Sequence[dict], *, project_dir: str,
               env: Mapping[str, str],
               attempt: int | None) -> list[tuple[RunRow, bytes, bytes, bytes]]:
    """Each run's (row, ``variant.json``, ``.chester/run.json``, variant pickle).

    ``attempt`` None: each row's own attempt (a run submitted again counts on)."""
    # run.json is {"token", "name", "run_id", "attempt", then what every run shares}
    shared = _json_text({"project_dir": project_dir, "env": dict(env)})
    return [(row,
             _json_variant({**without_markers(variant), "exp_name": row.name}),
             f'{{"token": {_json_text(row.token)}, "name": {_json_text(row.name)}, '
             f'"run_id": {int(row.id)}, '
             f'"attempt": {int(attempt or getattr(row, "attempt", None) or 1)}, '
             f'{shared[1:]}'.encode(),
             _pickle_variant(AttrDict(variant)))
            for row, variant in zip(rows, variants, strict=True)]


@contextlib.contextmanager
def _ship_local_modules(project_dir: str | os.PathLike) -> Any:
    """While pickling, send by value the project's modules the target could not import by
    name: a module beside a script in a subfolder (``scripts/helpers.py`` imported as
    ``helpers``) is on the launcher's ``sys.path`` but not on the target's, where only the
    project root is. Modules importable from the root, and installed ones, go by name."""
    import sys

    import cloudpickle

    root = os.path.realpath(project_dir)
    # the interpreter's own and installed modules go by name: skipped before any realpath
    # (unless the project itself lives there)
    prefixes = {os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                               sys.base_exec_prefix)}
    elsewhere = tuple(p for p in prefixes if not os.path.join(root, "").startswith(p))
    shipped = []
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if not path or name in ("__main__", "chester") or name.startswith("chester."):
            continue
        if path.startswith(elsewhere):
            continue
        real = os.path.realpath(path)
        if not real.startswith(root + os.sep) or "site-packages" in real.split(os.sep):
            continue
        rel = name.replace(".", os.sep)
        if real in (os.path.join(root, rel + ".py"), os.path.join(root, rel, "__init__.py")):
            continue  # the target imports it from the project root
        try:
            cloudpickle.register_pickle_by_value(mod)
        except ValueError:
            continue
        shipped.append(mod)
    try:
        yield shipped
    finally:
        for mod in shipped:
            try:
                cloudpickle.unregister_pickle_by_value(mod)
            except ValueError:
                pass


def write_run_folders(rows: Sequence[RunRow], *, fn: Callable, variants: Sequence[dict],
                      project_dir: str, env: Mapping[str, str],
                      attempt: int | None = None) -> None:
    """Write ``variant.json`` and ``.chester/`` (run record, payload 0600) into each run folder.

    The function is pickled once for the whole batch; each payload is that pickle followed
    by the pickle of the run's variant (the worker loads both from one file). The folders
    are new and not yet submitted, so plain writes are enough: a launcher that dies here
    leaves the runs ``new`` and the next launch writes them again.
    """
    fn_bytes = _pickle_fn(fn)
    files = _run_files(rows, variants, project_dir=project_dir, env=env, attempt=attempt)
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

    files = _run_files(rows, variants, project_dir=project_dir, env=env, attempt=attempt)
    return sweepspec.write(path, _pickle_fn(fn),
                           ((row.remote_dir, vj, rj, vp) for row, vj, rj, vp in files))


def write_run_folder(row: RunRow, *, fn: Callable, variant: dict, project_dir: str,
                     env: Mapping[str, str], attempt: int | None = None) -> None:
    """One run folder (see :func:`write_run_folders`)."""
    write_run_folders([row], fn=fn, variants=[variant], project_dir=project_dir, env=env,
                      attempt=attempt)


def _extra_pair(d: str, project: Path, remote_root: str | None) -> tuple[str, str]:
    """(local, remote) for one of the seed's ``extra_pull_dirs``."""
    p = Path(os.path.expanduser(str(d)))
    if p.is_absolute():
        return (str(p), str(p))
    return (str(project / p), str(Path(remote_root) / p) if remote_root else str(project / p))


#: States a ``resume="retry"`` submits again; ``"retry-failed"`` adds :data:`FAILED_STATES`.
RETRY_STATES = (State.LOST,)
FAILED_STATES = (State.FAILED, State.TIMEOUT, State.OOM)


def _reset_for_retry(store: Store, rows: list[RunRow], *, failed: bool) -> list[RunRow]:
    """Make the sweep's lost (and, with ``failed``, failed) runs new submissions again."""
    states = RETRY_STATES + (FAILED_STATES if failed else ())
    again = [r.id for r in rows if r.state in states]
    if again:
        store.reset_for_retry(again)
        log.info("retrying_runs", runs=len(again))
    return store.runs(rows[0].sweep_id) if rows else rows


def _collector_paused(fn: Callable[..., Sweep]) -> Callable[..., Sweep]:
    """The cycle collector waits while ``fn`` runs, and is back as it was after (also on an
    error; a collector the caller had turned off stays off). A launch makes tens of
    thousands of objects that live until it returns: Python's default threshold scanned
    them some sixty times in a 1,000-run launch (about 19 ms), for no garbage."""
    import functools

    @functools.wraps(fn)
    def paused(*args: Any, **kwargs: Any) -> Sweep:
        import gc

        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()

    return paused


@_collector_paused
def launch(
    fn: Callable[..., Any] | str | Sequence[str],
    variants: Any,
    *,
    backend: str = "local",
    exp_prefix: str = "experiment",
    sub_dir: str = "train",
    log_dir: str | os.PathLike | None = None,
    variations: Sequence[str] | None = None,
    exp_names: Sequence[str] | None = None,
    run_dirs: Sequence[str | os.PathLike] | None = None,
    extra_pull_dirs: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    resources: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    order: str = "parallel",
    dry_run: bool = False,
    resume: bool | str = "auto",
    config: ChesterConfig | None = None,
    dispatcher: Dispatcher | None = None,
    args_style: str = "argparse",
    hydra_flags: Mapping[str, Any] | None = None,
    run_args: bool = True,
) -> Sweep:
    """Launch ``fn(variant, log_dir, exp_name)`` once per variant on ``backend``.

    ``fn`` may instead be a command: an argv list, or a string split as a shell splits
    words (never run by a shell). Each variant then becomes arguments as ``args_style``
    says (``"argparse"``: ``--key value``; ``"hydra"``: ``key=value`` overrides after
    ``hydra_flags``; ``"template"``: ``{key}`` placeholders in the command filled in);
    ``run_args`` adds the run folder (``--log_dir``/``--exp_name``, or
    ``hydra.run.dir=``). See :mod:`chester.command`.

    ``variants`` is a :class:`VariantGenerator`, a list of dicts or one dict. Runs land in
    ``<log_dir>/<sub_dir>/<exp_prefix>/<N>_<name>/``. Every run is recorded in the job store
    before anything is sent, so running the same launch again after a crash submits exactly
    the runs that were never submitted. ``resume="auto"`` (the default) reattaches to an
    earlier launch of the same sweep (same ``exp_prefix``, backend, folder and variants) and
    submits only what it never submitted, so every variant runs once however often the
    script is run; ``resume="incomplete"`` reattaches only when that launch did not finish
    submitting (the seed API's behaviour: running the script again makes new runs);
    ``resume=False`` always starts a new sweep with new numbered runs. ``resume="retry"``
    reattaches like ``"auto"`` and also submits again the runs of that sweep that were
    ``lost`` (``"retry-failed"``: also ``failed``, ``timeout`` and ``oom``), in their own
    folders, leaving the succeeded ones alone (:func:`relaunch` does the same from the
    command line, without the script).

    ``exp_names`` and ``run_dirs`` name each run and its folder explicitly.
    ``extra_pull_dirs`` are folders pulled with every run (relative: under the project root
    here and under the backend's ``remote_dir`` there; absolute: the same path on both).

    ``resources`` (one mapping, or one per variant) and ``order`` (``"parallel"`` or
    ``"dependent"``) are passed to backends that use them. ``dry_run`` prepares and returns
    without submitting; the prepared scripts are on ``sweep.prepared``.

    While a launch runs, Python's cycle collector waits (it is given back as it was, also
    after an error): a launch's objects live until it returns, and scanning them is time
    spent for nothing.
    """
    from chester.target.command import Command, CommandError

    # every argument is checked before anything is written: a bad one leaves nothing behind
    if isinstance(fn, (str, list, tuple)):
        try:
            fn = Command(fn, args_style, hydra_flags=hydra_flags, run_args=run_args)
        except CommandError as exc:
            raise UserError(str(exc)) from None
    elif args_style != "argparse" or hydra_flags:
        if not isinstance(fn, Command):
            raise UserError("args_style= and hydra_flags= apply to commands (an argv list "
                            "or a string), not to a function")
    if not callable(fn):
        raise UserError("launch() needs a callable fn(variant, log_dir, exp_name) or a "
                        "command (an argv list or a string)")
    check_name("exp_prefix", exp_prefix)
    check_name("sub_dir", sub_dir, path=True)
    if log_dir is not None:
        check_path("log_dir", log_dir)
    if order not in ("parallel", "dependent"):
        raise UserError(f"order must be 'parallel' or 'dependent', not {order!r}")
    if resume not in (True, False, "auto", "incomplete", "retry", "retry-failed"):
        raise UserError("resume must be 'auto', 'incomplete', 'retry', 'retry-failed', True or "
                        f"False, not {resume!r}")
    env = dict(env or {})
    for k, val in env.items():
        if not isinstance(k, str) or not isinstance(val, str):
            raise UserError(f"env must map strings to strings, got {k!r}: {val!r}")
        if not k or "=" in k or "\0" in k or "\0" in val:
            raise UserError(f"env name {k!r} is not a valid environment variable name")
        try:
            (k + val).encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"env {k!r} holds a character an environment cannot carry "
                            "(a lone surrogate)") from None
    cfg = config or get_config()
    dispatcher = dispatcher or Dispatcher()
    bcfg = cfg.backend(backend, dispatcher.manager)
    caps = dispatcher.manager.get_backend(bcfg.type).spec.capabilities
    vlist = expand(variants)
    for v in vlist:
        bad = [k for k in v if not isinstance(k, str)]
        if bad:
            raise UserError(f"variant keys must be strings, got {bad[0]!r}")
    if isinstance(fn, Command):
        for i, v in enumerate(vlist):  # a variant the command cannot take fails here,
            try:                           # before any submit
                fn.check(v, "LOG_DIR", "EXP_NAME")
            except CommandError as exc:
                raise UserError(f"variant {i + 1} of {len(vlist)}: {exc}") from None
    if exp_names is not None:
        exp_names = list(exp_names)
        if len(exp_names) != len(vlist):
            raise UserError(f"exp_names has {len(exp_names)} names for {len(vlist)} variants")
        for n in exp_names:
            check_name("exp_name", n, cleaned=True)
    if run_dirs is not None:
        run_dirs = list(run_dirs)
        if len(run_dirs) != len(vlist):
            raise UserError(f"run_dirs has {len(run_dirs)} folders for {len(vlist)} variants")
        for d in run_dirs:
            check_path("run_dirs entry", d)
    if isinstance(resources, Mapping) or resources is None:
        res_list = [dict(resources or {})] * len(vlist)
    else:
        try:
            res_list = [dict(r) for r in resources]
        except (TypeError, ValueError):
            raise UserError("resources must be one mapping, or one mapping per variant, not "
                            f"{type(resources).__name__}") from None
        if len(res_list) != len(vlist):
            raise UserError(f"resources has {len(res_list)} entries for {len(vlist)} variants")
    for r in res_list:
        bad = [k for k in r if not isinstance(k, str)]
        if bad:
            raise UserError(f"resources keys must be strings, got {bad[0]!r}")
    root = Path(log_dir).expanduser() if log_dir is not None else cfg.log_dir
    if not root.is_absolute():
        root = cfg.project_path / root
    batch_dir = root / sub_dir / exp_prefix
    varying = list(variations) if variations is not None else _variations(variants, vlist)
    names = [safe_component(n) for n in exp_names] if exp_names is not None else None
    if resume is False:
        fps = [f"new-{uuid.uuid4().hex}"]  # never matched: a new sweep
    else:
        fps = [fingerprint(exp_prefix, bcfg.name, batch_dir, vlist, names)]
        legacy = legacy_fingerprint(exp_prefix, bcfg.name, batch_dir, vlist, names)
        if legacy:
            fps.append(legacy)

    spec_of = dispatcher.manager.get_backend(bcfg.type).spec
    remote_root = spec_of.remote_root(bcfg.options) if spec_of.remote_root else None

    to_remote = remote_mapper(cfg.project_path, remote_root) if remote_root else None

    def remote_dir_for(local: str | Path) -> str:
        return to_remote(local) if to_remote else str(local)

    def specs() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            ({"name": names[i]} if names else {"suffix": auto_suffix(exp_prefix, v, varying)})
            for i, v in enumerate(vlist)]
        for i, d in enumerate(run_dirs or ()):
            p = Path(d).expanduser()
            out[i]["local_dir"] = os.path.normpath(p if p.is_absolute() else cfg.project_path / p)
            out[i].setdefault("name", safe_component(p.name))
        return out

    extra = [_extra_pair(d, cfg.project_path, remote_root) for d in extra_pull_dirs]
    store = Store(cfg.store_path)
    srow, rows, resumed = store.resume_or_create_sweep(
        exp_prefix=exp_prefix, backend=bcfg.name, batch_dir=batch_dir, fingerprint=fps[0],
        runs=specs, remote_dir_for=remote_dir_for,
        options={"order": order, "extra_pull_dirs": extra,
                 **({"resources": res_list} if any(res_list) else {})},
        resume=fps if resume is not False else (), incomplete_only=resume == "incomplete")
    sweep = Sweep(row=srow, store=store, config=cfg, dispatcher=dispatcher, backend=bcfg)
    if resumed:
        log.info("resuming_sweep", sweep=exp_prefix, sweep_id=srow.id)
        if resume in ("retry", "retry-failed"):
            sweep.refresh()  # the states as they are now: a run may have been lost since
            rows = _reset_for_retry(store, store.runs(srow.id),
                                    failed=resume == "retry-failed")

    todo: list[RunRow] = []
    lost: list[tuple[int, RunStatus]] = []
    for row in rows:
        if row.submit_state == "new":
            todo.append(row)
        elif row.submit_state in ("submitting", SUBMIT_FAILED):
            if caps.idempotent_submit:
                todo.append(row)  # the backend checks the token: never a second copy
            else:
                why = (f"{row.reason}" if row.submit_state == SUBMIT_FAILED and row.reason
                       else "the launcher stopped while submitting this run")
                lost.append((row.id, RunStatus(
                    state=State.LOST, reason=f"{why}; whether it started is unknown")))
    if lost:
        store.record_status(lost)
        store.set_submit_state([i for i, _ in lost], "unknown")
    project_dir = remote_root or str(cfg.project_path)
    if not todo:
        if rows and not lost:
            store.mark_launch_complete(srow.id)
        return sweep

    staging = Path(tempfile.mkdtemp(prefix=f"chester-{safe_component(exp_prefix)}-"))
    try:
        try:
            spec_file: str | None = None
            # a command's payload is plain data: nothing to ship, no cloudpickle to load
            shipping: Any = contextlib.nullcontext([]) if isinstance(fn, Command) else \
                _ship_local_modules(cfg.project_path)
            with shipping:
                if caps.sweep_spec:  # one file for the launch; the worker writes each folder
                    spec_file = str(staging / "runs.spec")
                    write_sweep_spec(spec_file, todo, fn=fn,
                                     variants=[vlist[r.idx] for r in todo],
                                     project_dir=project_dir, env=env)
                else:
                    to_write = [row for row in todo if row.submit_state == "new"
                                or not (Path(row.local_dir) / rd.RUN_JSON).exists()]
                    write_run_folders(to_write, fn=fn,
                                      variants=[vlist[r.idx] for r in to_write],
                                      project_dir=project_dir, env=env)
            run_specs = [RunSpec(run_id=r.id, token=r.token, name=r.name,
                                 exp_prefix=exp_prefix, local_dir=Path(r.local_dir),
                                 remote_dir=r.remote_dir, env=env, resources=res_list[r.idx],
                                 spec_file=spec_file,
                                 order_after=(rows[r.idx - 1].token,)
                                 if order == "dependent" and r.idx else ())
                         for r in todo]
            prepared = dispatcher.call("chester_prepare", bcfg, runs=run_specs,
                                       staging_dir=staging)
        except BaseException:
            # nothing was sent: a sweep this call made is taken back, folders and all
            if not resumed:
                _discard(store, srow.id, rows, batch_dir)
            raise
        sweep.prepared = prepared  # type: ignore[attr-defined]
        if dry_run:  # what it rendered stays readable while the handle lives, then goes
            weakref.finalize(sweep, shutil.rmtree, staging, True)
            return sweep
        store.set_submit_state([r.id for r in todo], "submitting")
        try:
            handles = dispatcher.call("chester_submit", bcfg, prepared=prepared)
        except BaseException as exc:
            log.error("submit_failed", sweep=exp_prefix, backend=bcfg.name)
            _record_submit_failure(store, todo, exc)
            raise
    finally:
        if not dry_run:  # all of it has been sent (a dry run keeps it to be read)
            shutil.rmtree(staging, ignore_errors=True)
    store.record_submitted(list(handles))
    store.mark_launch_complete(srow.id)
    log.info("launched", sweep=exp_prefix, backend=bcfg.name, runs=len(handles))
    return sweep


#: a run whose submit hook raised (``runs.submit_state``): the error is the run's reason
SUBMIT_FAILED = "submit_failed"


def _record_submit_failure(store: Store, rows: Sequence[RunRow], exc: BaseException) -> None:
    """Record on each run that its submit raised, and why. Nothing reached the target on a
    ``ConnectError``: those runs are submitted again by the next launch like new ones; for
    others the next launch resubmits only when the backend checks tokens, and otherwise
    reports them ``lost`` with this reason."""
    from chester.plugin.errors import ConnectError

    what = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
        f"{type(exc).__name__}: {exc}"
    ids = [r.id for r in rows]
    if isinstance(exc, ConnectError):
        store.set_submit_state(ids, "new")
        reason = f"not submitted (nothing reached the target): {what}"
    else:
        store.set_submit_state(ids, SUBMIT_FAILED)
        reason = f"the submit failed: {what}"
    store.record_status([(i, RunStatus(state=State.PENDING, reason=reason[:2000]))
                         for i in ids])


def _discard(store: Store, sweep_id: int, rows: Sequence[RunRow], batch_dir: Path) -> None:
    """Take back a sweep whose launch failed before anything was submitted: its store rows
    and the run folders this launch made (they did not exist before: see
    :meth:`Store.resume_or_create_sweep`)."""
    if not store.discard_sweep(sweep_id):
        return
    for r in rows:
        shutil.rmtree(r.local_dir, ignore_errors=True)
    for d in (batch_dir, batch_dir.parent):
        try:
            d.rmdir()  # only when empty
        except OSError:
            break


def relaunch(exp_prefix: str | None = None, *, failed: bool = False,
             config: ChesterConfig | None = None, dispatcher: Dispatcher | None = None,
             sweep_id: int | None = None) -> tuple[Sweep, list[str]]:
    """Submit again the ``lost`` runs (with ``failed``: also ``failed``, ``timeout`` and
    ``oom``) of the sweep ``exp_prefix`` names (every launch of the prefix, or ``PREFIX@N``),
    from their run folders, without the
    launching script; succeeded, running and cancelled runs are left alone.

    Each run keeps its folder and name and gets a new token and the next attempt number.
    Needs each run's payload in its local folder (every backend but those with the
    ``sweep_spec`` capability writes it there); otherwise run the launch script again with
    ``resume="retry"`` (or ``"retry-failed"``). Returns the sweep and the names submitted.
    """
    from chester.launcher.sweeps import sweep as reattach

    cfg = config or get_config()
    dispatcher = dispatcher or Dispatcher()
    top = reattach(exp_prefix, config=cfg, dispatcher=dispatcher, sweep_id=sweep_id)
    if not top.experiment:
        return _relaunch_one(top, failed, dispatcher)
    names: list[str] = []
    for row in top.launches():  # each launch on its own backend, with its own settings
        one = Sweep(row=row, store=top.store, config=cfg, dispatcher=dispatcher)
        names += _relaunch_one(one, failed, dispatcher)[1]
    return top, names


def _relaunch_one(sw: Sweep, failed: bool, dispatcher: Dispatcher) -> tuple[Sweep, list[str]]:
    """:func:`relaunch` for one launch."""
    bcfg = sw.backend
    caps = dispatcher.manager.get_backend(bcfg.type).spec.capabilities
    rows = sw.refresh()
    states = RETRY_STATES + (FAILED_STATES if failed else ())
    again = [r for r in rows if r.state in states]
    if not again:
        return sw, []
    for r in again:  # everything is checked before anything changes
        if caps.sweep_spec or not (Path(r.local_dir) / rd.PAYLOAD).is_file() \
                or rd.read_json(Path(r.local_dir) / rd.RUN_JSON) is None:
            raise UserError(
                f"run {r.name!r} has no payload in {r.local_dir}: run the launch script again "
                f"with resume={'retry-failed' if failed else 'retry'!r} to submit it again")
    sw.store.reset_for_retry([r.id for r in again])
    fresh = {r.id: r for r in sw.store.runs(sw.id)}
    todo = [fresh[r.id] for r in again]
    envs: dict[int, dict[str, str]] = {}
    for r in todo:  # the run record, with the new token and attempt
        path = Path(r.local_dir) / rd.RUN_JSON
        meta = rd.read_json(path) or {}
        envs[r.id] = dict(meta.get("env") or {})
        rd.write_json_atomic(path, {**meta, "token": r.token, "attempt": r.attempt})
    res = sw.row.options.get("resources") or []
    order = sw.row.options.get("order", "parallel")
    by_idx = {r.idx: r for r in fresh.values()}
    specs = [RunSpec(run_id=r.id, token=r.token, name=r.name, exp_prefix=sw.exp_prefix,
                     local_dir=Path(r.local_dir), remote_dir=r.remote_dir, env=envs[r.id],
                     resources=dict(res[r.idx]) if r.idx < len(res) else {},
                     order_after=(by_idx[r.idx - 1].token,)
                     if order == "dependent" and r.idx and r.idx - 1 in by_idx else ())
             for r in todo]
    staging = Path(tempfile.mkdtemp(prefix=f"chester-{safe_component(sw.exp_prefix)}-"))
    try:
        prepared = dispatcher.call("chester_prepare", bcfg, runs=specs, staging_dir=staging)
        sw.store.set_submit_state([r.id for r in todo], "submitting")
        try:
            handles = dispatcher.call("chester_submit", bcfg, prepared=prepared)
        except BaseException as exc:
            _record_submit_failure(sw.store, todo, exc)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sw.store.record_submitted(list(handles))
    log.info("relaunched", sweep=sw.exp_prefix, backend=bcfg.name, runs=len(handles))
    return sw, [r.name for r in todo]
