"""``chester.launch``: turn a function and a sweep into tracked runs on a backend.

A launch is a :class:`~chester.launcher.request.LaunchRequest` (every argument validated
before anything is written) carried out in named steps: :func:`_plan` (configuration,
backend, fingerprint, what runs), :func:`_record` (the store: reattach, or a new launch),
:func:`_submit_all` (payloads, ``chester_prepare``, ``chester_submit``). What the launch did
is said in one line on ``Sweep.notices`` (and printed by :func:`launch`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from chester.config import ChesterConfig, get_config
from chester.digests import sha256
from chester.launcher.identity import Identity
from chester.launcher.payloads import (
    ship_local_modules,
    write_run_folder,
    write_run_folders,
    write_sweep_spec,
)
from chester.launcher.relaunching import (
    FAILED_STATES,
    RETRY_STATES,
    SUBMIT_FAILED,
    record_submit_failure,
    relaunch,
    retry_command,
)
from chester.launcher.request import LaunchRequest, Resume
from chester.launcher.sweeps import DrySweep, Sweep
from chester.logs import get_logger
from chester.plugin.dispatch import Dispatcher
from chester.plugin.errors import UserError
from chester.plugin.records import (
    BackendConfig,
    Capabilities,
    RunHandle,
    RunSpec,
    RunStatus,
    State,
)
from chester.store import Recorded, RunRow, Store, SweepRow
from chester.target import rundir as rd
from chester.target.attrdict import MARKERS, without_markers
from chester.variants import VariantGenerator
from chester.variants.naming import auto_suffix, remote_mapper, safe_component

log = get_logger()

__all__ = ["FAILED_STATES", "RETRY_STATES", "SUBMIT_FAILED", "LaunchRequest", "Resume",
           "fingerprint", "launch", "legacy_fingerprint", "relaunch", "run_request",
           "write_run_folder", "write_run_folders", "write_sweep_spec"]

_json_legacy = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


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
                names: Sequence[str] | None, run_dirs: Sequence[str] | None = None) -> str:
    """What makes a launch "the same variants again": prefix, backend, folder, names, run
    folders and variants. Stable for any picklable value across processes
    (:mod:`chester.fingerprint`); raises :class:`~chester.fingerprint.UnstableValue` for a
    value pickle could not store. (What runs is compared apart: :mod:`.identity`.)"""
    from chester.variants.fingerprint import digest

    h = sha256(b"chester-fingerprint-2\0")
    h.update(json.dumps([exp_prefix, backend, str(batch_dir), list(names or [])]).encode())
    if run_dirs:  # launches without fixed folders keep the fingerprint they always had
        h.update(json.dumps(["run_dirs", list(run_dirs)]).encode())
    for v in vlist:
        h.update(digest(without_markers(v)))
    return h.hexdigest()


def legacy_fingerprint(exp_prefix: str, backend: str, batch_dir: Path, vlist: list[dict],
                       names: Sequence[str] | None) -> str | None:
    """The fingerprint earlier versions stored, for plain JSON data only (where it was
    stable), so a sweep launched by them is still found; ``None`` for anything else."""
    h = sha256()
    h.update(json.dumps([exp_prefix, backend, str(batch_dir), list(names or [])]).encode())
    try:
        for v in vlist:
            h.update(_json_legacy(without_markers(v)).encode())
            h.update(b"\0")
    except (TypeError, ValueError):
        return None
    return h.hexdigest()


def _extra_pair(d: str, project: Path, remote_root: str | None) -> tuple[str, str]:
    """(local, remote) for one of the seed's ``extra_pull_dirs``."""
    p = Path(os.path.expanduser(str(d)))
    if p.is_absolute():
        return (str(p), str(p))
    return (str(project / p), str(Path(remote_root) / p) if remote_root else str(project / p))


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
    resume: bool | str | Resume = "auto",
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
    the runs that were never submitted (whatever ``resume`` says but ``False``).

    Running it again (``resume``, a :class:`Resume` or its older spellings): ``"auto"``
    (the default) compares with the latest launch of the same variants (same
    ``exp_prefix``, backend, folders, names and values) and reattaches to it only when what
    runs is unchanged too — the function (its module and name when imported, its code when
    defined in the script), or the command, and the project's files the backend syncs (or
    uses in place) — so nothing runs again; when what runs changed, it is a new launch
    ``PREFIX@N+1``. Either way one line says so (``Sweep.notices``, printed on stderr).
    ``True`` reattaches on the variants alone; ``False`` always makes a new launch;
    ``"incomplete"`` reattaches only to a launch that stopped while submitting (the seed
    API's and Hydra's rule: each completed run of the script launches anew);
    ``"retry"`` reattaches on the variants and submits again the runs that were ``lost``
    (``"retry-failed"``: also ``failed``, ``timeout`` and ``oom``) with the function as it
    is now, in their own folders, leaving the succeeded ones alone (:func:`relaunch` does
    the same from the command line for imported functions and commands).

    ``exp_names`` and ``run_dirs`` name each run and its folder explicitly.
    ``extra_pull_dirs`` are folders pulled with every run (relative: under the project root
    here and under the backend's ``remote_dir`` there; absolute: the same path on both).

    ``resources`` (one mapping, or one per variant) and ``order`` (``"parallel"`` or
    ``"dependent"``) are passed to backends that use them. ``dry_run`` prepares and returns
    without submitting and takes nothing: no store rows, no run folders; the prepared
    scripts are on ``sweep.prepared`` (in a staging folder that goes with the handle), and
    an option only the real submit needs (a cluster's ``account``) is a warning there.

    While a launch runs, Python's cycle collector waits (it is given back as it was, also
    after an error): a launch's objects live until it returns, and scanning them is time
    spent for nothing.
    """
    request = LaunchRequest.of(
        fn, variants, args_style=args_style, hydra_flags=hydra_flags, run_args=run_args,
        backend=backend, exp_prefix=exp_prefix, sub_dir=sub_dir, log_dir=log_dir,
        variations=variations, exp_names=exp_names, run_dirs=run_dirs,
        extra_pull_dirs=extra_pull_dirs, env=env, resources=resources, order=order,
        dry_run=dry_run, resume=resume, config=config, dispatcher=dispatcher)
    sweep = run_request(request)
    say(sweep.notices)
    return sweep


def say(notices: Sequence[tuple[str, str]], out: Any = None) -> None:
    """Print what a launch said about itself (``Sweep.notices``), one line each, on stderr
    (or ``out``)."""
    out = out or sys.stderr
    for level, text in notices:
        print(f"chester: {'warning: ' if level == 'warning' else ''}{text}", file=out)
    try:
        out.flush()
    except (OSError, ValueError):
        pass


# -- the steps ---------------------------------------------------------------------------------
@attrs.define(kw_only=True)
class Plan:
    """What a request resolves to before the store is touched."""

    request: LaunchRequest
    config: ChesterConfig
    dispatcher: Dispatcher
    backend: BackendConfig
    caps: Capabilities
    remote_root: str | None
    batch_dir: Path
    names: list[str] | None
    dirs: list[str] | None
    varying: list[str]
    fingerprints: list[str]
    identity: Identity | None

    @property
    def project_dir(self) -> str:
        """The project's folder where the runs run."""
        return self.remote_root or str(self.config.project_path)

    def remote_dir_for(self, local: str | Path) -> str:
        if self.remote_root is None:
            return str(local)
        return remote_mapper(self.config.project_path, self.remote_root)(local)


def run_request(request: LaunchRequest) -> Sweep:
    """Carry out a launch (see :func:`launch`); prints nothing: what it did is on the
    returned handle's ``notices``."""
    plan = _plan(request)
    store = _open_store(plan)
    if request.take_over and plan.dirs:
        _refresh_owners(store, plan)
    rec = _record(store, plan)
    sweep = _handle(store, plan, rec)
    rows = _after_reattach(store, plan, rec, sweep)
    todo, lost = _submittable(store, plan, rows)
    sweep.notices[:0] = _notices(store, plan, rec, rows, todo)
    if isinstance(sweep, DrySweep):
        sweep.planned = list(todo)  # what the launch would submit
    if not todo:
        if rows and not lost and not request.dry_run:
            store.mark_launch_complete(rec.sweep.id)
        return sweep
    if rec.taken and not request.dry_run:
        _clear_taken_folders(rec)
    _submit_all(store, plan, rec, todo, sweep)
    return sweep


def _plan(request: LaunchRequest) -> Plan:
    """Configuration, backend, folders, fingerprint and what runs."""
    cfg = request.config or get_config()
    dispatcher = request.dispatcher or Dispatcher()
    bcfg = cfg.backend(request.backend, dispatcher.manager)
    if bcfg.members and request.order == "dependent":
        raise UserError(f"backend {bcfg.name!r} is a pool, whose runs go to several members "
                        "at once: order='dependent' needs one backend; launch on a member")
    spec = dispatcher.manager.get_backend(bcfg.type).spec
    remote_root = spec.remote_root(bcfg.options) if spec.remote_root else None
    root = Path(request.log_dir).expanduser() if request.log_dir is not None else cfg.log_dir
    if not root.is_absolute():
        root = cfg.project_path / root
    batch_dir = root / request.sub_dir / request.exp_prefix
    vlist = request.vlist
    names = [safe_component(n) for n in request.exp_names] \
        if request.exp_names is not None else None
    dirs = None
    if request.run_dirs is not None:
        dirs = []
        for d in request.run_dirs:
            p = Path(d).expanduser()
            dirs.append(os.path.normpath(p if p.is_absolute() else cfg.project_path / p))
    varying = list(request.variations) if request.variations is not None \
        else _variations(request.variants, vlist)
    fps = _fingerprints(request, bcfg.name, batch_dir, names, dirs)
    identity = _identity(request, bcfg, [root, *{os.path.dirname(d) for d in dirs or ()}])
    return Plan(request=request, config=cfg, dispatcher=dispatcher, backend=bcfg,
                caps=spec.capabilities, remote_root=remote_root, batch_dir=batch_dir,
                names=names, dirs=dirs, varying=varying, fingerprints=fps, identity=identity)


def _fingerprints(request: LaunchRequest, backend: str, batch_dir: Path,
                  names: list[str] | None, dirs: list[str] | None) -> list[str]:
    """The launch's fingerprint, then the one earlier versions stored (if any). A value
    with no stable fingerprint is refused in one line, unless ``resume=False`` (a new
    launch whatever ran before: it then gets a fingerprint no launch matches)."""
    from chester.variants.fingerprint import UnstableValue

    vlist = request.variant_keys if request.variant_keys is not None else request.vlist
    try:
        fps = [fingerprint(request.exp_prefix, backend, batch_dir, vlist, names, dirs)]
    except UnstableValue:
        if request.resume is not Resume.NEW:
            raise
        import uuid

        return [f"new-{uuid.uuid4().hex}"]
    legacy = None if dirs else legacy_fingerprint(request.exp_prefix, backend, batch_dir,
                                                  vlist, names)
    return fps + ([legacy] if legacy else [])


def _identity(request: LaunchRequest, bcfg: BackendConfig, skip: list[Any]
              ) -> Identity | None:
    """What the launch runs. Needed to compare (``resume="auto"``): a function whose state
    has no stable digest is refused then, in one line; otherwise it is only recorded."""
    from chester.launcher.identity import identify
    from chester.variants.fingerprint import UnstableValue

    try:
        return identify(request.fn, bcfg, skip)
    except UnstableValue as exc:
        if request.resume is Resume.AUTO:
            raise UserError(f"the function has no stable digest, so a launch of it again "
                            f"cannot tell whether it changed: {exc}") from None
        return None


def _open_store(plan: Plan) -> Store:
    """The project's store; a dry run in a project that has none plans in memory (it
    creates none)."""
    path = plan.config.store_path
    if plan.request.dry_run and not path.exists():
        return Store.in_memory()
    return Store(path)


def _refresh_owners(store: Store, plan: Plan) -> None:
    """Before fixed folders are taken over: the states of the runs that own them, asked of
    their backends now (a run the store last saw running may have ended), and a folder on
    disk that no launch in the store owns but whose run is alive here is refused."""
    from chester.store import RunFolderActive
    from chester.target.tool import probe

    dirs = plan.dirs or []
    owners = store.owners(dirs)
    for sweep_id in sorted({r.sweep_id for r in owners if not r.state.terminal and r.handle}):
        Sweep(row=store.sweep(sweep_id), store=store, config=plan.config,
              dispatcher=plan.dispatcher).refresh()
    known = {os.path.normpath(r.local_dir) for r in owners}
    for d in dirs:
        if d in known or not (Path(d) / rd.RUN_JSON).is_file():
            continue
        state = probe(Path(d), kill_orphans=False)["state"]
        if state in ("queued", "running"):
            name = (rd.read_json(Path(d) / rd.RUN_JSON) or {}).get("name", Path(d).name)
            raise RunFolderActive(f"the run folder {d} holds run {name!r}, which is still "
                                  f"{state} (from a launch this job store does not know): "
                                  "wait for it to end, then launch again")


def _record(store: Store, plan: Plan) -> Recorded:
    """The store step: reattach to the latest launch of the same variants or record a new
    launch, in one transaction (a dry run keeps nothing)."""
    req = plan.request
    ident = plan.identity
    reattach = None
    if req.resume is Resume.NEW:
        def reattach(found: SweepRow) -> bool:
            return False  # found only to be named: a new launch whatever ran before
    elif req.resume is Resume.AUTO:
        what = ident.what_runs if ident else None

        def reattach(found: SweepRow) -> bool:
            # a launch that stopped while submitting is completed, whatever runs now
            return not found.launch_complete or found.what_runs in (None, what)
    extra = [_extra_pair(d, plan.config.project_path, plan.remote_root)
             for d in req.extra_pull_dirs]
    options: dict[str, Any] = {"order": req.order, "extra_pull_dirs": extra,
                               "surface": req.surface,
                               **({"resources": req.res_list} if any(req.res_list) else {}),
                               **({"identity": ident.record()} if ident else {})}
    return store.record_launch(
        exp_prefix=req.exp_prefix, backend=plan.backend.name, batch_dir=plan.batch_dir,
        fingerprint=plan.fingerprints[0],
        runs=lambda: _run_specs(plan), remote_dir_for=plan.remote_dir_for, options=options,
        resume=plan.fingerprints, incomplete_only=req.resume is Resume.INCOMPLETE,
        reattach=reattach, what_runs=ident.what_runs if ident else None,
        take_over=req.take_over, dry=req.dry_run)


def _run_specs(plan: Plan) -> list[dict[str, Any]]:
    """Each new run's name (or name suffix) and folder, for the store to number."""
    req = plan.request
    out: list[dict[str, Any]] = [
        ({"name": plan.names[i]} if plan.names
         else {"suffix": auto_suffix(req.exp_prefix, v, plan.varying)})
        for i, v in enumerate(req.vlist)]
    for i, d in enumerate(plan.dirs or ()):
        out[i]["local_dir"] = d
        out[i].setdefault("name", safe_component(Path(d).name))
    return out


def _handle(store: Store, plan: Plan, rec: Recorded) -> Sweep:
    if plan.request.dry_run:
        return DrySweep(row=rec.sweep, store=store, config=plan.config,
                        dispatcher=plan.dispatcher, backend=plan.backend,
                        planned=list(rec.runs))
    return Sweep(row=rec.sweep, store=store, config=plan.config, dispatcher=plan.dispatcher,
                 backend=plan.backend)


def _after_reattach(store: Store, plan: Plan, rec: Recorded, sweep: Sweep) -> list[RunRow]:
    """A reattached launch's runs, with its lost (and failed) runs made new submissions
    again for ``resume="retry"`` (``"retry-failed"``), and what it runs recorded when that
    changed (a retry runs the current code) or was not known yet."""
    req = plan.request
    rows = rec.runs
    if not rec.resumed or req.dry_run:
        return rows
    log.info("resuming_sweep", sweep=req.exp_prefix, sweep_id=rec.sweep.id)
    ident = plan.identity
    if req.resume.retries:
        sweep.refresh()  # the states as they are now: a run may have been lost since
        rows = store.runs(rec.sweep.id)
        states = RETRY_STATES + (FAILED_STATES if req.resume is Resume.RETRY_FAILED else ())
        again = [r.id for r in rows if r.state in states and not r.reused_by]
        if again:
            store.reset_for_retry(again)
            log.info("retrying_runs", runs=len(again))
            rows = store.runs(rec.sweep.id)
    if ident and (req.resume.retries or rec.sweep.what_runs is None):
        store.set_what_runs(rec.sweep.id, ident.what_runs,
                            {**rec.sweep.options, "identity": ident.record()})
    return rows


def _submittable(store: Store, plan: Plan, rows: list[RunRow]) -> tuple[list[RunRow], int]:
    """The runs to submit now: never submitted ones, and those caught mid-submit on a
    backend that checks tokens (the others are recorded ``lost``: whether they started is
    unknown; their count is returned too). A run whose folder a later launch took over is
    never submitted again."""
    todo: list[RunRow] = []
    lost: list[tuple[int, RunStatus]] = []
    for row in rows:
        if row.reused_by:
            continue
        if row.submit_state == "new":
            todo.append(row)
        elif row.submit_state in ("submitting", SUBMIT_FAILED):
            if _caps_of(plan, row).idempotent_submit:
                todo.append(row)  # the backend checks the token: never a second copy
            else:
                why = (f"{row.reason}" if row.submit_state == SUBMIT_FAILED and row.reason
                       else "the launcher stopped while submitting this run")
                lost.append((row.id, RunStatus(
                    state=State.LOST, reason=f"{why}; whether it started is unknown")))
    if lost and not plan.request.dry_run:
        store.record_status(lost)
        store.set_submit_state([i for i, _ in lost], "unknown")
    return todo, len(lost)


def _caps_of(plan: Plan, row: RunRow) -> Capabilities:
    """The capabilities of the backend that owns ``row``: a pool run's member's."""
    for m in plan.backend.members:
        if m.name == row.member:
            return plan.dispatcher.manager.get_backend(m.type).spec.capabilities
    return plan.caps


def _clear_taken_folders(rec: Recorded) -> None:
    """Folders taken over from ended runs: the earlier run's logs are kept beside the new
    ones (``stdout.1.log``) and its records and markers go, so nothing of it is read as the
    new run's."""
    for old in rec.taken:
        if os.path.isdir(old.local_dir):
            rd.retire(old.local_dir)


def _submit_all(store: Store, plan: Plan, rec: Recorded, todo: list[RunRow],
                sweep: Sweep, *, complete: bool = True) -> None:
    """Write the runs' payloads, render them (``chester_prepare``) and, unless this is a
    dry run, submit them (``chester_submit``). A pool's runs go member by member
    (:func:`_submit_pool`); ``complete``: the launch is whole once these are sent."""
    req = plan.request
    if plan.backend.members:
        _submit_pool(store, plan, rec, todo, sweep)
        return
    staging = Path(tempfile.mkdtemp(prefix=f"chester-{safe_component(req.exp_prefix)}-"))
    try:
        try:
            prepared = _prepare(plan, rec, todo, staging, sweep)
        except BaseException:
            # nothing was sent: a launch this call made is taken back, folders and all
            if not rec.resumed and not req.dry_run:
                _discard(store, rec.sweep.id, rec.runs, plan.batch_dir)
            raise
        sweep.prepared = prepared
        if req.dry_run:  # what it rendered stays readable while the handle lives, then goes
            weakref.finalize(sweep, shutil.rmtree, staging, True)
            return
        store.set_submit_state([r.id for r in todo], "submitting")
        try:
            handles = plan.dispatcher.call("chester_submit", plan.backend, prepared=prepared)
        except BaseException as exc:
            log.error("submit_failed", sweep=req.exp_prefix, backend=plan.backend.name)
            record_submit_failure(store, todo, exc)
            raise
    finally:
        if not req.dry_run:  # all of it has been sent (a dry run keeps it to be read)
            shutil.rmtree(staging, ignore_errors=True)
    store.record_submitted(on_members(handles, todo))
    if complete:
        store.mark_launch_complete(rec.sweep.id)
    sweep.submitted += len(handles)
    log.info("launched", sweep=req.exp_prefix, backend=plan.backend.name, runs=len(handles))


def _write_folders(plan: Plan, rows: list[RunRow], project_dir: str) -> None:
    req = plan.request
    shipping: Any = contextlib.nullcontext([]) if req.is_command else \
        ship_local_modules(plan.config.project_path)
    with shipping:
        write_run_folders(rows, fn=req.fn, variants=[req.vlist[r.idx] for r in rows],
                          project_dir=project_dir, env=req.env)


def on_members(handles: Sequence[RunHandle], rows: Sequence[RunRow]) -> list[RunHandle]:
    """The handles as recorded: a pool run's under its member's name, by which the
    dispatcher finds the member again."""
    member = {r.id: r.member for r in rows if r.member}
    if not member:
        return list(handles)
    return [attrs.evolve(h, backend=member[h.run_id]) if h.run_id in member else h
            for h in handles]


def _submit_pool(store: Store, plan: Plan, rec: Recorded, todo: list[RunRow],
                 sweep: Sweep) -> None:
    """A pool's launch: each run placed on a member (recorded before any submit), then
    each member's runs submitted in that member's own form (one array on a cluster, one
    queue on a lab) as if launched on it. Runs no member has room for stay unsubmitted:
    the launch is whole once they are placed (``chester monitor``, or running it again)."""
    from chester.launcher.placing import place
    from chester.plugin.records import PreparedSweep

    req = plan.request
    placed = place(store, plan.dispatcher, plan.backend, todo, exp_prefix=req.exp_prefix,
                   project_path=plan.config.project_path, dry=req.dry_run)
    sweep.notices += [("note", f"pool {plan.backend.name!r}: {line}")
                      for line in placed.notices]
    if not req.dry_run and placed.held:  # placed while a laptop watches: from these
        _write_folders(plan, list(placed.held), str(plan.config.project_path))
    parts: list[tuple[str, Any]] = []
    for member, rows in placed.groups:
        spec = plan.dispatcher.manager.get_backend(member.type).spec
        mplan = attrs.evolve(plan, backend=member, caps=spec.capabilities,
                             remote_root=spec.remote_root(member.options)
                             if spec.remote_root else None)
        if spec.capabilities.sweep_spec and not req.dry_run:
            # its runs travel in a sweep spec; their folders here too, so a run that never
            # starts there can move to another member
            _write_folders(mplan, list(rows), mplan.project_dir)
        _submit_all(store, mplan, rec, list(rows), sweep, complete=False)
        parts.append((member.name, sweep.prepared))
    if not placed.held and not req.dry_run:
        store.mark_launch_complete(rec.sweep.id)
    if parts:
        staging = parts[0][1].staging_dir
        sweep.prepared = PreparedSweep(
            backend=plan.backend.name, runs=tuple(r for _, p in parts for r in p.runs),
            staging_dir=staging, uploads=tuple(u for _, p in parts for u in p.uploads),
            scripts={f"{n}: {label}": text for n, p in parts for label, text in p.scripts.items()},
            summary="; ".join(f"{n}: {p.summary}" for n, p in parts),
            blockers=tuple(b for _, p in parts for b in p.blockers))


def _prepare(plan: Plan, rec: Recorded, todo: list[RunRow], staging: Path,
             sweep: Sweep) -> Any:
    """Payloads (run folders, or one sweep spec in ``staging``; a dry run writes no run
    folder) and the backend's ``chester_prepare``. What only the real submit needs and is
    missing (``PreparedSweep.blockers``) stops a launch here, and is a warning of a dry
    run (on ``sweep.notices``)."""
    req = plan.request
    spec_file: str | None = None
    variants = req.vlist
    # a command's payload is plain data: nothing to ship, no cloudpickle to load
    shipping: Any = contextlib.nullcontext([]) if req.is_command else \
        ship_local_modules(plan.config.project_path)
    with shipping:
        if plan.caps.sweep_spec:  # one file for the launch; the worker writes each folder
            spec_file = str(staging / "runs.spec")
            write_sweep_spec(spec_file, todo, fn=req.fn, variants=[variants[r.idx] for r in todo],
                             project_dir=plan.project_dir, env=req.env)
        elif not req.dry_run:
            to_write = [row for row in todo if row.submit_state == "new"
                        or not (Path(row.local_dir) / rd.RUN_JSON).exists()]
            write_run_folders(to_write, fn=req.fn, variants=[variants[r.idx] for r in to_write],
                              project_dir=plan.project_dir, env=req.env)
    by_idx = {r.idx: r for r in rec.runs}
    run_specs = [RunSpec(run_id=r.id, token=r.token, name=r.name, exp_prefix=req.exp_prefix,
                         local_dir=Path(r.local_dir), remote_dir=r.remote_dir, env=req.env,
                         resources=req.res_list[r.idx], spec_file=spec_file,
                         order_after=(by_idx[r.idx - 1].token,)
                         if req.order == "dependent" and r.idx and r.idx - 1 in by_idx else ())
                 for r in todo]
    prepared = plan.dispatcher.call("chester_prepare", plan.backend, runs=run_specs,
                                    staging_dir=staging)
    for missing in prepared.blockers:
        if not req.dry_run:
            raise UserError(missing)
        # shown, not fatal: the scripts are what a dry run is for
        sweep.notices.append(("warning", f"{missing} (the dry run shows the scripts anyway; "
                                         "the launch itself is refused until then)"))
    return prepared


def _discard(store: Store, sweep_id: int, rows: Sequence[RunRow], batch_dir: Path) -> None:
    """Take back a sweep whose launch failed before anything was submitted: its store rows
    and the run folders this launch made (they did not exist before: see
    :meth:`Store.record_launch`; folders taken over from earlier runs stay)."""
    if not store.discard_sweep(sweep_id):
        return
    for r in rows:
        shutil.rmtree(r.local_dir, ignore_errors=True)
    for d in (batch_dir, batch_dir.parent):
        try:
            d.rmdir()  # only when empty
        except OSError:
            break


# -- what a launch says about itself -----------------------------------------------------------
def _notices(store: Store, plan: Plan, rec: Recorded, rows: list[RunRow],
             todo: list[RunRow]) -> list[tuple[str, str]]:
    """The one line a launch says when it is "the same launch again" (reattached, completed,
    retried) or a new launch of variants an earlier launch ran; none for a first launch."""
    dry = "dry run: " if plan.request.dry_run else ""
    if rec.resumed:
        text: str | None = _reattached_line(store, plan, rec, rows, todo)
    elif rec.previous is not None or rec.taken:
        text = _new_launch_line(plan, rec)
    else:
        text = None
    return [("note", dry + text)] if text else []


def _counts(rows: Sequence[RunRow]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _reattached_line(store: Store, plan: Plan, rec: Recorded, rows: list[RunRow],
                     todo: list[RunRow]) -> str:
    req = plan.request
    ref = rec.sweep.ref
    if req.resume.retries:
        if not todo:
            return f"{ref}: no lost or failed runs to submit again ({_counts(rows)})"
        return f"{ref}: {len(todo)} runs submitted again, with the code as it is now"
    if not rec.sweep.launch_complete:
        return (f"{ref} stopped while submitting: completing it ({len(todo)} of "
                f"{len(rows)} runs submitted now)")
    if todo:
        return f"{ref}: {len(todo)} runs submitted now ({len(rows)} runs)"
    failed = [r for r in rows if r.state in RETRY_STATES + FAILED_STATES]
    same = "these variants with this code" if req.resume is Resume.AUTO else "these variants"
    line = f"{ref} already ran {same}: nothing runs ({len(rows)} runs: {_counts(rows)})"
    if failed:
        return f"{line}; to run its failures again: {retry_command(store, rec.sweep)}"
    again = "chester launch --new ..." if req.surface == "cli" else "resume=False"
    return f"{line}; to run them anew: {again}"


def _new_launch_line(plan: Plan, rec: Recorded) -> str:
    from chester.launcher.identity import describe_change, files_line

    req = plan.request
    ref = rec.sweep.ref
    prev = rec.previous
    parts = []
    if prev is not None and req.resume is Resume.AUTO and plan.identity is not None:
        old = (prev.options or {}).get("identity")
        what = describe_change(old, plan.identity, command=req.is_command)
        files = files_line(plan.backend.project_path, old, plan.identity)
        parts.append(f"{ref}: a new launch, because {what} since {prev.ref} "
                     f"(which ran the same variants){'; ' + files if files else ''}")
    elif prev is not None:
        why = {"seed": "a run_experiment_lite script launches anew each time it runs",
               "hydra": "a Hydra multirun launches anew each time"}.get(req.surface)
        if why is None:
            why = "--new" if req.surface == "cli" and req.resume is Resume.NEW \
                else f"resume={_resume_text(req.resume)}"
        parts.append(f"{ref}: a new launch ({why}; {prev.ref} ran the same variants)")
    else:
        parts.append(f"{ref}: a new launch")
    if rec.taken:
        owners = sorted({t.sweep_id for t in rec.taken})
        parts.append(f"taking over {len(rec.taken)} run folder"
                     f"{'s' if len(rec.taken) > 1 else ''} of "
                     f"{', '.join(f'{req.exp_prefix}@{i}' for i in owners)} (those runs keep "
                     f"their record, marked 'folder reused by {ref}')")
    return ", ".join(parts)


def _resume_text(mode: Resume) -> str:
    return {Resume.NEW: "False", Resume.VARIANTS: "True"}.get(mode, repr(mode.value))
