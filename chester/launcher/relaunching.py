"""``chester relaunch``: submit a sweep's lost (and failed) runs again, with the code as it is
now, from their run folders and without the launching script.

What runs again is found from the launch's record (``options["identity"]["ref"]``, or for
a launch recorded before chester kept it, the payload's own first pickle):

- a function imported from a module (``ref``) is pickled again by reference, so the target
  imports the module's current code; a module that travels by value (beside a script in a
  subfolder) is imported here and pickled again;
- a command's payload is the command: the project's current files are what it runs (the
  submit syncs them again);
- a function defined in the launching script (``value``) cannot be read again from here:
  its stored pickle is what it was. It is submitted again only while the project's files
  and its source file are as they were at launch; otherwise the one line says to run the
  script again with ``resume="retry-failed"``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chester.config import ChesterConfig, get_config
from chester.launcher.sweeps import Sweep
from chester.logs import get_logger
from chester.plugin.dispatch import Dispatcher
from chester.plugin.errors import UserError
from chester.plugin.records import BackendConfig, RunSpec, RunStatus, State
from chester.store import RunRow, Store, SweepRow
from chester.target import rundir as rd
from chester.variants.naming import safe_component

log = get_logger()

#: States a ``resume="retry"`` submits again; ``"retry-failed"`` adds :data:`FAILED_STATES`.
RETRY_STATES = (State.LOST,)
FAILED_STATES = (State.FAILED, State.TIMEOUT, State.OOM)
#: a run whose submit hook raised (``runs.submit_state``): the error is the run's reason
SUBMIT_FAILED = "submit_failed"


def record_submit_failure(store: Store, rows: Sequence[RunRow], exc: BaseException) -> None:
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


def _ref(launch: SweepRow) -> dict[str, Any]:
    return dict(((launch.options or {}).get("identity") or {}).get("ref") or {})


def retry_command(store: Store, launch: SweepRow) -> str:
    """The way to run a launch's failed runs again, for its kind of run: ``chester relaunch
    PREFIX --failed`` (``PREFIX@N`` when the prefix has other launches) for imported
    functions and commands; running the launching script again with
    ``resume="retry-failed"`` for a function defined in it."""
    import shlex

    if _ref(launch).get("kind") == "value":
        return 'run this script again with resume="retry-failed"'
    several = len(store.sweeps(launch.exp_prefix)) > 1
    return f"chester relaunch {shlex.quote(launch.ref if several else launch.exp_prefix)} --failed"


def relaunch(exp_prefix: str | None = None, *, failed: bool = False,
             config: ChesterConfig | None = None, dispatcher: Dispatcher | None = None,
             sweep_id: int | None = None) -> tuple[Sweep, list[str]]:
    """Submit again the ``lost`` runs (with ``failed``: also ``failed``, ``timeout`` and
    ``oom``) of the sweep ``exp_prefix`` names (every launch of the prefix, or ``PREFIX@N``),
    from their run folders, without the launching script, with the code as it is now (see
    the module docstring); succeeded, running and cancelled runs, and runs whose folder a
    later launch took over, are left alone.

    Each run keeps its folder and name and gets a new token and the next attempt number;
    its earlier attempt's logs stay beside the new ones (``stdout.1.log``). Needs each
    run's payload in its local folder (every backend writes it there, or its worker does on
    a shared file system, but those with the ``sweep_spec`` capability and folders
    elsewhere); otherwise run the launch script again with
    ``resume="retry"`` (or ``"retry-failed"``). Returns the sweep and the names submitted.
    """
    from chester.launcher.sweeps import sweep as reattach

    cfg = config or get_config()
    dispatcher = dispatcher or Dispatcher()
    top = reattach(exp_prefix, config=cfg, dispatcher=dispatcher, sweep_id=sweep_id)
    launches = [top] if not top.experiment else [
        Sweep(row=row, store=top.store, config=cfg, dispatcher=dispatcher)
        for row in top.launches()]  # each launch on its own backend, with its own settings
    plans = [(sw, _again(sw, failed)) for sw in launches]
    for sw, again in plans:  # everything is checked before anything changes
        if again:
            _check(sw, again, failed)
    names: list[str] = []
    for sw, again in plans:
        if again:
            names += _relaunch_one(sw, again)
    return top, names


def _again(sw: Sweep, failed: bool) -> list[RunRow]:
    states = RETRY_STATES + (FAILED_STATES if failed else ())
    return [r for r in sw.refresh() if r.state in states and not r.reused_by]


def _check(sw: Sweep, again: list[RunRow], failed: bool) -> None:
    """Each run can be submitted again from here with the current code, or one line says
    what can."""
    mode = "retry-failed" if failed else "retry"
    for r in again:  # a pool's run by its member's capabilities
        caps = sw.dispatcher.manager.get_backend(sw._backend_for(r.where).type).spec.capabilities
        _written_from_spec(r)
        if caps.sweep_spec and not caps.shared_fs \
                or not (Path(r.local_dir) / rd.PAYLOAD).is_file() \
                or rd.read_json(Path(r.local_dir) / rd.RUN_JSON) is None:
            raise UserError(
                f"run {r.name!r} has no payload in {r.local_dir}: run the launch script again "
                f"with resume={mode!r} to submit it again")
    ref = _ref(sw.row) or _ref_from_payload(Path(again[0].local_dir))
    if ref.get("kind") == "value" and not _unchanged(sw, ref):
        where = f" (in {ref['source']})" if ref.get("source") else ""
        raise UserError(
            f"{sw.row.ref} runs a function defined in its launching script{where}, which the "
            "command line cannot read again, and the code changed since: run that script "
            f"again with resume={mode!r} to run these runs with the current code")


def _written_from_spec(r: RunRow) -> None:
    """A run of a sweep spec kept on this machine (the local backend's) that never started
    has no folder yet: it is written from the spec, as its queue would have."""
    spec = r.handle.get("spec") if r.handle is not None else None
    if spec and not (Path(r.local_dir) / rd.RUN_JSON).exists() and os.path.isfile(spec):
        from chester.target import sweepspec

        try:
            sweepspec.materialize(spec, r.local_dir)
        except (sweepspec.SpecError, OSError):
            pass  # then it has no payload, which the caller says


def _unchanged(sw: Sweep, ref: dict[str, Any]) -> bool:
    """Are the project's files (and the function's own file) as they were at launch? Then
    the stored pickle is the current code."""
    from chester.launcher.identity import file_sha, project_digest

    recorded = (sw.row.options or {}).get("identity") or {}
    if not recorded.get("code"):
        return True  # a launch from before chester recorded it: its pickle is all there is
    if project_digest(sw.backend, ref.get("skip") or ()) != recorded["code"]:
        return False
    source = ref.get("source")
    return not source or file_sha(source) == ref.get("source_sha")


def _ref_from_payload(run_dir: Path) -> dict[str, Any]:
    """For a launch recorded without its function's reference: the payload's first pickle
    is a bare reference (``module.qualname``) when cloudpickle pickled the function by name."""
    import pickletools

    from chester.launcher.payloads import split_payload

    try:
        fn_bytes, _ = split_payload((run_dir / rd.PAYLOAD).read_bytes())
        ops = [(op.name, arg) for op, arg, _pos in pickletools.genops(fn_bytes)
               if op.name not in ("PROTO", "FRAME", "MEMOIZE", "STOP")]
    except (OSError, ValueError):
        return {"kind": "value"}
    kinds = [name for name, _ in ops]
    if kinds == ["GLOBAL"]:
        module, _, qualname = str(ops[0][1]).partition(" ")
    elif len(kinds) == 3 and kinds[2] == "STACK_GLOBAL" and all(
            k in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") for k in kinds[:2]):
        module, qualname = str(ops[0][1]), str(ops[1][1])
    else:
        return {"kind": "value"}
    if module == "__main__":
        return {"kind": "value"}
    return {"kind": "ref", "module": module, "qualname": qualname, "root": None,
            "shipped": False}


def _current_fn(sw: Sweep, ref: dict[str, Any]) -> bytes | None:
    """The function part of the payloads, pickled from the current code; None to keep the
    stored one (a command, a function defined in the script)."""
    from chester.launcher.payloads import pickle_fn, pickle_reference, ship_local_modules

    if ref.get("kind") != "ref":
        return None
    if not ref.get("shipped"):
        return pickle_reference(ref["module"], ref["qualname"])
    import importlib

    root = ref.get("root")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    try:
        obj: Any = importlib.import_module(ref["module"])
        for part in ref["qualname"].split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # the user's module: anything may go wrong as it loads
        raise UserError(f"{sw.row.ref}: cannot load {ref['module']}.{ref['qualname']} (from "
                        f"{root}) to run its current code: {type(exc).__name__}: {exc}"
                        ) from None
    with ship_local_modules(sw.config.project_path):
        return pickle_fn(obj)


def _relaunch_one(sw: Sweep, again: list[RunRow]) -> list[str]:
    """:func:`relaunch` for one launch: new tokens and attempts, payloads with the current
    code, then prepare and submit."""
    from chester.launcher.payloads import split_payload

    ref = _ref(sw.row) or _ref_from_payload(Path(again[0].local_dir))
    fn_bytes = _current_fn(sw, ref)
    sw.store.reset_for_retry([r.id for r in again])
    fresh = {r.id: r for r in sw.store.runs(sw.id)}
    todo = [fresh[r.id] for r in again]
    envs: dict[int, dict[str, str]] = {}
    for r in todo:  # the run record, with the new token and attempt (and the payload)
        path = Path(r.local_dir) / rd.RUN_JSON
        meta = rd.read_json(path) or {}
        envs[r.id] = dict(meta.get("env") or {})
        if fn_bytes is not None:
            payload = Path(r.local_dir) / rd.PAYLOAD
            _, variant = split_payload(payload.read_bytes(), meta.get("fn_bytes"))
            rd.write_bytes_atomic(payload, fn_bytes + variant, 0o600)
            meta["fn_bytes"] = len(fn_bytes)
        rd.write_json_atomic(path, {**meta, "token": r.token, "attempt": r.attempt})
    res = sw.row.options.get("resources") or []
    order = sw.row.options.get("order", "parallel")
    by_idx = {r.idx: r for r in fresh.values()}
    specs = [RunSpec(run_id=r.id, token=r.token, name=r.name, exp_prefix=sw.exp_prefix,
                     local_dir=Path(r.local_dir), remote_dir=r.remote_dir, env=envs[r.id],
                     resources=dict(res[r.idx]) if r.idx < len(res) else {},
                     attempt=r.attempt,
                     order_after=(by_idx[r.idx - 1].token,)
                     if order == "dependent" and r.idx and r.idx - 1 in by_idx else ())
             for r in todo]
    _submit(sw, specs, todo)
    return [r.name for r in todo]


def _submit(sw: Sweep, specs: list[RunSpec], todo: list[RunRow]) -> None:
    bcfg = sw.backend
    if bcfg.members:  # a pool's runs run again on the member each was placed on
        by_member: dict[str, list[int]] = {}
        for i, r in enumerate(todo):
            by_member.setdefault(r.where, []).append(i)
        for name, idx in by_member.items():
            _submit_to(sw, sw._backend_for(name), [specs[i] for i in idx],
                       [todo[i] for i in idx])
        return
    _submit_to(sw, bcfg, specs, todo)


def _submit_to(sw: Sweep, bcfg: BackendConfig, specs: list[RunSpec], todo: list[RunRow]
               ) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f"chester-{safe_component(sw.exp_prefix)}-"))
    try:
        prepared = sw.dispatcher.call("chester_prepare", bcfg, runs=specs, staging_dir=staging)
        if prepared.blockers:
            raise UserError(prepared.blockers[0])
        sw.store.set_submit_state([r.id for r in todo], "submitting")
        try:
            handles = sw.dispatcher.call("chester_submit", bcfg, prepared=prepared)
        except BaseException as exc:
            record_submit_failure(sw.store, todo, exc)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    from chester.launcher.launching import on_members

    sw.store.record_submitted(on_members(handles, todo))
    log.info("relaunched", sweep=sw.exp_prefix, backend=bcfg.name, runs=len(handles))


__all__ = ["FAILED_STATES", "RETRY_STATES", "SUBMIT_FAILED", "record_submit_failure",
           "relaunch", "retry_command"]
