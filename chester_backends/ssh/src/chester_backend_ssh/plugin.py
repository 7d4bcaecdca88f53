"""The ``ssh`` backend plugin: sweeps on SSH hosts. One backend is one host.

:class:`SSHBackend` is a :class:`~chester.remote.hosted.HostedShellBackend`: the remote
layer (:mod:`chester.remote`) does every step of every hook over ONE
:class:`~chester.remote.ssh.Transport` per operation (one OpenSSH master connection, which
the commands and rsync ride; the host's key checked as the user's ``ssh`` checks it). What
is the ssh backend's own is how a sweep starts: one script that starts chester's queue
runner (from the shipped runtime) detached with ``setsid``, with at most ``max_parallel``
runs at once and a GPU slot each; status, cancel and logs are the runtime's target tool
(``python RUNTIME target status|cancel|tail``).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from chester.plugin.records import BackendConfig, RunSpec
from chester.remote import codesync, hosted, runtime, shell
from chester.remote import container as ctr
from chester.remote.backend import hook_function
from chester.remote.hosted import HostedPlan, HostedShellBackend, HostedSweep, chester_dir
from chester.remote.ssh import Transport
from chester_backend_ssh.options import SSHOptions

NAME = "ssh"

__all__ = ["NAME", "SSHBackend", "SSHOptions", "chester_dir", "render_submit_script",
           "sync_code", "target_argv", "transport_for"]


class SSHBackend(HostedShellBackend):
    """The ``ssh`` backend: a detached queue of runs on one SSH host."""

    name = NAME
    summary = "runs on an SSH host: code sync, detached queue, pull-back"
    options_cls = SSHOptions
    watch_groups = True  # the runs' processes are on the host: leftovers are the poll's

    def sweeps_dir(self, backend: BackendConfig) -> str:
        return str(PurePosixPath(chester_dir(backend)) / "sweeps")

    def plan(self, backend: BackendConfig, runs: Sequence[RunSpec],
             sweep: HostedSweep) -> HostedPlan:
        o: SSHOptions = backend.options
        ctr.resolve(o, backend=self.who(backend))  # a container without an image fails here
        queue_file = f"{sweep.folder}/{sweep.key}.queue"
        queue_text = "".join(f"{r.remote_dir}\n" for r in runs)
        script = render_submit_script(backend, queue_file=queue_file, env_file=sweep.env_file,
                                      secrets_file=sweep.secrets_file,
                                      runner_log=f"{sweep.folder}/{sweep.key}.log",
                                      rt_remote=sweep.runtime_remote)
        cap, gpus = _plan(o)
        return HostedPlan(
            start=script, files={queue_file: queue_text}, scripts={"queue": queue_text},
            summary=(f"{len(runs)} runs on {o.host} ({hosted.code_note(backend)}{cap} at a "
                     f"time" + (f", GPUs {','.join(gpus)}" if gpus else "")
                     + f") under {o.remote_dir}"))

    def tool_argv(self, backend: BackendConfig, command: str, args: Sequence[str]
                  ) -> list[str]:
        return target_argv(backend, [command, *(args or ["-"])])

    def place_tool(self, backend: BackendConfig, tr: Transport) -> None:
        runtime.send(tr, runtime.build(), backend.options.remote_dir, who=self.who(backend))


def _plan(o: SSHOptions) -> tuple[int, list[str]]:
    gpus = list(o.gpus)
    cap = o.max_parallel or (len(gpus) if gpus else 1)
    return max(1, cap), gpus


def render_submit_script(backend: BackendConfig, *, queue_file: str, env_file: str,
                         secrets_file: str | None, runner_log: str, rt_remote: str) -> str:
    """The script that starts the sweep's queue on the host, detached.

    The queue runner skips every run that already started (its status carries the token)
    or that another live runner owns, so running this script twice starts nothing twice.
    The environment was synced and the Python checked just before (the submit's probe).
    """
    o: SSHOptions = backend.options
    cap, gpus = _plan(o)
    root = o.remote_dir
    runner = [o.python, rt_remote, "runner", "--max-parallel", str(cap),
              "--python", o.python, "--cwd", root, "--env-file", env_file,
              "--slots-dir", str(PurePosixPath(chester_dir(backend)) / "slots"),
              "--from-file", queue_file]
    c = ctr.resolve(o, backend=f"ssh backend {backend.name!r} ({o.host})")
    prefix = ctr.wrap([], c, binds=[o.remote_dir], gpus=bool(o.gpus)) if c else []
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


def target_argv(backend: BackendConfig, args: Sequence[str]) -> list[str]:
    """argv running chester's target tool (``status``/``cancel``/``tail``) on the host from
    the runtime, with the package manager's environment."""
    o: SSHOptions = backend.options
    return hosted.setup_argv(backend, "chester-target",
                             [*runtime.build().argv(o.python, "target", o.remote_dir), *args])


def transport_for(backend: BackendConfig) -> Transport:
    """One SSH transport to the backend's host."""
    return hosted.transport(backend)


def sync_code(backend: BackendConfig, tr: Transport, *, dry_run: bool = False,
              filters: Sequence[str] | None = None) -> Any:
    """rsync the project (and ``extra_sync_dirs``) to the host. Never deletes anything."""
    o: SSHOptions = backend.options
    return codesync.sync(backend, tr, o.remote_dir, extra_dirs=o.extra_sync_dirs,
                         filters=filters, dry_run=dry_run)


def __getattr__(name: str) -> Any:  # the hooks' earlier module-level names
    return hook_function(SSHBackend, name, __name__)
