"""The ``ssh`` backend plugin: sweeps on SSH hosts.

One backend is one host. Per operation the plugin opens ONE :class:`Transport` (one fabric
connection, plus one ControlMaster connection when rsync runs):

* submit: rsync the code (once per sweep), send every run's ``variant.json`` and
  ``.chester/`` records plus the sweep's queue and env files in one tar stream, then one
  script starts ``python -m chester.runner`` detached (``setsid``) with the sweep's queue;
* status / cancel: one ``python -m chester.target status|cancel -`` call, folders on stdin;
* pull: one rsync for every finished run (``--files-from``), ``--update``, no delete;
* logs: ``python -m chester.target tail [-f]`` streamed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from chester import rundir as rd
from chester.errors import BackendError, UserError
from chester.plugins import hookimpl
from chester.types import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    PreparedSweep,
    PullPatterns,
    PullResult,
    RunHandle,
    RunSpec,
    RunStatus,
)
from chester_backend_ssh.options import SSHOptions
from chester_backend_ssh.transport import SSHTarget, SyncStats, Transport

NAME = "ssh"
#: run-folder files the launcher wrote locally and a submit sends
RUN_FILES = (rd.VARIANT_JSON, rd.RUN_JSON, rd.PAYLOAD)
#: never pulled back: the launcher has them already
PULL_EXCLUDES = (f"/{rd.PAYLOAD}", "claim.lock")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

__all__ = ["SSHOptions", "NAME", "transport_for", "render_env_file", "render_submit_script",
           "secret_values", "sync_code", "target_argv", "code_footprint"]


# ---------------------------------------------------------------------------- helpers
def transport_for(backend: BackendConfig) -> Transport:
    o: SSHOptions = backend.options
    target = SSHTarget.parse(o.host, user=o.user, port=o.port, key_filename=o.key_filename,
                             ssh_config=o.ssh_config, connect_timeout=o.connect_timeout)
    return Transport(target, backend=backend.name)


def _pm(backend: BackendConfig) -> str:
    return backend.options.package_manager or backend.package_manager or "python"


def chester_dir(backend: BackendConfig) -> str:
    """chester's own folder on the host (queues, env files, runner logs, slots)."""
    return str(PurePosixPath(backend.options.remote_dir) / ".chester")


def pm_setup_lines(backend: BackendConfig) -> list[str]:
    """POSIX sh lines that put the package manager's Python first on PATH."""
    pm = _pm(backend)
    root = backend.options.remote_dir
    if pm == "uv":
        act = str(PurePosixPath(root) / ".venv" / "bin" / "activate")
        return [f"if [ -f {shlex.quote(act)} ]; then . {shlex.quote(act)}; fi"]
    if pm == "conda":
        if not backend.conda_env:
            return []
        cmd = shlex.join([backend.conda_command, "shell.posix", "activate", backend.conda_env])
        return [f'eval "$({cmd})"']
    return []


def render_env_file(backend: BackendConfig, pre_commands: Sequence[str] = ()) -> str:
    """The file sourced (by ``/bin/sh``) before each run: package manager, prepare commands,
    prepare script, environment. Secrets are not in it."""
    o: SSHOptions = backend.options
    lines = ["# chester: sourced before each run of this sweep", *pm_setup_lines(backend)]
    for k, v in o.env.items():
        if not _ENV_NAME.match(k):
            raise UserError(f"ssh backend {backend.name!r}: env name {k!r} is not a valid "
                            "variable name")
        lines.append(f"export {k}={shlex.quote(str(v))}")
    lines += [str(c) for c in (*backend.prepare_commands, *o.prepare_commands, *pre_commands)]
    if o.prepare_script:
        p = o.prepare_script
        p = p if p.startswith("/") else str(PurePosixPath(o.remote_dir) / p)
        lines.append(f"if [ -f {shlex.quote(p)} ]; then . {shlex.quote(p)}; fi")
    lines.append(":")  # the file's status is 0 unless a prepare line failed just before
    return "\n".join(lines) + "\n"


def _plan(o: SSHOptions) -> tuple[int, list[str]]:
    gpus = list(o.gpus)
    cap = o.max_parallel or (len(gpus) if gpus else 1)
    return max(1, cap), gpus


def render_submit_script(backend: BackendConfig, *, queue_file: str, env_file: str,
                         secrets_file: str | None, runner_log: str,
                         sync_env: bool | None = None) -> str:
    """The one script a submit runs on the host: optional env sync, then the detached queue.

    The queue runner skips every run that already started (its status carries the token)
    or that another live runner owns, so running this script twice starts nothing twice.
    """
    o: SSHOptions = backend.options
    cap, gpus = _plan(o)
    root = o.remote_dir
    cdir = chester_dir(backend)
    runner = [o.python, "-m", "chester.runner", "--max-parallel", str(cap),
              "--python", o.python, "--cwd", root, "--env-file", env_file,
              "--slots-dir", str(PurePosixPath(cdir) / "slots"), "--from-file", queue_file]
    if gpus:
        runner += ["--gpus", ",".join(gpus)]
    lines = ["set -e", f"cd {shlex.quote(root)}"]
    pm = _pm(backend)
    for line in pm_setup_lines(backend):
        lines.append(line)
    sync_env = backend.sync_on_launch if sync_env is None else sync_env
    if sync_env and pm == "uv":
        lines.append("if [ -f pyproject.toml ] && command -v uv >/dev/null; then "
                     "uv sync -q >&2; fi")
    elif sync_env and pm == "conda" and backend.conda_env:
        lines.append("if [ -f environment.yml ]; then "
                     + shlex.join([backend.conda_command, "env", "update", "-q", "-n",
                                   backend.conda_env, "-f", "environment.yml"]) + " >&2; fi")
    # the queue: started in its own session, detached from this SSH session
    inner = "exec " + shlex.join(runner)
    if secrets_file:
        sq = shlex.quote(secrets_file)
        inner = f"set -a; . {sq}; set +a; rm -f {sq}; " + inner
    lines.append(f"setsid -f sh -c {shlex.quote(inner)} "
                 f">>{shlex.quote(runner_log)} 2>&1 </dev/null")
    lines.append("echo chester-queue-started")
    return "\n".join(lines) + "\n"


def _secret_values(backend: BackendConfig) -> dict[str, str]:
    """Read the secrets' values locally (names of env vars, or KEY=VALUE files)."""
    out: dict[str, str] = {}
    for item in backend.options.secrets:
        if _ENV_NAME.match(item):
            if item not in os.environ:
                raise UserError(f"ssh backend {backend.name!r}: secret {item!r} is not set in "
                                "the local environment")
            out[item] = os.environ[item]
            continue
        path = Path(os.path.expanduser(item))
        if not path.is_absolute():
            path = backend.project_path / path
        try:
            text = path.read_text()
        except OSError as exc:
            raise UserError(f"ssh backend {backend.name!r}: cannot read secrets file "
                            f"{str(path)!r}: {exc.strerror}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].lstrip()
            k, sep, v = line.partition("=")
            k = k.strip()
            if not sep or not _ENV_NAME.match(k):
                raise UserError(f"ssh backend {backend.name!r}: {path}:{n}: expected KEY=VALUE")
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            out[k] = v
    return out


#: public name (the SLURM backend uses it); ``_secret_values`` stays for compatibility
secret_values = _secret_values


def _render_secrets(values: Mapping[str, str]) -> bytes:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()).encode()


def _run_handle(backend: BackendConfig, r: RunSpec, queue: str) -> RunHandle:
    return RunHandle(run_id=r.run_id, token=r.token, backend=backend.name,
                     local_dir=str(r.local_dir), remote_dir=r.remote_dir,
                     host=backend.options.host, extra=(("queue", queue),))


def _rel_under(path: str | Path, root: str | Path) -> str | None:
    try:
        rel = PurePosixPath(str(path)).relative_to(PurePosixPath(str(root)))
    except ValueError:
        return None
    return rel.as_posix()


# ---------------------------------------------------------------------------- hooks
@hookimpl
def chester_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name=NAME, summary="runs on an SSH host: code sync, detached queue, pull-back",
        options_cls=SSHOptions,
        capabilities=Capabilities(remote=True, shared_fs=False, idempotent_submit=True,
                                  needs_code_sync=True, status_poll_interval_s=2.0))]


@hookimpl
def chester_prepare(backend: BackendConfig, runs: Sequence[RunSpec],
                    staging_dir: Path) -> PreparedSweep:
    from chester.sync import log_dir_exclude, rsync_filter_args

    o: SSHOptions = backend.options
    if not runs:
        return PreparedSweep(backend=backend.name, runs=(), staging_dir=staging_dir)
    if not o.remote_dir.startswith("/"):
        raise UserError(f"ssh backend {backend.name!r}: remote_dir must be an absolute path, "
                        f"not {o.remote_dir!r}")
    try:
        SSHTarget.parse(o.host)
    except ValueError as exc:
        raise UserError(f"ssh backend {backend.name!r}: {exc}") from None
    for item in o.secrets:  # names only are checked here; values are read at submit
        if _ENV_NAME.match(item) and item not in os.environ:
            raise UserError(f"ssh backend {backend.name!r}: secret {item!r} is not set in the "
                            "local environment")
    key = runs[0].token
    cdir = PurePosixPath(chester_dir(backend)) / "sweeps"
    queue_file = str(cdir / f"{key}.queue")
    env_file = str(cdir / f"{key}.env")
    runner_log = str(cdir / f"{key}.log")
    secrets_file = str(cdir / f"{key}.secrets") if o.secrets else None
    # the seed's per-call settings (run_experiment_lite pre_commands= / sync_env=)
    pres = {tuple(str(c) for c in (r.resources.get("pre_commands") or ())) for r in runs}
    if len(pres) > 1:
        raise UserError(f"ssh backend {backend.name!r}: pre_commands must be the same for "
                        "every run of a sweep")
    syncs = {r.resources["sync_on_launch"] for r in runs if "sync_on_launch" in r.resources}
    sync_env = bool(any(syncs)) if syncs else None
    env_text = render_env_file(backend, next(iter(pres)))
    queue_text = "".join(f"{r.remote_dir}\n" for r in runs)
    script = render_submit_script(backend, queue_file=queue_file, env_file=env_file,
                                  secrets_file=secrets_file, runner_log=runner_log,
                                  sync_env=sync_env)
    filters = rsync_filter_args(backend.rsync_include, backend.rsync_exclude,
                                log_dir_exclude(backend.project_path, backend.log_dir))
    uploads: list[Path] = []
    for r in runs:
        for f in RUN_FILES:
            uploads.append(Path(r.local_dir) / f)
    # the queue and env files are staged locally under their remote paths
    tree = staging_dir / "tree"
    for rpath, text in ((queue_file, queue_text), (env_file, env_text)):
        p = tree / rpath.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    cap, gpus = _plan(o)
    sync_note = ""
    if o.sync:
        n_files, n_bytes = code_footprint(backend)
        sync_note = f"code: up to {n_files} files, {n_bytes} bytes to sync; "
    return PreparedSweep(
        backend=backend.name, runs=tuple(runs), staging_dir=staging_dir,
        uploads=tuple(uploads),
        scripts={"submit.sh": script, "env.sh": env_text, "queue": queue_text,
                 "rsync": _rsync_display(backend, filters)},
        summary=(f"{len(runs)} runs on {o.host} ({sync_note}{cap} at a time"
                 + (f", GPUs {','.join(gpus)}" if gpus else "") + f") under {o.remote_dir}"),
        data={"queue_file": queue_file, "env_file": env_file, "runner_log": runner_log,
              "secrets_file": secrets_file, "filters": filters, "script": script,
              "tree": str(tree), "queue_key": key},
    )


def code_footprint(backend: BackendConfig) -> tuple[int, int]:
    """Files and bytes the code sync would send to an empty host (local, no network;
    rsync itself sends only what changed)."""
    from chester.sync import log_dir_exclude, select_files

    o: SSHOptions = backend.options
    extra = log_dir_exclude(backend.project_path, backend.log_dir)
    roots = [backend.project_path]
    for d in o.extra_sync_dirs:
        p = Path(os.path.expanduser(d))
        roots.append(p if p.is_absolute() else backend.project_path / p)
    files = size = 0
    for root in roots:
        for _rel, path in select_files(root, backend.rsync_include, backend.rsync_exclude,
                                       extra):
            files += 1
            try:
                size += path.stat().st_size
            except OSError:
                pass
    return files, size


def _rsync_display(backend: BackendConfig, filters: Sequence[str]) -> str:
    o: SSHOptions = backend.options
    t = SSHTarget.parse(o.host, user=o.user, port=o.port, key_filename=o.key_filename,
                        ssh_config=o.ssh_config)
    ssh = ["ssh", *(["-F", t.ssh_config] if t.ssh_config else []),
           *(["-p", str(t.port)] if t.port else []), *(["-i", t.key_filename] if t.key_filename else []),
           *(["-l", t.user] if t.user else [])]
    return shlex.join(["rsync", "-e", shlex.join(ssh), "-rlptz", "--mkpath", *filters,
                       f"{backend.project_path}/", f"{t.host}:{o.remote_dir}/"])


def target_argv(backend: BackendConfig, args: Sequence[str]) -> list[str]:
    """argv running ``python -m chester.target ARGS`` on the host, with the package
    manager's environment (so ``python`` is the one that has chester)."""
    o: SSHOptions = backend.options
    setup = pm_setup_lines(backend)
    argv = [o.python, "-m", "chester.target", *args]
    if not setup:
        return argv
    return ["sh", "-c", "\n".join([f"cd {shlex.quote(o.remote_dir)} 2>/dev/null || true",
                                    *setup, 'exec "$@"']), "chester-target", *argv]


def sync_code(backend: BackendConfig, tr: Transport, *, dry_run: bool = False,
              filters: Sequence[str] | None = None) -> SyncStats:
    """rsync the project (and ``extra_sync_dirs``) to the host. Never deletes anything."""
    from chester.sync import log_dir_exclude, rsync_filter_args

    o: SSHOptions = backend.options
    if filters is None:
        filters = rsync_filter_args(backend.rsync_include, backend.rsync_exclude,
                                    log_dir_exclude(backend.project_path, backend.log_dir))
    stats = tr.rsync_push(backend.project_path, o.remote_dir, filter_args=filters,
                          dry_run=dry_run)
    for d in o.extra_sync_dirs:
        p = Path(os.path.expanduser(d))
        local = p if p.is_absolute() else backend.project_path / p
        rel = _rel_under(local, backend.project_path)
        remote = str(PurePosixPath(o.remote_dir) / rel) if rel is not None else str(local)
        stats = stats + tr.rsync_push(local, remote, filter_args=filters, dry_run=dry_run)
    return stats


def _stage_run_files(prepared: PreparedSweep, tree: Path) -> list[str]:
    """Hard-link (or copy) each run's files into the staging tree under their remote
    paths; return every file of the tree relative to it."""
    for r in prepared.runs:
        for f in RUN_FILES:
            src = Path(r.local_dir) / f
            if not src.exists():
                continue
            dst = tree / str(PurePosixPath(r.remote_dir) / f).lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                dst.unlink()
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())


@hookimpl
def chester_submit(backend: BackendConfig, prepared: PreparedSweep) -> list[RunHandle]:
    o: SSHOptions = backend.options
    if not prepared.runs:
        return []
    d = prepared.data
    secrets = _secret_values(backend) if o.secrets else {}
    tree = Path(d["tree"])
    files = _stage_run_files(prepared, tree)
    with transport_for(backend) as tr:
        if o.sync:
            sync_code(backend, tr, filters=d["filters"])
        tr.put_tree(tree, files, "/")
        if d["secrets_file"]:
            tr.put_bytes(_render_secrets(secrets), d["secrets_file"], 0o600)
        res = tr.run_script(d["script"], timeout=600)
        if "chester-queue-started" not in res.stdout:
            raise BackendError(f"ssh backend {backend.name!r} ({o.host}): the queue did not "
                               f"start: {res.stderr.strip()[-300:]}")
    return [_run_handle(backend, r, d["queue_key"]) for r in prepared.runs]


def _target_call(backend: BackendConfig, tr: Transport, args: Sequence[str],
                 stdin: str | None = None, timeout: float | None = 120) -> Any:
    o: SSHOptions = backend.options
    res = tr.run(target_argv(backend, args), stdin=stdin, timeout=timeout)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BackendError(f"ssh backend {backend.name!r} ({o.host}): unexpected answer from "
                           f"chester.target: {res.stdout.strip()[-200:]!r} "
                           f"{res.stderr.strip()[-200:]!r}") from None


@hookimpl
def chester_status(backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, RunStatus]:
    from chester.target import to_status

    if not handles:
        return {}
    with transport_for(backend) as tr:
        data = _target_call(backend, tr, ["status", "-"],
                            stdin="".join(f"{h.remote_dir}\n" for h in handles))
    return {h.token: to_status(data[h.remote_dir]) for h in handles}


@hookimpl
def chester_cancel(backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, bool]:
    if not handles:
        return {}
    with transport_for(backend) as tr:
        data = _target_call(backend, tr, ["cancel", "-"],
                            stdin="".join(f"{h.remote_dir}\n" for h in handles))
    return {h.token: bool(data.get(h.remote_dir)) for h in handles}


@hookimpl
def chester_logs(backend: BackendConfig, handle: RunHandle, follow: bool, stream: str,
                 out: TextIO) -> bool:
    argv = target_argv(backend, ["tail", *(["-f"] if follow else []), handle.remote_dir,
                                 stream])

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    with transport_for(backend) as tr:
        tr.stream(argv, write)
    return True


def _pull_groups(backend: BackendConfig, handles: Sequence[RunHandle],
                 dest: Path) -> Iterator[tuple[str, Path, list[tuple[RunHandle, str]]]]:
    """Group runs by (remote root, local root) so each group is one rsync: normally every
    run maps ``remote_dir`` onto the project."""
    o: SSHOptions = backend.options
    groups: dict[tuple[str, str], list[tuple[RunHandle, str]]] = {}
    for h in handles:
        rrel = _rel_under(h.remote_dir, o.remote_dir)
        lrel = _rel_under(h.local_dir, dest)
        if rrel is not None and lrel is not None and rrel == lrel:
            groups.setdefault((o.remote_dir, str(dest)), []).append((h, rrel))
        else:
            rparent = str(PurePosixPath(h.remote_dir).parent)
            lparent = str(Path(h.local_dir).parent)
            groups.setdefault((rparent, lparent), []).append((h, PurePosixPath(h.remote_dir).name))
    for (rroot, lroot), items in groups.items():
        yield rroot, Path(lroot), items


class _Progress:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, label: str, total: int):
        self.bar = None
        if sys.stderr.isatty() and total:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@hookimpl
def chester_pull(backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                 patterns: PullPatterns) -> list[PullResult]:
    if not handles:
        return []
    filters = [f"--include={p}" for p in patterns.include]
    filters += [f"--exclude={p}" for p in (*PULL_EXCLUDES, *patterns.exclude)]
    per: dict[str, list[int]] = {h.token: [0, 0] for h in handles}
    seen_runs: set[str] = set()
    with transport_for(backend) as tr:
        for rroot, lroot, items in _pull_groups(backend, handles, Path(dest)):
            prefixes = sorted(((rel.rstrip("/") + "/", h.token) for h, rel in items),
                              key=lambda x: -len(x[0]))
            bar = _Progress(f"pull {backend.name}", len(items))

            def progress(name: str, size: int, prefixes=prefixes, bar=bar) -> None:
                for pre, tok in prefixes:
                    if name.startswith(pre):
                        per[tok][0] += 1
                        per[tok][1] += size
                        if tok not in seen_runs:
                            seen_runs.add(tok)
                            bar.advance()
                        return

            try:
                tr.rsync_pull(rroot, lroot, filter_args=filters,
                              files_from=[rel for _, rel in items], progress=progress)
            finally:
                bar.close()
        for local, remote in patterns.extra_dirs:
            tr.rsync_pull(remote, Path(local), filter_args=filters)
    results = []
    for h in handles:
        complete = (Path(h.local_dir) / rd.STATUS).exists() or \
            (Path(h.local_dir) / rd.DONE).exists()
        results.append(PullResult(token=h.token, files=per[h.token][0], bytes=per[h.token][1],
                                  complete=complete))
    return results
