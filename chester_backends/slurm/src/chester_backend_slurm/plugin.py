"""The ``slurm`` backend plugin: whole sweeps as job arrays.

Submission runs where ``sbatch`` is: on this machine (no ``host``) or on a login host through
the SSH transport. A submit is four steps, each one round trip or transfer: read the cluster's
limits (``scontrol show config``), sync the code (remote only), upload every script, manifest
and run spec in one transfer, and run one script that calls ``sbatch`` once per job.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import posixpath
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from chester.logs import get_logger
from chester.plugin.errors import BackendError, TransientBackendError, UserError
from chester.plugin.manager import hookimpl, lazy_module
from chester.plugin.records import (
    BARE_EXCLUDES,
    BackendConfig,
    BackendSpec,
    Capabilities,
    Capacity,
    PreparedSweep,
    PullPatterns,
    PullResult,
    RunHandle,
    RunSpec,
    RunStatus,
    Spend,
    State,
)
from chester.remote import paths, runtime, shell
from chester.remote.backend import Backend, hook_function
from chester.target import rundir as rd
from chester_backend_slurm import cluster
from chester_backend_slurm.options import SlurmOptions, resources_for

if TYPE_CHECKING:
    from chester_backend_slurm.scheduler import Pacer

log = get_logger()

# loaded on first use: `chester plugins list` only needs the spec below
render = lazy_module("chester_backend_slurm.render")
scheduler = lazy_module("chester_backend_slurm.scheduler")

NAME = "slurm"
DEFAULT_MAX_ARRAY_SIZE = 1001
CAPABILITIES = Capabilities(remote=True, shared_fs=False, supports_arrays=True,
                            idempotent_submit=True, needs_code_sync=True,
                            status_poll_interval_s=5.0, sweep_spec=True)
SPEC_NAME = "runs.spec"  # the launch's sweep spec, in the stage folder
REST_NAME = "submit-rest.sh"  # submits the jobs a submit limit held back


def backend_spec(name: str, summary: str, options_cls: type) -> BackendSpec:
    """The spec of ``slurm`` or of a cluster preset built on it."""
    return BackendSpec(name=name, summary=summary, options_cls=options_cls,
                       capabilities=CAPABILITIES, remote_root=lambda o: o.remote_dir,
                       poll_interval=lambda o: o.poll_interval)


# -- helpers ---------------------------------------------------------------------------------
def _key(backend: BackendConfig) -> tuple[str, str | None]:
    return (backend.name, backend.options.host)


def _project_dir(backend: BackendConfig) -> str:
    return backend.options.remote_dir or str(backend.project_path)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _variant_gpus(run: RunSpec) -> Any:
    if run.spec_file:
        from chester.target import sweepspec

        v = json.loads(sweepspec.read_entry(run.spec_file, run.remote_dir)[1])
    else:
        v = rd.read_json(Path(run.local_dir) / rd.VARIANT_JSON) or {}
    return v.get("gpus") if isinstance(v, dict) else None


# -- prepare ----------------------------------------------------------------------------------
@attrs.define
class _Stage:
    """The stage folder of one sweep as it is rendered: where its files go in the local tree,
    the files sent (``rels``, in order) and the scripts shown (``scripts``)."""

    tree: Path
    stage_rel: str
    stage_dir: str
    rels: list[str] = attrs.Factory(list)
    scripts: dict[str, str] = attrs.Factory(dict)

    def add(self, name: str, body: str) -> None:
        """Write ``name`` into the stage folder: it is sent and shown."""
        _write(self.tree / self.stage_rel / name, body)
        self.rels.append(f"{self.stage_rel}/{name}")
        self.scripts[name] = body


def _sweep_resources(opts: SlurmOptions, runs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Each run's resources under ``opts``, worked out once per distinct mapping (the runs of
    a sweep often share one)."""
    by_overrides: dict[int, dict[str, Any]] = {}
    return [by_overrides.get(id(r.resources)) or by_overrides.setdefault(
        id(r.resources), resources_for(opts, r.resources)) for r in runs]


def _sweep_layout(backend: BackendConfig, runs: Sequence[RunSpec],
                  sweep_id: str) -> tuple[str, str, str, str]:
    """Where the sweep lives on the target: ``(project_dir, upload_root, stage_dir,
    stage_root)``. The upload root is the project when every run folder is under it, else
    ``/``; the stage folder is under the project's ``.chester`` or else next to the runs."""
    project_dir = _project_dir(backend)
    upload_root = project_dir if all(paths.rel_under(r.remote_dir, project_dir) is not None
                                     for r in runs) else "/"
    stage_dir = str(PurePosixPath(project_dir) / ".chester" / "slurm" / sweep_id) \
        if upload_root != "/" else str(PurePosixPath(os.path.commonpath(
            [r.remote_dir for r in runs])) / ".chester-slurm" / sweep_id)
    # each parent once: a sweep's runs share a few (commonpath splits every path it gets)
    stage_root = os.path.commonpath({posixpath.dirname(posixpath.normpath(r.remote_dir))
                                     for r in runs})
    return project_dir, upload_root, stage_dir, stage_root


def _place_run_files(backend: BackendConfig, runs: Sequence[RunSpec], tree: Path,
                     upload_root: str, spec_file: str | None) -> tuple[Path, list[str]]:
    """Which run files are sent and from where: ``(local_root, run_rels)``.

    Run files go from where they are when the project's layout is the same on both sides
    (the launcher maps run folders that way); otherwise they are linked into the tree. With
    a sweep spec there are no run files: the worker writes each folder from it."""
    local_root = Path(backend.project_path)
    mirrored = not spec_file and upload_root != "/" and all(
        paths.rel_under(r.local_dir, local_root) == paths.rel_under(r.remote_dir, upload_root)
        for r in runs)
    if not mirrored:
        local_root = tree
    run_rels: list[str] = []
    for r in runs if not spec_file else ():
        base = paths.rel_under(r.remote_dir, upload_root)
        for f in paths.RUN_FILES:
            rel = f"{base}/{f}"
            if not mirrored:
                src = Path(r.local_dir) / f
                if not src.exists():
                    continue
                paths.link_or_copy(src, tree / rel)
            run_rels.append(rel)
    return local_root, run_rels


def _stage_inputs(backend: BackendConfig, stage: _Stage, project_dir: str,
                  spec_file: str | None,
                  resources: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """Write the environment file, the sweep spec and the secrets file into the stage
    folder: ``(remote_spec, secrets_rel)``. The environment, secrets and runtime are the
    remote layer's, as on every backend; the secrets file is sent on its own, never through
    the project, and read by the submit only."""
    opts: SlurmOptions = backend.options
    stage.add("env.sh", shell.render_env_file(backend, project_dir))
    remote_spec = None
    if spec_file:
        paths.link_or_copy(Path(spec_file), stage.tree / stage.stage_rel / SPEC_NAME)
        stage.rels.append(f"{stage.stage_rel}/{SPEC_NAME}")
        remote_spec = f"{stage.stage_dir}/{SPEC_NAME}"
    secrets_rel = None
    if opts.secrets:
        render.check_export(opts, resources)
        body = shell.render_secrets(shell.secret_values(backend)).decode()
        secrets_rel = f"{stage.stage_rel}/{render.SECRETS_NAME}"
        _write(stage.tree / secrets_rel, body, mode=0o600)
    return remote_spec, secrets_rel


def _place_runtime(tree: Path, project_dir: str, upload_root: str,
                   token: str) -> tuple[str, str, str, str]:
    """Link chester's target-side runtime into the tree: ``(rt_remote, rt_part, rt_rel,
    rt_final_rel)``.

    It lives under the project (login host and compute nodes share it); the submit script
    stops before sbatch when it is missing there (then it is sent). It travels under a name
    of its own and the submit script renames it into place once its bytes check out: a run
    never starts from a file cut short or still being written."""
    rt = runtime.build()
    rt_remote = rt.remote_path(project_dir)
    rt_part = runtime.part_path(rt_remote, token)
    rt_rel = paths.rel_under(rt_part, upload_root)
    rt_final_rel = paths.rel_under(rt_remote, upload_root)
    assert rt_rel is not None and rt_final_rel is not None
    paths.link_or_copy(rt.path, tree / rt_rel)
    return rt_remote, rt_part, rt_rel, rt_final_rel


def _write_job_scripts(backend: BackendConfig, runs: Sequence[RunSpec], jobs: Sequence[Any],
                       stage: _Stage, *, stage_root: str, project_dir: str,
                       remote_spec: str | None, rt_remote: str,
                       require_env: list[str]) -> None:
    """Write each job's sbatch script and manifest (its run folders, one a line) into the
    stage folder. The seed's ``$gpus`` in ``remote_header`` is the variant's gpus of the
    job's first run."""
    opts: SlurmOptions = backend.options
    by_token = {r.token: r for r in runs}
    wants_gpus = bool(opts.remote_header and "$" in opts.remote_header)
    for job in jobs:
        text = render.job_script(
            job, opts, stage_dir=stage.stage_dir, stage_root=stage_root,
            project_dir=project_dir, env_file=f"{stage.stage_dir}/env.sh",
            spec_file=remote_spec,
            variant_gpus=_variant_gpus(by_token[job.tokens[0]]) if wants_gpus else None,
            runtime_path=rt_remote, require_env=require_env)
        manifest = "".join(f"{d}\n" for d in job.run_dirs)
        for name, body in ((job.script, text), (job.manifest, manifest)):
            p = stage.tree / stage.stage_rel / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(body, encoding="utf-8")
            stage.rels.append(f"{stage.stage_rel}/{name}")
            stage.scripts[name] = body


def _submit_prelude(backend: BackendConfig, resources: Sequence[Mapping[str, Any]],
                    project_dir: str, stage_root: str, rt_remote: str, rt_part: str,
                    require_env: list[str]) -> list[str]:
    """The submit script's lines before any sbatch: the module checks, the environment sync
    when a run asks for it, the required variables (the jobs would stop on them: stop before
    any sbatch instead) and the runtime probe."""
    opts: SlurmOptions = backend.options
    sync = any(bool(res.get("sync_on_launch", backend.sync_on_launch)) for res in resources)
    prelude = shell.env_sync_lines(backend, project_dir) if sync else []
    prelude += require_env
    mods = list(opts.modules)
    if opts.cuda_module and any(render._gpus(res) for res in resources):
        mods.append(opts.cuda_module)
    prelude = render.module_check_lines(mods) + prelude
    prelude += probe_lines(backend, resources, rt_remote, project_dir, stage_root, mods,
                           part=rt_part)
    return prelude


def render_sweep(backend: BackendConfig, runs: Sequence[RunSpec], staging_dir: Path,
                 max_array_size: int, *, size_known: bool = False) -> PreparedSweep:
    """Plan the jobs and render every file of a sweep under ``staging_dir/tree``.

    Unless ``size_known`` (just read from the cluster) or set in the options, the submit
    script first checks the cluster's MaxArraySize against ``max_array_size``."""
    opts: SlurmOptions = backend.options
    if not runs:
        raise UserError("slurm: nothing to submit")
    resources = _sweep_resources(opts, runs)
    jobs = render.plan_jobs(runs, resources, max_array_size, opts.array_throttle)
    project_dir, upload_root, stage_dir, stage_root = _sweep_layout(
        backend, runs, jobs[0].name.rsplit("-", 1)[0])
    tree = Path(staging_dir) / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    spec_file = runs[0].spec_file
    if any(r.spec_file != spec_file for r in runs):
        raise UserError("slurm: the runs of one launch must share one sweep spec")
    local_root, run_rels = _place_run_files(backend, runs, tree, upload_root, spec_file)
    stage_rel = paths.rel_under(stage_dir, upload_root)
    assert stage_rel is not None  # the stage folder is under the upload root by construction
    stage = _Stage(tree=tree, stage_rel=stage_rel, stage_dir=stage_dir)
    remote_spec, secrets_rel = _stage_inputs(backend, stage, project_dir, spec_file, resources)
    rt_remote, rt_part, rt_rel, rt_final_rel = _place_runtime(tree, project_dir, upload_root,
                                                              runs[0].token)
    require_env = shell.require_env_lines(backend, project_dir)
    _write_job_scripts(backend, runs, jobs, stage, stage_root=stage_root,
                       project_dir=project_dir, remote_spec=remote_spec, rt_remote=rt_remote,
                       require_env=require_env)
    prelude = _submit_prelude(backend, resources, project_dir, stage_root, rt_remote, rt_part,
                              require_env)
    # the cluster's MaxArraySize is checked by the submit script itself, unless set by hand
    checks = [] if size_known else cluster.cluster_check_lines(
        None if opts.max_array_size else max_array_size)
    secrets = secrets_rel is not None
    supervise = _supervise_mode(opts)
    if supervise:
        _stage_supervisor(opts, stage, jobs, jobs[0].name.rsplit("-", 1)[0] + "-supervise")
    stage.scripts["submit.sh"] = render.submit_script(jobs, stage_dir, prelude=prelude,
                                                      checks=checks, secrets=secrets,
                                                      supervise=supervise)
    # the same sbatch steps without the checks: run by later polls and by the supervisor
    # when a submit limit left jobs waiting (they submit what was not, and print the ids of
    # what was), under the stage's submit lease
    stage.add(REST_NAME, render.submit_script(jobs, stage_dir, secrets=secrets, lease=True))
    n_arrays = sum(1 for j in jobs if j.kind == "array")
    where = f"on {opts.host}" if opts.host else "on this machine"
    summary = (f"{len(runs)} runs as {len(jobs)} sbatch call(s) ({n_arrays} array(s), "
               f"MaxArraySize {max_array_size}) {where}; scripts in {stage_dir}")
    rels = stage.rels
    return PreparedSweep(
        backend=backend.name, runs=tuple(runs), staging_dir=Path(staging_dir),
        uploads=tuple(tree / r for r in (*rels, *([secrets_rel] if secrets_rel else ()))) + (
            () if spec_file else tuple(
            Path(os.path.join(local_root, r)) for r in run_rels)),
        scripts=stage.scripts, summary=summary,
        data={"jobs": [attrs.asdict(j) for j in jobs], "stage_dir": stage_dir,
              "upload_root": upload_root, "tree": str(tree), "rels": rels,
              "local_root": str(local_root), "run_rels": run_rels,
              "max_array_size": max_array_size, "project_dir": project_dir,
              "runtime_rel": rt_rel, "runtime_final_rel": rt_final_rel,
              "secrets_rel": secrets_rel})


def _supervise_mode(opts: SlurmOptions) -> str | None:
    """``"on:SECONDS"`` (always), ``"auto:SECONDS"`` (kept when a submit limit holds jobs
    back) or None. ``supervise: auto`` with ``max_retries`` is on: runs may need requeuing
    whatever the queue holds."""
    if opts.supervise is False or opts.supervise == "false":
        return None
    on = opts.supervise is True or opts.max_retries > 0
    return f"{'on' if on else 'auto'}:{opts.supervise_interval:g}"


def _stage_supervisor(opts: SlurmOptions, stage: _Stage, jobs: Sequence[Any], name: str
                      ) -> None:
    """The supervisor's files in the stage: its job script, the cycle (``supervise.py``,
    this package's :mod:`supervisor` as it is) and its configuration."""
    from chester_backend_slurm import supervisor

    stage.add(render.SUPERVISE_SCRIPT, render.supervise_script(
        opts, stage.stage_dir, name, opts.supervise_interval))
    stage.add("supervise.py", Path(supervisor.__file__).read_text(encoding="utf-8"))
    stage.add(supervisor.CONFIG, json.dumps({
        "interval": opts.supervise_interval, "max_retries": opts.max_retries,
        "retry_failed": opts.retry_failed,
        "jobs": [{"index": j.index, "kind": j.kind, "run_dirs": list(j.run_dirs)}
                 for j in jobs]}, indent=1) + "\n")


def probe_lines(backend: BackendConfig, resources: Sequence[Mapping[str, Any]],
                rt_remote: str, project_dir: str, stage_root: str,
                modules: Sequence[str], part: str | None = None) -> list[str]:
    """Submit-script lines that check, before any ``sbatch``, that the jobs' Python runs
    chester's runtime the way the jobs will run it: after the modules (where a module
    system is loaded), the package manager's activation and the ``env`` option (not the
    prepare commands, which are for compute nodes), and inside the container
    with the jobs' binds when the runs use one (one check per distinct container; runs
    without one are checked on the host first). The script stops with
    :data:`runtime.EXIT_BAD_PYTHON` / :data:`runtime.EXIT_NO_RUNTIME`. ``part``: where an
    uploaded runtime waits to be checked and renamed into place (first thing)."""
    from chester.remote import container as ctr

    opts: SlurmOptions = backend.options
    q = shlex.quote
    setup = [f"cd {q(project_dir)}"]
    if modules:
        setup.append("if type module >/dev/null 2>&1; then "
                     + "; ".join(f"module load {q(m)} >/dev/null 2>&1" for m in modules)
                     + "; fi")
    setup += shell.setup_lines(backend, project_dir)
    # the environment the jobs get (not the prepare commands: they are for compute nodes)
    setup += shell.env_export_lines(backend)
    containers: list[Any] = []
    seen: set[int] = set()
    for res in resources:
        if id(res) in seen:
            continue
        seen.add(id(res))
        c = ctr.resolve(opts, res, backend=backend.name)
        if c not in containers:
            containers.append(c)
    containers.sort(key=lambda c: c is not None)  # the host's Python first
    lines: list[str] = runtime.install_lines(rt_remote, part, strict=False) if part else []
    for c in containers:
        via = None if c is None else (ctr.env_lines(c),
                                      ctr.wrap([], c, binds=[project_dir, stage_root]))
        lines += runtime.guard_lines(opts.python, rt_remote, setup=setup, container=via)
    return lines


# -- submit -----------------------------------------------------------------------------------
def _handles(backend: BackendConfig, prepared: PreparedSweep,
             ids: Mapping[int, str], submitted_at: float,
             waiting: Mapping[int, str] | None = None,
             supervisor: str | None = None) -> list[RunHandle]:
    """One handle per run; runs of a job a submit limit held back (``waiting``: job index
    -> the limit) get no id yet, and say which job of the stage they wait in."""
    by_token: dict[str, tuple[dict, int, tuple[tuple[str, str], ...]]] = {}
    for j in prepared.data["jobs"]:
        jid = ids.get(j["index"], "")
        extra = ((("job", jid), ("kind", j["kind"]), ("submitted", f"{submitted_at:.0f}"),
                  ("stage", prepared.data["stage_dir"]), ("tasks", str(len(j["tokens"]))))
                 + ((("after", ids.get(j["after"], "") or "waiting"),)
                    if j.get("after") is not None else ())
                 + ((("deferred", str(j["index"])), ("limit", (waiting or {})[j["index"]]))
                    if not jid else ())
                 + ((("supervisor", supervisor),) if supervisor else ()))
        for i, tok in enumerate(j["tokens"]):
            by_token[tok] = (j, i, extra)  # one extra per job, shared by its runs
    host = backend.options.host or rd.hostname()
    out = []
    for r in prepared.runs:
        j, i, extra = by_token[r.token]
        jid = extra[0][1]
        rid = (f"{jid}_{i}" if j["kind"] == "array" else jid) if jid else None
        out.append(RunHandle(
            run_id=r.run_id, token=r.token, backend=backend.name, local_dir=str(r.local_dir),
            remote_dir=r.remote_dir, remote_id=rid, host=host,
            extra=extra + ((("task", str(i)),) if not jid else ())))
    return out


def _send_and_submit(backend: BackendConfig, ex: Any, prepared: PreparedSweep,
                     code_sync: Any) -> Any:
    """Send the stage (and wait for the code sync), then run the submit script; send the
    runtime and run it again if the target lacks it (the script stopped before sbatch)."""
    data = prepared.data
    local_root, tree = Path(data["local_root"]), Path(data["tree"])
    if local_root != tree:  # stage files join the run files under the project
        for rel in data["rels"]:
            dst = local_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / rel, dst)
    ex.put_tree(local_root, [*data["run_rels"], *data["rels"]], data["upload_root"])
    secrets = [data["secrets_rel"]] if data.get("secrets_rel") else []
    if secrets:  # from the staging folder (never the project); the submit script removes it
        ex.put_tree(tree, secrets, data["upload_root"])
    if not backend.options.host and \
            not (Path(data["upload_root"]) / data["runtime_final_rel"]).exists():
        # sbatch is on this machine: a missing runtime is placed now (a local copy), not
        # after the submit script stopped for it
        ex.put_tree(tree, [data["runtime_rel"]], data["upload_root"])
    if code_sync is not None:
        code_sync.result()
    res = ex.run_script(prepared.scripts["submit.sh"], timeout=1800, check=False)
    if res.exit_code == runtime.EXIT_NO_RUNTIME:
        ex.put_tree(tree, [data["runtime_rel"], *secrets], data["upload_root"])
        res = ex.run_script(prepared.scripts["submit.sh"], timeout=1800, check=False)
    return res


def _check_submit_env(backend: BackendConfig, res: Any) -> None:
    """One line when the submit script stopped on the environment, before any sbatch."""
    who = f"{backend.name} backend ({backend.options.host or rd.hostname()})"
    if res.exit_code == 5:  # the environment sync failed (uv/conda missing or failing)
        raise BackendError(f"{who}: preparing the environment failed: "
                           f"{shell.env_failure(res.stderr, res.exit_code)}")
    if res.exit_code in (runtime.EXIT_BAD_PYTHON, runtime.EXIT_NO_RUNTIME):
        runtime.check(runtime.parse_probe(res.stdout), who=who, python=backend.options.python)
        raise BackendError(f"{who}: chester's runtime could not be placed under "
                           f"{backend.options.remote_dir or backend.project_path}: "
                           f"{res.stderr.strip()[-300:]}")


def parse_submit(stdout: str) -> tuple[dict[int, str], dict[int, str], set[int]]:
    """The submit script's ``JOB``/``WAIT``/``SKIP`` lines: (ids, waiting limits, skipped)."""
    ids: dict[int, str] = {}
    waiting: dict[int, str] = {}
    skipped: set[int] = set()
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "JOB" and parts[2]:
            ids[int(parts[1])] = parts[2]
        elif len(parts) == 4 and parts[0] == "WAIT":
            waiting[int(parts[1])] = parts[2]
        elif len(parts) == 2 and parts[0] == "SKIP":
            skipped.add(int(parts[1]))
    return ids, waiting, skipped


def supervisor_of(stdout: str) -> str | None:
    """The supervisor job's id from a submit script's ``SUPERVISE`` line, if it has one."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "SUPERVISE" and parts[1] != "none":
            return parts[1]
    return None


def _check_limit_fits(backend: BackendConfig, prepared: PreparedSweep, ids: Mapping[int, str],
                      waiting: Mapping[int, str], stdout: str) -> None:
    """A job refused for a submit limit while none of the user's jobs are queued can never
    fit (an array chunk larger than the limit): one line naming the limit and the fix."""
    first = min(waiting)
    limit = waiting[first]
    queued = next((ln.split()[3] for ln in stdout.splitlines()
                   if ln.startswith(f"WAIT {first} ")), "1")
    # the sweep's own supervisor job, submitted first, is not one of the jobs that hold room
    own = 1 if supervisor_of(stdout) else 0
    if limit != "dependency" and int(queued or 0) <= own and not ids:
        size = len(prepared.data["jobs"][first]["tokens"])
        raise BackendError(f"{backend.name}: sbatch refused a job of {size} runs for "
                           f"{limit} with none of your jobs queued: each array task counts, "
                           f"so set max_array_size below your submit limit")


def _cancel_marker_line(h: RunHandle) -> str:
    """Shell that writes a run folder's cancel marker naming the run (its token)."""
    meta = f"{h.remote_dir}/.chester"
    record = json.dumps({"by": "chester cancel", "at": time.time(), "token": h.token})
    return (f"mkdir -p {shlex.quote(meta)} && printf '%s' {shlex.quote(record)} "
            f"> {shlex.quote(meta + '/cancel')}\n")


# -- status -----------------------------------------------------------------------------------
def _start_date(handles: Sequence[RunHandle]) -> str:
    ts = [float(h.get("submitted") or 0) for h in handles if h.get("submitted")]
    t = min(ts) if ts else time.time()
    return dt.datetime.fromtimestamp(t - 86400).strftime("%Y-%m-%d")


def _sched_output(h: RunHandle) -> str | None:
    """The job's own output file (``slurm-%A_%a.out`` / ``slurm-%j.out`` in the stage)."""
    stage = h.get("stage")
    if not stage or not h.remote_id:
        return None
    return f"{stage}/slurm-{h.remote_id}.out"


def submit_waiting(backend: BackendConfig, handles: Sequence[RunHandle], ex: Any
                   ) -> tuple[list[RunHandle], dict[str, RunStatus]]:
    """Submit what a submit limit held back, as far as it fits now (one round trip per
    stage, only while some run waits). Returns the handles — those of runs submitted now,
    or earlier, with their job ids — and the statuses of the runs still waiting (or
    cancelled before they were submitted)."""
    waiting = [h for h in handles if not h.remote_id and h.get("deferred") is not None]
    if not waiting:
        return list(handles), {}
    told: dict[str, tuple[dict[int, str], dict[int, str], set[int]]] = {}
    for stage in sorted({h.get("stage") or "" for h in waiting}):
        res = ex.run_script(f"bash {shlex.quote(stage + '/' + REST_NAME)}\n", timeout=600,
                            check=False)
        if res.exit_code != 0:
            raise TransientBackendError(f"{backend.name}: submitting the runs a submit limit "
                                        f"held back failed: {res.stderr.strip()[-500:]}")
        told[stage] = parse_submit(res.stdout)
    out: list[RunHandle] = []
    held: dict[str, RunStatus] = {}
    for h in handles:
        if h.remote_id or h.get("deferred") is None:
            out.append(h)
            continue
        ids, limits, skipped = told[h.get("stage") or ""]
        k = int(h.get("deferred") or -1)
        if k in ids:
            jid = ids[k]
            extra = tuple((key, jid if key == "job" else v) for key, v in h.extra
                          if key not in ("deferred", "limit", "task"))
            out.append(attrs.evolve(h, remote_id=f"{jid}_{h.get('task')}"
                                    if h.get("kind") == "array" else jid, extra=extra))
        elif k in skipped:
            held[h.token] = RunStatus(state=State.CANCELLED, host=h.host,
                                      reason="cancelled before it was submitted")
        else:
            held[h.token] = RunStatus(state=State.QUEUED, host=h.host,
                                      pending_reason="waiting to submit: "
                                      f"{limits.get(k) or h.get('limit')}")
    return out, held


def read_journals(ex: Any, handles: Sequence[RunHandle]) -> dict[str, list[dict[str, Any]]]:
    """The supervisor's journal of each stage whose runs are supervised (one round trip,
    none without a supervisor): its events other than cycles, and its last line."""
    from chester_backend_slurm.supervisor import JOURNAL

    stages = sorted({h.get("stage") or "" for h in handles if h.get("supervisor")})
    if not stages:
        return {}
    lines = []
    for st in stages:
        j = shlex.quote(f"{st}/{JOURNAL}")
        lines.append(f"printf '@@ %s\\n' {shlex.quote(st)}; if [ -e {j} ]; then "
                     f"grep -v '\"event\": \"cycle\"' {j} || true; tail -n 1 {j}; fi")
    res = ex.run_script("\n".join(lines) + "\n", timeout=120, check=False)
    out: dict[str, list[dict[str, Any]]] = {}
    cur: list[dict[str, Any]] | None = None
    for line in res.stdout.splitlines():
        if line.startswith("@@ "):
            cur = out.setdefault(line[3:], [])
        elif cur is not None and line.startswith("{"):
            try:
                cur.append(json.loads(line))
            except ValueError:
                continue
    return out


def _clock(t: Any) -> str:
    return dt.datetime.fromtimestamp(float(t)).strftime("%H:%M:%S")


def supervision_line(events: Sequence[Mapping[str, Any]]) -> str:
    """``supervisor alive, last cycle HH:MM:SS, next HH:MM:SS`` (or ``supervisor done`` /
    ``stopped`` / ``not started yet``) from a journal's events."""
    if not events:
        return "supervisor not started yet"
    last = events[-1]
    if last.get("event") in ("done", "stopped"):
        return f"supervisor {last['event']} at {_clock(last['t'])}"
    cycles = [e for e in events if e.get("event") == "cycle"]
    if not cycles:
        return f"supervisor alive, last cycle {_clock(last['t'])}"
    return (f"supervisor alive, last cycle {_clock(cycles[-1]['t'])}, "
            f"next {_clock(cycles[-1]['next'])}")


def reconcile(handles: Sequence[RunHandle], statuses: Mapping[str, RunStatus],
              journals: Mapping[str, list[dict[str, Any]]]) -> dict[str, RunStatus]:
    """Bring what the supervisor did into the runs' statuses: a run it submitted has a
    ``queued`` entry at the time it did, a run it queued again a ``requeued`` one (its
    attempt comes from the run's record); a run not finished says how the supervisor is."""
    out = dict(statuses)
    if not journals:
        return out
    for h in handles:
        st = out.get(h.token)
        events = journals.get(h.get("stage") or "")
        if st is None or events is None:
            continue
        history: list[tuple[float, str, str]] = []
        for e in events:
            if e.get("event") == "submitted" and h.get("job") and e.get("id") == h.get("job"):
                history.append((e["t"], "queued", f"submitted by the supervisor as job {e['id']}"))
            elif e.get("event") == "requeued" and e.get("run") == h.remote_dir:
                history.append((e["t"], "requeued",
                                f"requeued by the supervisor after {e.get('why')} "
                                f"(attempt {e.get('attempt')})"))
        changes: dict[str, Any] = {"history": tuple(history)} if history else {}
        if not st.state.terminal:
            line = supervision_line(events)
            changes["pending_reason"] = f"{st.pending_reason}; {line}" if st.pending_reason \
                else line
        if changes:
            out[h.token] = attrs.evolve(st, **changes)
    return out


def _last_key(h: RunHandle, last: tuple[str | None, str | None, RunStatus] | None
              ) -> str | None:
    """The scheduler line a run had at the last poll, when its records need not be read
    again while that line stays the same; ``None`` (read them) for a run not seen yet, a
    run whose worker had not written its record yet while its job ran, and a serial step
    (its job's line does not change while its steps run)."""
    if last is None or last[1] != h.remote_id or h.get("kind") == "serial":
        return None
    key, _rid, status = last
    if status.state == State.RUNNING and status.started_at is None:
        return None
    return key

class SlurmBackend(Backend):
    """The ``slurm`` backend: whole sweeps as job arrays, where ``sbatch`` is (this machine,
    or a login host through the SSH transport).

    A cluster preset is this class with other defaults: :class:`chester_backend_slurm.
    preset.Preset`. An instance keeps, per configured backend (name, host), what the
    cluster told it (``MaxArraySize``, whether accounting answers), when to ask its
    scheduler again (a :class:`~chester_backend_slurm.scheduler.Pacer`), the last statuses
    and what each run's scheduler line was at the last poll."""

    name = NAME
    summary = "SLURM job arrays, directly or through an SSH login host"
    options_cls: type = SlurmOptions

    def __init__(self) -> None:
        super().__init__()
        self._cluster: dict[tuple[str, str | None], dict[str, int]] = {}
        self._pacers: dict[tuple[str, str | None], Pacer] = {}
        self._cache: dict[tuple[str, str | None], dict[str, RunStatus]] = {}
        #: per run (token), what the last poll saw: its scheduler line (the key the status
        #: script compares, so unchanged runs' records are not read) and its status
        self._seen: dict[tuple[str, str | None],
                         dict[str, tuple[str | None, str | None, RunStatus]]] = {}

    def spec(self) -> BackendSpec:
        return backend_spec(self.name, self.summary, self.options_cls)

    def open_executor(self, backend: BackendConfig) -> Any:
        """Where ``sbatch`` runs: this machine, or the login host (one connection)."""
        from chester_backend_slurm.executor import open_executor

        return open_executor(backend.name, backend.options)

    @hookimpl
    def chester_prepare(self, backend: BackendConfig, runs: Sequence[RunSpec],
                        staging_dir: Path) -> PreparedSweep:
        opts: SlurmOptions = backend.options
        size = opts.max_array_size or self._cluster.get(_key(backend), {}).get("MaxArraySize") \
            or DEFAULT_MAX_ARRAY_SIZE
        return render_sweep(backend, runs, staging_dir, size)

    @hookimpl
    def chester_submit(self, backend: BackendConfig, prepared: PreparedSweep
                       ) -> list[RunHandle]:
        from chester.remote import codesync

        opts: SlurmOptions = backend.options
        ex = self.open_executor(backend)
        code_sync = None
        try:
            if opts.host and opts.remote_dir:
                # the code sync (its own rsync process) starts at once and runs beside the
                # connection, the cluster query and the upload of the sweep's files
                from chester.remote.ssh import Background

                filters = codesync.filter_args(backend)
                code_sync = Background(lambda: ex.push_project(backend.project_path,
                                                               opts.remote_dir, filters))
            res = _send_and_submit(backend, ex, prepared, code_sync)
            _check_submit_env(backend, res)
            info = cluster.cluster_info_of(res.stdout)
            if "MaxArraySize" not in info:  # the script's first step failed
                raise BackendError(f"{backend.name}: cannot read the cluster's configuration "
                                   f"(scontrol show config): {res.stderr.strip()[-500:]}")
            self._cluster[_key(backend)] = info
            if res.exit_code == cluster.EXIT_RECHUNK:  # cut for another MaxArraySize: again
                prepared = render_sweep(backend, prepared.runs, prepared.staging_dir / "again",
                                        info["MaxArraySize"], size_known=True)
                res = _send_and_submit(backend, ex, prepared, None)
                _check_submit_env(backend, res)
            submitted_at = time.time()
        finally:
            if code_sync is not None:
                code_sync.wait()
            ex.close()
        ids, waiting, _skipped = parse_submit(res.stdout)
        if res.exit_code == 0 and waiting:
            try:
                _check_limit_fits(backend, prepared, ids, waiting, res.stdout)
            except BackendError:
                self._stop_supervisor(backend, {prepared.data["stage_dir"]: None})
                raise
        if res.exit_code != 0 or len(ids) + len(waiting) != len(prepared.data["jobs"]):
            msg = (f"{backend.name}: sbatch failed on {opts.host or rd.hostname()} "
                   f"({len(ids)} of {len(prepared.data['jobs'])} jobs submitted): "
                   f"{res.stderr.strip()[-1500:]}")
            if ids:  # some jobs exist: a retry finds them by name and submits the rest
                raise TransientBackendError(msg)
            raise BackendError(msg)
        with self._lock:
            self._pacers.pop(_key(backend), None)
            self._cache.pop(_key(backend), None)
        if waiting:
            log.warning("submit_limit", backend=backend.name, submitted=len(ids),
                        waiting=len(waiting), limit=next(iter(waiting.values())))
        return _handles(backend, prepared, ids, submitted_at, waiting,
                        supervisor_of(res.stdout))

    def _stop_supervisor(self, backend: BackendConfig, stages: Mapping[str, int | None],
                         ex: Any = None) -> None:
        """Stop the supervisor of each stage (when ``stages[stage]``, the number of runs
        cancelled, is None or covers every run of the stage's manifests): ``supervise.stop``
        (a cycle that starts reads it and ends the chain) and ``scancel`` of its job (a
        pending one never runs)."""
        from chester_backend_slurm.supervisor import STOP

        lines = []
        for st, n in stages.items():
            d = shlex.quote(st)
            whole = "" if n is None else f' && [ "$(cat {d}/job-*.txt | wc -l)" -le {int(n)} ]'
            lines.append(f"if [ -e {d}/{render.SUPERVISE_SCRIPT} ]{whole}; then "
                         f"touch {d}/{STOP}; if [ -s {d}/{render.SUPERVISE_ID} ]; then "
                         f"scancel \"$(cat {d}/{render.SUPERVISE_ID})\" 2>/dev/null || true; "
                         "fi; fi")
        if not lines:
            return
        own = ex is None
        ex = ex or self.open_executor(backend)
        try:
            ex.run_script("\n".join(lines) + "\n", timeout=60, check=True)
        finally:
            if own:
                ex.close()

    @hookimpl
    def chester_capacity(self, backend: BackendConfig, runs: Sequence[RunSpec]) -> Capacity:
        """The room the user's submit limit leaves and when a run would start (``sbatch
        --test-only`` with the first run's resources), in one round trip
        (:mod:`chester_backend_slurm.capacity`)."""
        from chester_backend_slurm import capacity

        opts: SlurmOptions = backend.options
        res = resources_for(opts, runs[0].resources if runs else {})
        lines = render.sbatch_lines(opts, res)
        ex = self.open_executor(backend)
        try:
            out = ex.run_script(capacity.script(lines, opts.qos), timeout=60, check=False)
        finally:
            ex.close()
        # a sweep's supervisor job is submitted before its runs and takes a submit slot
        return capacity.parse(out.stdout, opts.qos, reserved=0 if opts.supervise is False else 1)

    @hookimpl
    def chester_spend(self, backend: BackendConfig, handles: Sequence[RunHandle]) -> Spend:
        """Service units the runs used so far (sacct's billing TRES x elapsed hours; one
        round trip; :mod:`chester_backend_slurm.capacity`)."""
        from chester_backend_slurm import capacity

        ids = [h.remote_id for h in handles if h.remote_id]
        if not ids:
            return Spend()
        ex = self.open_executor(backend)
        try:
            out = ex.run_script(capacity.spend_script(
                sorted({i.split("_")[0] for i in ids}), _start_date(handles)),
                timeout=60, check=False)
        finally:
            ex.close()
        return capacity.parse_spend(out.stdout, ids)

    def query(self, backend: BackendConfig, handles: Sequence[RunHandle], ex: Any = None
              ) -> tuple[str | None, dict[str, RunStatus]]:
        """One round trip: one scheduler query and every run's records. (source, statuses).
        Runs a submit limit held back are submitted first when they fit (another round trip,
        only while some wait)."""
        opts: SlurmOptions = backend.options
        own = ex is None
        ex = ex or self.open_executor(backend)
        asked = list(handles)
        try:
            handles, held = submit_waiting(backend, handles, ex)
            journals = read_journals(ex, asked)  # only where a supervisor was submitted
            by_token = {h.token: h for h in handles}
            handles_all = [by_token.get(h.token, h) for h in asked]
            handles = [h for h in handles if h.token not in held]
            if not handles:
                return None, reconcile(handles_all, held, journals)
            ids = scheduler.job_ids_of(h.remote_id for h in handles if h.remote_id)
            known = self._cluster.get(_key(backend), {})
            with self._lock:
                seen = dict(self._seen.get(_key(backend), {}))
            script = scheduler.status_script(ids, _start_date(handles),
                                             [h.remote_dir for h in handles], opts.python,
                                             accounting=bool(known.get("accounting", 1)),
                                             sched_outputs=[_sched_output(h) for h in handles],
                                             task_ids=[h.remote_id for h in handles],
                                             keys=[_last_key(h, seen.get(h.token))
                                                   for h in handles])
            res = ex.run_script(script, timeout=120, check=False)
        finally:
            if own:
                ex.close()
        try:
            source, rows, records = scheduler.split_output(res.stdout)
        except ValueError as exc:
            raise TransientBackendError(f"{backend.name}: unreadable status output from "
                                        f"{opts.host or rd.hostname()}: {exc}; "
                                        f"{res.stderr.strip()[-500:]}") from exc
        if res.exit_code != 0 and not records:
            raise TransientBackendError(f"{backend.name}: status query failed on "
                                        f"{opts.host or rd.hostname()}: {res.stderr.strip()[-500:]}")
        if source == "squeue" and known.get("accounting", 1):
            self._cluster.setdefault(_key(backend), {})["accounting"] = 0  # ask squeue directly next
        out: dict[str, RunStatus] = {}
        now: dict[str, tuple[str | None, str | None, RunStatus]] = {}
        for h in handles:
            rid = h.remote_id or ""
            rec = records.get(h.remote_dir) or {}
            last = seen.get(h.token)
            if rec.get("same") and last is not None:  # its line is unchanged: so is its state
                out[h.token] = last[2]
                now[h.token] = last
                continue
            row = rows.get(rid)
            if row is None and "_" in rid:
                parent = rows.get(rid.split("_", 1)[0])
                if parent is not None and parent.state == "PENDING":
                    row = parent
            out[h.token] = scheduler.merge(row, rec, token=h.token,
                                           remote_id=rid, host=h.host, kind=h.get("kind") or "array",
                                           source=source, depends=h.get("after") is not None)
            now[h.token] = (rec.get("key"), rid, out[h.token])
        with self._lock:
            mine = self._seen.setdefault(_key(backend), {})
            for token, entry in now.items():
                if entry[2].state.terminal:  # never polled again
                    mine.pop(token, None)
                else:
                    mine[token] = entry
        return source, reconcile(handles_all, {**out, **held}, journals)

    @hookimpl
    def chester_status(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, RunStatus]:
        opts: SlurmOptions = backend.options
        key = _key(backend)
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                pacer = self._pacers[key] = scheduler.Pacer(
                    minimum=opts.poll_interval, maximum=opts.max_poll_interval,
                    min_job_age=self._cluster.get(key, {}).get("MinJobAge"))
            cached = self._cache.get(key, {})
            if not pacer.due() and all(h.token in cached for h in handles):
                return {h.token: cached[h.token] for h in handles}
        try:
            _source, out = self.query(backend, handles)
        except TransientBackendError:
            with self._lock:
                pacer.failed()
            raise
        with self._lock:
            pacer.observed(scheduler.view_of(out))
            self._cache[key] = {**{k: v for k, v in cached.items() if not v.state.terminal}, **out}
        return out

    def watch_ends(self, backend: BackendConfig, handles: Sequence[RunHandle],
                   sink: Callable[[str, RunStatus], None]) -> Any:
        """A watcher of the runs' records where they are (:mod:`chester_backend_slurm.
        watcher`): a process here, or one command on the login host over SSH. Each final
        status it sees goes to ``sink`` and to this backend's cache, so the next poll does
        not ask about it. No scheduler query."""
        from chester_backend_slurm.watcher import Watch

        opts: SlurmOptions = backend.options
        live = [h for h in handles if h.remote_dir]
        if not live:
            return None
        key = _key(backend)

        def seen(token: str, st: RunStatus) -> None:
            with self._lock:
                self._cache.setdefault(key, {})[token] = st
                self._seen.get(key, {}).pop(token, None)
            sink(token, st)

        ex = self.open_executor(backend)
        try:
            return Watch(ex, live, opts.python, seen)
        except BaseException:
            ex.close()
            raise

    @hookimpl
    def chester_cancel(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, bool]:
        ex = self.open_executor(backend)
        asked = list(handles)
        try:
            # runs still waiting to submit: their jobs are never submitted (job-K.skip)
            skips = sorted({f"{h.get('stage')}/job-{h.get('deferred')}.skip" for h in handles
                            if not h.remote_id and h.get("deferred") is not None})
            if skips:
                ex.run_script("touch " + " ".join(shlex.quote(p) for p in skips) + "\n",
                              timeout=60, check=True)
            handles, _held = submit_waiting(backend, handles, ex)
            _src, states = self.query(backend, handles, ex)
            live = [h for h in handles if not states[h.token].state.terminal and h.remote_id]
            targets: list[str] = []
            by_job: dict[str, list[RunHandle]] = {}
            for h in live:
                by_job.setdefault(h.get("job") or (h.remote_id or "").split("_")[0], []).append(h)
            all_by_job: dict[str, int] = {}
            for h in handles:
                j = h.get("job") or (h.remote_id or "").split("_")[0]
                all_by_job[j] = all_by_job.get(j, 0) + 1
            for job, hs in by_job.items():
                # the whole array only when every task of it is asked (a pool moves one)
                tasks = int(hs[0].get("tasks") or all_by_job[job])
                if hs[0].get("kind") == "array" and len(hs) < tasks:
                    targets += [h.remote_id for h in hs if h.remote_id]
                else:
                    targets.append(job)  # the whole array, or a single/serial job
            if targets:
                # a task cancelled before it started, alone, leaves no sacct record: its
                # folder gets the cancel marker (the worker honours it; status reads it)
                marks = [_cancel_marker_line(h) for h in live
                         if h.remote_id in targets and states[h.token].state == State.QUEUED]
                ex.run_script("".join(marks) + "scancel " + " ".join(
                    shlex.quote(t) for t in targets) + "\n", timeout=60, check=True)
            # a stage whose every run is cancelled needs no supervisor any more
            per_stage: dict[str, int] = {}
            for h in asked:
                if h.get("stage"):
                    per_stage[h.get("stage") or ""] = per_stage.get(h.get("stage") or "", 0) + 1
            self._stop_supervisor(backend, per_stage, ex)
        finally:
            ex.close()
        with self._lock:
            self._cache.pop(_key(backend), None)
            if _key(backend) in self._pacers:
                self._pacers[_key(backend)].reset()
        live_tokens = {h.token for h in live} | {t for t, st in _held.items()
                                                  if st.state == State.CANCELLED}
        return {h.token: h.token in live_tokens for h in handles}

    @hookimpl
    def chester_pull(self, backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                     patterns: PullPatterns) -> list[PullResult]:
        todo = [h for h in handles
                if os.path.normpath(h.remote_dir) != os.path.normpath(h.local_dir)
                or backend.options.host]
        results = {h.token: PullResult(token=h.token) for h in handles}
        if not todo:
            return [results[h.token] for h in handles]
        remote_root = os.path.commonpath([str(PurePosixPath(h.remote_dir).parent) for h in todo])
        local_root = os.path.commonpath([str(Path(h.local_dir).parent) for h in todo])
        groups: list[tuple[str, str, list[RunHandle]]] = []
        if all(paths.rel_under(h.remote_dir, remote_root) == Path(h.local_dir).relative_to(
                local_root).as_posix() for h in todo):
            groups.append((remote_root, local_root, todo))
        else:  # folders laid out differently on each side: one rsync per run
            groups += [(str(PurePosixPath(h.remote_dir).parent), str(Path(h.local_dir).parent), [h])
                       for h in todo]
        ex = self.open_executor(backend)
        try:
            for rroot, lroot, hs in groups:
                rels = [paths.rel_under(h.remote_dir, rroot) or "" for h in hs]
                excludes = (*patterns.exclude, *(BARE_EXCLUDES if patterns.bare else ()))
                got = ex.pull(rroot, Path(lroot),
                              paths.pull_filter_args(rels, patterns.include, excludes), rels)
                # rsync counts the whole transfer; it is reported on the first run of the group
                results[hs[0].token] = PullResult(token=hs[0].token, files=got.files,
                                                  bytes=got.bytes,
                                                  complete=paths.arrived(hs[0].local_dir))
                for h in hs[1:]:
                    results[h.token] = PullResult(token=h.token,
                                                  complete=paths.arrived(h.local_dir))
            for local, remote in patterns.extra_dirs:
                ex.pull(remote, Path(local), ["--exclude=.chester/"])
        finally:
            ex.close()
        return [results[h.token] for h in handles]

    @hookimpl
    def chester_logs(self, backend: BackendConfig, handle: RunHandle, follow: bool,
                     stream: str, out: TextIO) -> bool:
        from chester.remote.follow import follow as follow_log

        path = f"{handle.remote_dir}/{rd.STDOUT if stream == 'stdout' else rd.STDERR}"
        ex = self.open_executor(backend)

        def read(offset: int) -> bytes:  # the log's bytes as they are (base64 in transit)
            res = ex.run_script(f"f={shlex.quote(path)}; if [ -f \"$f\" ]; then "
                                f"tail -c +{offset + 1} \"$f\" | base64; fi\n", timeout=60,
                                check=False)
            return base64.b64decode(res.stdout)

        def finished() -> bool:  # paced and cached like every status poll of this backend
            return self.chester_status(backend=backend,
                                       handles=[handle])[handle.token].state.terminal

        try:
            return follow_log(read, finished, self.log_cursor(handle, stream, out),
                              follow=follow)
        finally:
            ex.close()


__all__ = ["CAPABILITIES", "NAME", "SlurmBackend", "backend_spec", "parse_submit",
           "probe_lines", "render_sweep", "submit_waiting"]


def __getattr__(name: str) -> Any:  # the hooks' (and query's) earlier module-level names
    if name == "query":
        return lambda *a, **kw: SlurmBackend().query(*a, **kw)
    return hook_function(SlurmBackend, name, __name__)
