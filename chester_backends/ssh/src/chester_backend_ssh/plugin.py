"""The ``ssh`` backend plugin: sweeps on SSH hosts.

One backend is one host. Everything a remote backend shares (transport, environment,
secrets, containers, run files, runtime, progress) is the core's remote layer
(:mod:`chester.remote`); this module only composes it. Per operation the plugin opens ONE
:class:`~chester.remote.ssh.Transport` (one OpenSSH master connection, which the
commands and rsync ride; the host's key checked as the user's ``ssh`` checks it):

* submit: rsync the code; one round trip that syncs the environment (``uv sync`` /
  ``conda env update``) and checks the host's Python and runtime; one tar stream with every
  run's files (and chester's runtime, when the host does not have it yet); one script that
  starts the runtime's queue runner detached (``setsid``);
* status / cancel: one ``python RUNTIME target status|cancel -`` call, folders on stdin;
* pull: one rsync for every finished run (``--files-from``), ``--update``, no delete,
  never over a file changed here since it was pulled;
* logs: ``python RUNTIME target tail [-f]`` streamed.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from chester.plugin.errors import BackendError
from chester.plugin.manager import hookimpl
from chester.plugin.records import (
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
from chester.remote import codesync, hosted, paths, runtime, shell
from chester.remote import container as ctr
from chester.remote.ssh import Background, Transport
from chester_backend_ssh.options import SSHOptions

NAME = "ssh"

__all__ = ["NAME", "SSHOptions", "chester_dir", "render_submit_script", "sync_code",
           "target_argv", "transport_for"]


# ---------------------------------------------------------------------------- helpers
def _who(backend: BackendConfig) -> str:
    return f"ssh backend {backend.name!r} ({backend.options.host})"


def transport_for(backend: BackendConfig) -> Transport:
    return hosted.transport(backend)


def chester_dir(backend: BackendConfig) -> str:
    """chester's own folder on the host (queues, env files, runner logs, slots, runtime)."""
    return str(PurePosixPath(backend.options.remote_dir) / ".chester")


def _plan(o: SSHOptions) -> tuple[int, list[str]]:
    gpus = list(o.gpus)
    cap = o.max_parallel or (len(gpus) if gpus else 1)
    return max(1, cap), gpus


def _worker_prefix(backend: BackendConfig) -> list[str]:
    """What the runner puts before each worker's argv: the container's ``exec``, if any."""
    o: SSHOptions = backend.options
    c = ctr.resolve(o, backend=_who(backend))
    return ctr.wrap([], c, binds=[o.remote_dir], gpus=bool(o.gpus)) if c else []


def render_submit_script(backend: BackendConfig, *, queue_file: str, env_file: str,
                         secrets_file: str | None, runner_log: str, rt_remote: str) -> str:
    """The script that starts the sweep's queue on the host, detached.

    The queue runner skips every run that already started (its status carries the token)
    or that another live runner owns, so running this script twice starts nothing twice.
    The environment was synced and the Python checked just before (:func:`_probe`).
    """
    o: SSHOptions = backend.options
    cap, gpus = _plan(o)
    root = o.remote_dir
    runner = [o.python, rt_remote, "runner", "--max-parallel", str(cap),
              "--python", o.python, "--cwd", root, "--env-file", env_file,
              "--slots-dir", str(PurePosixPath(chester_dir(backend)) / "slots"),
              "--from-file", queue_file]
    prefix = _worker_prefix(backend)
    if prefix:
        runner += ["--worker-prefix", shlex.join(prefix)]
    if gpus:
        runner += ["--gpus", ",".join(gpus)]
    lines = ["set -e", f"cd {shlex.quote(root)}", *shell.setup_lines(backend, root)]
    inner = "exec " + shlex.join(runner)
    if secrets_file:
        inner = shell.source_secrets_line(secrets_file, remove=True) + "; " + inner
    lines.append(f"setsid -f sh -c {shlex.quote(inner)} "
                 f">>{shlex.quote(runner_log)} 2>&1 </dev/null")
    lines.append("echo chester-queue-started")
    return "\n".join(lines) + "\n"


def _run_handle(backend: BackendConfig, r: RunSpec, queue: str) -> RunHandle:
    return hosted.run_handle(backend, r, queue=queue)


# ---------------------------------------------------------------------------- hooks
@hookimpl
def chester_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name=NAME, summary="runs on an SSH host: code sync, detached queue, pull-back",
        options_cls=SSHOptions,
        capabilities=Capabilities(remote=True, shared_fs=False, idempotent_submit=True,
                                  needs_code_sync=True, status_poll_interval_s=2.0),
        remote_root=lambda o: o.remote_dir)]


@hookimpl
def chester_prepare(backend: BackendConfig, runs: Sequence[RunSpec],
                    staging_dir: Path) -> PreparedSweep:
    o: SSHOptions = backend.options
    if not runs:
        return PreparedSweep(backend=backend.name, runs=(), staging_dir=staging_dir)
    target = hosted.host_target(backend, _who(backend))
    ctr.resolve(o, backend=_who(backend))  # a container without an image fails here
    key = runs[0].token
    cdir = PurePosixPath(chester_dir(backend)) / "sweeps"
    queue_file = str(cdir / f"{key}.queue")
    env_file = str(cdir / f"{key}.env")
    runner_log = str(cdir / f"{key}.log")
    secrets_file = str(cdir / f"{key}.secrets") if o.secrets else None
    pre, sync_env = hosted.sweep_settings(backend, runs, _who(backend))
    rt = runtime.build()
    rt_remote = rt.remote_path(o.remote_dir)
    env_text = shell.render_env_file(backend, o.remote_dir, pre)
    queue_text = "".join(f"{r.remote_dir}\n" for r in runs)
    script = render_submit_script(backend, queue_file=queue_file, env_file=env_file,
                                  secrets_file=secrets_file, runner_log=runner_log,
                                  rt_remote=rt_remote)
    env_sync = shell.env_sync_lines(backend, o.remote_dir) if sync_env else []
    probe = "\n".join([*env_sync,
                       f"cd {shlex.quote(o.remote_dir)}",
                       runtime.probe_script(o.python, rt_remote,
                                            setup=shell.setup_lines(backend, o.remote_dir))])
    filters = codesync.filter_args(backend)
    uploads = [Path(r.local_dir) / f for r in runs for f in paths.RUN_FILES]
    # the queue and env files are staged locally under their remote paths
    tree = staging_dir / "tree"
    hosted.stage_texts(tree, {queue_file: queue_text, env_file: env_text})
    cap, gpus = _plan(o)
    return PreparedSweep(
        backend=backend.name, runs=tuple(runs), staging_dir=staging_dir,
        uploads=tuple(uploads),
        scripts={"probe.sh": probe, "submit.sh": script, "env.sh": env_text,
                 "queue": queue_text,
                 "rsync": codesync.display(target, backend, o.remote_dir, filters)},
        summary=(f"{len(runs)} runs on {o.host} ({hosted.code_note(backend)}{cap} at a time"
                 + (f", GPUs {','.join(gpus)}" if gpus else "") + f") under {o.remote_dir}"),
        data={"queue_file": queue_file, "env_file": env_file, "runner_log": runner_log,
              "secrets_file": secrets_file, "filters": filters, "script": script,
              "probe": probe, "probe_needs_code": bool(env_sync), "tree": str(tree),
              "queue_key": key,
              "runtime": str(rt.path), "runtime_remote": rt_remote},
    )


def sync_code(backend: BackendConfig, tr: Transport, *, dry_run: bool = False,
              filters: Sequence[str] | None = None) -> Any:
    """rsync the project (and ``extra_sync_dirs``) to the host. Never deletes anything."""
    o: SSHOptions = backend.options
    return codesync.sync(backend, tr, o.remote_dir, extra_dirs=o.extra_sync_dirs,
                         filters=filters, dry_run=dry_run)


def _probe(backend: BackendConfig, tr: Transport, script: str) -> runtime.Probe:
    """Sync the environment and check the host's Python, before anything is queued."""
    return runtime.probe_target(tr, script, who=_who(backend),
                                python=backend.options.python)[0]


@hookimpl
def chester_submit(backend: BackendConfig, prepared: PreparedSweep) -> list[RunHandle]:
    o: SSHOptions = backend.options
    if not prepared.runs:
        return []
    d = prepared.data
    secrets = shell.secret_values(backend) if o.secrets else {}
    tree = Path(d["tree"])
    with transport_for(backend) as tr:
        files = hosted.stage_while_logging_in(tr, prepared, tree)
        # the code sync (rsync, over the same connection) runs beside the probe and the
        # upload of the run files, unless the environment sync needs the code first
        code = Background(lambda: sync_code(backend, tr, filters=d["filters"])) \
            if o.sync else None
        try:
            if code is not None and d["probe_needs_code"]:
                code.result()
            probe = _probe(backend, tr, d["probe"])
            install = [] if probe.runtime_present else \
                hosted.add_runtime(files, tree, d, d["queue_key"])
            hosted.put_tree(tr, tree, files, install)
            if code is not None:
                code.result()
        except BaseException:
            if code is not None:
                code.wait()
            raise
        if d["secrets_file"]:
            tr.put_bytes(shell.render_secrets(secrets), d["secrets_file"], 0o600)
        try:
            res = tr.run_script("\n".join([*install, d["script"]]), timeout=600, check=False)
        except BaseException:
            shell.remove_secrets(tr, d["secrets_file"])
            raise
        if "chester-queue-started" not in res.stdout:
            shell.remove_secrets(tr, d["secrets_file"])
            raise BackendError(f"{_who(backend)}: the queue did not start: "
                               f"{res.stderr.strip()[-300:]}")
    return [_run_handle(backend, r, d["queue_key"]) for r in prepared.runs]


def target_argv(backend: BackendConfig, args: Sequence[str]) -> list[str]:
    """argv running chester's target tool (``status``/``cancel``/``tail``) on the host from
    the runtime, with the package manager's environment."""
    o: SSHOptions = backend.options
    rt = runtime.build()
    return hosted.setup_argv(backend, "chester-target",
                             [*rt.argv(o.python, "target", o.remote_dir), *args])


def _ensure_runtime(backend: BackendConfig, tr: Transport) -> None:
    runtime.send(tr, runtime.build(), backend.options.remote_dir, who=_who(backend))


def _target_call(backend: BackendConfig, tr: Transport, args: Sequence[str],
                 stdin: str | None = None, timeout: float | None = 120) -> Any:
    return runtime.call_json(tr, target_argv(backend, args), who=_who(backend),
                             what="chester's target tool", stdin=stdin, timeout=timeout,
                             resend=lambda: _ensure_runtime(backend, tr))


@hookimpl
def chester_status(backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, RunStatus]:
    if not handles:
        return {}
    with transport_for(backend) as tr:
        data = _target_call(backend, tr, ["status", "-"], stdin=hosted.folders_stdin(handles))
    return {h.token: RunStatus.from_probe(data[h.remote_dir]) for h in handles}


@hookimpl
def chester_cancel(backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, bool]:
    if not handles:
        return {}
    with transport_for(backend) as tr:
        data = _target_call(backend, tr, ["cancel", "-"], stdin=hosted.folders_stdin(handles))
    return {h.token: bool(data.get(h.remote_dir)) for h in handles}


#: bytes of a log already written to an ``out`` by an earlier attempt of the same call (the
#: dispatcher retries ``chester_logs`` after a dropped link): the retry goes on from there
_LOG_SENT: dict[tuple[str, str, int], int] = {}


@hookimpl
def chester_logs(backend: BackendConfig, handle: RunHandle, follow: bool, stream: str,
                 out: TextIO) -> bool:
    key = (handle.token, stream, id(out))
    start = _LOG_SENT.get(key, 0)
    argv = target_argv(backend, ["tail", *(["-f"] if follow else []), "--from", str(start),
                                 handle.remote_dir, stream])

    def write(text: str) -> None:
        out.write(text)
        out.flush()
        _LOG_SENT[key] = _LOG_SENT.get(key, 0) + len(text.encode("utf-8", "surrogatepass"))

    with transport_for(backend) as tr:
        hosted.stream_tool(tr, argv, write, lambda: _ensure_runtime(backend, tr))
    _LOG_SENT.pop(key, None)
    return True


@hookimpl
def chester_pull(backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                 patterns: PullPatterns) -> list[PullResult]:
    from chester.remote.pull import pull_runs

    if not handles:
        return []
    with transport_for(backend) as tr:
        return pull_runs(f"pull {backend.name}", tr, handles, backend.options.remote_dir,
                         Path(dest), patterns)
