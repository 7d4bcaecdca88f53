"""The ``autobot`` backend plugin: a lab's GPU nodes behind one login host, no SLURM.

The login host and the nodes share a filesystem (``remote_dir``). Everything remote backends
share (transport, environment, secrets, containers, run files, runtime, progress) is the
core's remote layer (:mod:`chester.remote`); the placement is :mod:`.scheduler`, a file
uploaded next to chester's runtime (from which it imports the rule from records to states)
and run on the login host. Per
operation the plugin opens ONE :class:`~chester.remote.ssh.Transport` to the login host:

* submit: rsync the code; one round trip that syncs the environment and checks the login
  host's Python, runtime and scheduler; one tar stream with every run's files and the
  sweep's queue file (plus the runtime / scheduler when missing); one call that enqueues the
  sweep and starts the scheduler loop detached unless one runs;
* status / cancel: one ``python SCHEDULER status|cancel ROOT`` call, folders on stdin;
* pull: one rsync for every finished run; logs: ``python SCHEDULER tail [-f]`` streamed.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from chester.plugin.errors import BackendError, UserError
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
from chester.remote.ssh import Transport
from chester_backend_autobot.options import AutobotOptions, node_name

NAME = "autobot"
SCHEDULER_SRC = Path(__file__).with_name("scheduler.py")

__all__ = ["NAME", "AutobotOptions", "autobot_root", "scheduler_remote", "transport_for"]


# ---------------------------------------------------------------------------- helpers
def _who(backend: BackendConfig) -> str:
    return f"autobot backend {backend.name!r} ({backend.options.host})"


def transport_for(backend: BackendConfig) -> Transport:
    return hosted.transport(backend)


def autobot_root(backend: BackendConfig) -> str:
    """The scheduler's folder on the shared filesystem (queue, leases, state, log)."""
    return str(PurePosixPath(backend.options.remote_dir) / ".chester" / "autobot")


@cache
def _scheduler_digest() -> str:
    return hashlib.sha256(SCHEDULER_SRC.read_bytes()).hexdigest()[:16]


def scheduler_remote(backend: BackendConfig) -> str:
    """Where this version's scheduler file lives on the shared filesystem."""
    return str(PurePosixPath(autobot_root(backend)) / f"scheduler-{_scheduler_digest()}.py")


def _worker_prefix(backend: BackendConfig) -> list[str]:
    o: AutobotOptions = backend.options
    c = ctr.resolve(o, backend=_who(backend))
    return ctr.wrap([], c, binds=[o.remote_dir], gpus=True) if c else []


def _run_gpus(backend: BackendConfig, r: RunSpec) -> int:
    g = r.resources.get("gpus_per_run", r.resources.get("gpus"))
    try:
        n = int(g) if g is not None else backend.options.gpus_per_run
    except (TypeError, ValueError):
        raise UserError(f"{_who(backend)}: run {r.name!r}: gpus must be a whole number, "
                        f"not {g!r}") from None
    return max(1, n)


def _run_nodes(backend: BackendConfig, r: RunSpec) -> list[str]:
    """The run's node allow-list (the earlier chester's #CHESTERNODE): a ``nodes`` resource,
    else every node of the backend."""
    o: AutobotOptions = backend.options
    want = r.resources.get("nodes")
    if not want:
        return list(o.nodes)
    if isinstance(want, str):
        want = want.replace(",", " ").split()
    names = [node_name(str(n)) for n in want]
    unknown = [n for n in names if n not in o.nodes]
    if unknown:
        raise UserError(f"{_who(backend)}: run {r.name!r} asks for nodes {unknown} that are "
                        f"not in this backend's nodes ({', '.join(o.nodes)})")
    return names


def scheduler_config(backend: BackendConfig) -> dict[str, Any]:
    """The node settings the scheduler loop reads (``config.json``; the last submit's)."""
    o: AutobotOptions = backend.options
    return {"ssh_options": list(o.node_ssh_options), "nvidia_smi": o.nvidia_smi,
            "max_gpus": dict(o.max_gpus), "max_gpus_per_node": o.max_gpus_per_node,
            "free_memory_mib": o.free_memory_mib,
            "free_needs_no_process": o.free_needs_no_process,
            "node_timeout": o.node_timeout, "lost_after": o.lost_after, "cycle": o.cycle,
            "lease_dir": o.lease_dir}


def _sched_argv(backend: BackendConfig, *args: str) -> list[str]:
    """argv running the scheduler file on the login host, after the package manager's setup,
    with chester's runtime (it imports the rule from records to states from it)."""
    o: AutobotOptions = backend.options
    return hosted.setup_argv(backend, "chester-autobot",
                             [o.python, scheduler_remote(backend), "--runtime",
                              runtime.build().remote_path(o.remote_dir), args[0],
                              autobot_root(backend), *args[1:]])


def _run_handle(backend: BackendConfig, r: RunSpec, key: str) -> RunHandle:
    return hosted.run_handle(backend, r, sweep=key)


# ---------------------------------------------------------------------------- hooks
@hookimpl
def chester_backends() -> list[BackendSpec]:
    return [BackendSpec(
        name=NAME, summary="GPU nodes behind one login host: each run placed on a free GPU",
        options_cls=AutobotOptions,
        capabilities=Capabilities(remote=True, shared_fs=False, idempotent_submit=True,
                                  needs_code_sync=True, status_poll_interval_s=2.0),
        remote_root=lambda o: o.remote_dir)]


@hookimpl
def chester_prepare(backend: BackendConfig, runs: Sequence[RunSpec],
                    staging_dir: Path) -> PreparedSweep:
    o: AutobotOptions = backend.options
    if not runs:
        return PreparedSweep(backend=backend.name, runs=(), staging_dir=staging_dir)
    if not o.nodes:
        raise UserError(f"autobot backend {backend.name!r}: nodes is empty; list the GPU "
                        "nodes the login host reaches by ssh, e.g. nodes: [autobot-1-1]")
    target = hosted.host_target(backend, _who(backend))
    prefix = _worker_prefix(backend)  # a container without an image fails here
    key = runs[0].token
    root = autobot_root(backend)
    sdir = PurePosixPath(root) / "sweeps"
    sweep_file = str(sdir / f"{key}.json")
    env_file = str(sdir / f"{key}.env")
    secrets_file = str(sdir / f"{key}.secrets") if o.secrets else None
    pre, sync_env = hosted.sweep_settings(backend, runs, _who(backend))
    rt = runtime.build()
    rt_remote = rt.remote_path(o.remote_dir)
    sched = scheduler_remote(backend)
    env_text = shell.render_env_file(backend, o.remote_dir, pre)
    sweep = {"sweep": key, "python": o.python, "runtime": rt_remote, "cwd": o.remote_dir,
             "env_file": env_file, "secrets_file": secrets_file, "prefix": prefix,
             "config": scheduler_config(backend),
             "runs": [{"token": r.token, "run_dir": r.remote_dir, "name": r.name,
                       "gpus_per_run": _run_gpus(backend, r), "nodes": _run_nodes(backend, r)}
                      for r in runs]}
    sweep_text = json.dumps(sweep, indent=1)
    submit = "\n".join(["set -e", f"cd {shlex.quote(o.remote_dir)}",
                        *shell.setup_lines(backend, o.remote_dir),
                        shlex.join([o.python, sched, "--runtime", rt_remote, "submit", root,
                                    sweep_file])]) + "\n"
    q = shlex.quote
    probe = "\n".join([*(shell.env_sync_lines(backend, o.remote_dir) if sync_env else []),
                       f"cd {q(o.remote_dir)}",
                       runtime.probe_script(o.python, rt_remote,
                                            setup=shell.setup_lines(backend, o.remote_dir)),
                       f"if [ -f {q(sched)} ]; then echo 'chester-autobot scheduler=1'; fi"])
    filters = codesync.filter_args(backend)
    uploads = [Path(r.local_dir) / f for r in runs for f in paths.RUN_FILES]
    tree = staging_dir / "tree"
    hosted.stage_texts(tree, {sweep_file: sweep_text, env_file: env_text})
    gpus = sorted({_run_gpus(backend, r) for r in runs})
    return PreparedSweep(
        backend=backend.name, runs=tuple(runs), staging_dir=staging_dir,
        uploads=tuple(uploads),
        scripts={"probe.sh": probe, "submit.sh": submit, "env.sh": env_text,
                 "sweep.json": sweep_text,
                 "rsync": codesync.display(target, backend, o.remote_dir, filters)},
        summary=(f"{len(runs)} runs through {o.host} on {', '.join(o.nodes)} ({hosted.code_note(backend)}"
                 f"{'/'.join(map(str, gpus))} GPU per run) under {o.remote_dir}"),
        data={"sweep_file": sweep_file, "secrets_file": secrets_file, "filters": filters,
              "submit": submit, "probe": probe, "tree": str(tree), "key": key,
              "runtime": str(rt.path), "runtime_remote": rt_remote, "scheduler": sched},
    )


def _probe(backend: BackendConfig, tr: Transport, script: str) -> tuple[runtime.Probe, bool]:
    probe, out = runtime.probe_target(tr, script, who=_who(backend),
                                      python=backend.options.python)
    return probe, "chester-autobot scheduler=1" in out


@hookimpl
def chester_submit(backend: BackendConfig, prepared: PreparedSweep) -> list[RunHandle]:
    o: AutobotOptions = backend.options
    if not prepared.runs:
        return []
    d = prepared.data
    secrets = shell.secret_values(backend) if o.secrets else {}
    tree = Path(d["tree"])
    with transport_for(backend) as tr:
        files = hosted.stage_while_logging_in(tr, prepared, tree)
        if o.sync:
            codesync.sync(backend, tr, o.remote_dir, extra_dirs=o.extra_sync_dirs,
                          filters=d["filters"])
        probe, have_sched = _probe(backend, tr, d["probe"])
        install = [] if probe.runtime_present else \
            hosted.add_runtime(files, tree, d, d["key"])
        if not have_sched:
            hosted.add_file(files, tree, SCHEDULER_SRC, d["scheduler"])
        hosted.put_tree(tr, tree, files, install)
        if d["secrets_file"]:
            tr.put_bytes(shell.render_secrets(secrets), d["secrets_file"], 0o600)
        res = tr.run_script("\n".join([*install, d["submit"]]), timeout=600, check=False)
        if "chester-autobot-queued" not in res.stdout:
            shell.remove_secrets(tr, d["secrets_file"])
            raise BackendError(f"{_who(backend)}: the sweep was not queued (exit "
                               f"{res.exit_code}): {res.stderr.strip()[-300:]}")
    return [_run_handle(backend, r, d["key"]) for r in prepared.runs]


def _ensure_scheduler(backend: BackendConfig, tr: Transport) -> None:
    """Put the scheduler file, and the runtime it imports from, on the login host."""
    tr.put_bytes(SCHEDULER_SRC.read_bytes(), scheduler_remote(backend), 0o644)
    runtime.send(tr, runtime.build(), backend.options.remote_dir, who=_who(backend))


def _sched_call(backend: BackendConfig, tr: Transport, args: Sequence[str],
                stdin: str | None = None, timeout: float | None = 120) -> Any:
    return runtime.call_json(tr, _sched_argv(backend, *args), who=_who(backend),
                             what="the scheduler", stdin=stdin, timeout=timeout,
                             resend=lambda: _ensure_scheduler(backend, tr))


@hookimpl
def chester_status(backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, RunStatus]:
    if not handles:
        return {}
    with transport_for(backend) as tr:
        data = _sched_call(backend, tr, ["status"], stdin=hosted.folders_stdin(handles))
    return {h.token: RunStatus.from_probe(data[h.remote_dir]) for h in handles}


@hookimpl
def chester_cancel(backend: BackendConfig, handles: Sequence[RunHandle]) -> dict[str, bool]:
    if not handles:
        return {}
    with transport_for(backend) as tr:
        data = _sched_call(backend, tr, ["cancel"],
                           stdin=hosted.folders_stdin(handles), timeout=300)
    return {h.token: bool(data.get(h.remote_dir)) for h in handles}


@hookimpl
def chester_logs(backend: BackendConfig, handle: RunHandle, follow: bool, stream: str,
                 out: TextIO) -> bool:
    argv = _sched_argv(backend, "tail", *(["-f"] if follow else []), handle.remote_dir, stream)

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    with transport_for(backend) as tr:
        hosted.stream_tool(tr, argv, write, lambda: _ensure_scheduler(backend, tr))
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
