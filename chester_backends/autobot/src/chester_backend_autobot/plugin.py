"""The ``autobot`` backend plugin: a lab's GPU nodes behind one login host, no SLURM.

The login host and the nodes share a filesystem (``remote_dir``). :class:`AutobotBackend`
is a :class:`~chester.remote.hosted.HostedShellBackend`: the remote layer
(:mod:`chester.remote`) does every step of every hook over ONE transport to the login host.
What is autobot's own is the placement, :mod:`.scheduler`: a file shipped next to chester's
runtime (under its digest, through a part file renamed into place once it checks out) and
run on the login host with that runtime, from which it imports the rule from records to
states. A submit enqueues the sweep's file and starts the
scheduler loop detached unless one runs; status, cancel and logs are ``python SCHEDULER
--runtime PYZ status|cancel|tail ROOT``. What a run asks of the nodes (its GPUs, its
allowed nodes) and what a pool asks of the lab (capacity, spend) are :mod:`.capacity`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from chester.plugin.errors import UserError
from chester.plugin.manager import hookimpl
from chester.plugin.records import BackendConfig, Capacity, RunHandle, RunSpec, RunStatus, Spend
from chester.remote import container as ctr
from chester.remote import hosted, runtime, shell
from chester.remote.backend import hook_function
from chester.remote.hosted import HostedPlan, HostedShellBackend, HostedSweep, chester_dir
from chester.remote.ssh import Transport
from chester_backend_autobot import capacity
from chester_backend_autobot.options import AutobotOptions, scheduler_config

NAME = "autobot"
SCHEDULER_SRC = Path(__file__).with_name("scheduler.py")
_PRESENT = "chester-autobot scheduler=1"

__all__ = ["NAME", "AutobotBackend", "AutobotOptions", "autobot_root", "scheduler_remote",
           "transport_for"]


class AutobotBackend(HostedShellBackend):
    """The ``autobot`` backend: each run placed on a free GPU of the lab's nodes."""

    name = NAME
    summary = "GPU nodes behind one login host: each run placed on a free GPU"
    options_cls = AutobotOptions
    started_marker = "chester-autobot-queued"
    not_started = "the sweep was not queued"
    handle_key = "sweep"
    tool_name = "the scheduler"
    cancel_timeout = 300
    watch_reads = (capacity.PLACEMENT,)  # the end watcher's host: the run's node

    def sweeps_dir(self, backend: BackendConfig) -> str:
        return str(PurePosixPath(autobot_root(backend)) / "sweeps")

    def plan(self, backend: BackendConfig, runs: Sequence[RunSpec],
             sweep: HostedSweep) -> HostedPlan:
        o: AutobotOptions = backend.options
        if not o.nodes:
            raise UserError(f"autobot backend {backend.name!r}: nodes is empty; list the GPU "
                            "nodes the login host reaches by ssh, e.g. nodes: [autobot-1-1]")
        who = self.who(backend)
        c = ctr.resolve(o, backend=who)  # a container without an image fails
        gpus = [capacity.gpus(backend, r, who) for r in runs]
        spec = {"sweep": sweep.key, "python": o.python, "runtime": sweep.runtime_remote,
                "cwd": o.remote_dir, "env_file": sweep.env_file, "secrets_file": sweep.secrets_file,
                "env_prepares": sweep.env_prepares, "prepare_script": sweep.prepare_script,
                "prefix": ctr.wrap([], c, binds=[o.remote_dir], gpus=True) if c else [],
                "config": scheduler_config(backend),
                "runs": [{"token": r.token, "run_dir": r.remote_dir, "name": r.name,
                          "gpus_per_run": g, "nodes": capacity.nodes(backend, r, who)}
                         for r, g in zip(runs, gpus, strict=True)]}
        sweep_file = f"{sweep.folder}/{sweep.key}.json"
        text = json.dumps(spec, indent=1)
        sched = scheduler_remote(backend)
        start = "\n".join(["set -e", f"cd {shlex.quote(o.remote_dir)}",
                           *shell.setup_lines(backend, o.remote_dir),
                           shlex.join([o.python, sched, "--runtime", sweep.runtime_remote,
                                       "submit", autobot_root(backend), sweep_file])]) + "\n"
        return HostedPlan(
            start=start, files={sweep_file: text}, scripts={"sweep.json": text},
            probe=(f"if [ -f {shlex.quote(sched)} ]; then echo '{_PRESENT}'; fi",),
            summary=(f"{len(runs)} runs through {o.host} on {', '.join(o.nodes)} "
                     f"({hosted.code_note(backend)}{'/'.join(map(str, sorted(set(gpus))))} "
                     f"GPU per run) under {o.remote_dir}"),
            data={"scheduler": sched})

    def add_tools(self, backend: BackendConfig, data: Mapping[str, Any], probed: str,
                  files: list[str], tree: Path) -> list[str]:
        if _PRESENT in probed:
            return []
        return hosted.add_installed(files, tree, SCHEDULER_SRC, data["scheduler"],
                                    data["key"], what="the scheduler")

    def tool_argv(self, backend: BackendConfig, command: str, args: Sequence[str]
                  ) -> list[str]:
        o: AutobotOptions = backend.options
        return hosted.setup_argv(backend, "chester-autobot", [
            o.python, scheduler_remote(backend), "--runtime",
            runtime.build().remote_path(o.remote_dir), command, autobot_root(backend), *args])

    def place_tool(self, backend: BackendConfig, tr: Transport) -> None:
        """Put the scheduler file, and the runtime it imports from, on the login host."""
        runtime.place(tr, SCHEDULER_SRC.read_bytes(), scheduler_remote(backend),
                      who=self.who(backend), what="the scheduler")
        runtime.send(tr, runtime.build(), backend.options.remote_dir, who=self.who(backend))

    def final_status(self, handle: RunHandle, records: dict[str, Any]) -> RunStatus | None:
        return capacity.final_status(handle, records)

    @hookimpl
    def chester_capacity(self, backend: BackendConfig, runs: Sequence[RunSpec]) -> Capacity:
        """The runs the lab would start now: each node's free GPUs (the scheduler's own
        rule, one query per node from the login host) in whole runs, less what its queue
        waits to start (:func:`.capacity.parse`)."""
        per_run = capacity.per_run(backend, runs, self.who(backend))
        with self.transport(backend) as tr:
            data = self.tool_call(backend, tr, "capacity", stdin=capacity.request(backend))
        return capacity.parse(data, per_run)

    @hookimpl
    def chester_spend(self, backend: BackendConfig, handles: Sequence[RunHandle]) -> Spend:
        """GPU-hours the runs have used (shown by a pool, never capped: a lab costs no
        money), from one status round trip (:func:`.capacity.spend`)."""
        if not handles:
            return Spend()
        return capacity.spend(backend, self.chester_status(backend, handles).values())


def autobot_root(backend: BackendConfig) -> str:
    """The scheduler's folder on the shared filesystem (queue, leases, state, log)."""
    return str(PurePosixPath(chester_dir(backend)) / "autobot")


def scheduler_remote(backend: BackendConfig) -> str:
    """Where this version's scheduler file lives on the shared filesystem."""
    digest = hashlib.sha256(SCHEDULER_SRC.read_bytes()).hexdigest()[:16]
    return str(PurePosixPath(autobot_root(backend)) / f"scheduler-{digest}.py")


def transport_for(backend: BackendConfig) -> Transport:
    return hosted.transport(backend)


def __getattr__(name: str) -> Any:  # the hooks' earlier module-level names
    return hook_function(AutobotBackend, name, __name__)
