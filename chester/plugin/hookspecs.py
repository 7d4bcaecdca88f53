"""The plugin contract: every hook a backend plugin may implement.

A backend plugin is a class registered under the entry-point group ``chester`` (the plugin
manager makes one instance of it; :class:`chester.remote.backend.Backend` is the base of
chester's own) whose methods are marked with :data:`chester.hookimpl`, or a module whose
functions are. The entry-point name is the plugin name; the backends it provides come from
:func:`ChesterSpecs.chester_backends`.

Each lifecycle hook is called *only* on the plugin that owns the backend (pluggy's
``subset_hook_caller``); observers and wrappers still see every call. Hook implementations
must not give their arguments default values (pluggy does not pass them) and may accept any
subset of the arguments.

Every spec's docstring follows one template: what, when, arguments, returns, errors, retried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import pluggy

from chester.plugin.records import (
    BackendConfig,
    BackendSpec,
    Capacity,
    PreparedSweep,
    PullPatterns,
    PullResult,
    RunHandle,
    RunSpec,
    RunStatus,
    Spend,
)

PROJECT = "chester"
_spec = pluggy.HookspecMarker(PROJECT)

#: Hooks that talk to the target; the dispatcher retries them (submit under stricter rules).
NETWORK_HOOKS = frozenset(
    {"chester_submit", "chester_status", "chester_pull", "chester_cancel", "chester_logs",
     "chester_capacity", "chester_spend"}
)
#: Hooks routed to the plugin that owns the backend.
LIFECYCLE_HOOKS = frozenset({"chester_prepare"}) | NETWORK_HOOKS


class ChesterSpecs:
    """Hook specifications of chester."""

    @_spec
    def chester_backends(self) -> Sequence[BackendSpec]:
        """List the backend types this plugin provides.

        When: once, when the plugin manager is built (``chester plugins list``, config
        loading, every launch).

        Arguments: none.

        Returns: a sequence of :class:`~chester.plugin.records.BackendSpec`. Collector hook: every
        plugin answers and the results are merged.

        Errors: two plugins claiming one name make every use of that name fail with
        :class:`~chester.plugin.errors.PluginConflictError` naming both distributions.

        Retried: no (local).
        """

    @_spec(firstresult=True)
    def chester_prepare(
        self, backend: BackendConfig, runs: Sequence[RunSpec], staging_dir: Path
    ) -> PreparedSweep:
        """Render everything a submit needs, without touching the target.

        When: once per launch, after each run's folder holds ``variant.json`` and
        ``.chester/`` (payload, run record), or, for backends with the ``sweep_spec``
        capability, after the launch's sweep spec (``RunSpec.spec_file``) holds them.
        ``chester launch --dry-run`` stops after this
        hook and shows :attr:`PreparedSweep.scripts` and :attr:`PreparedSweep.summary`; a
        dry run writes no run folder (only the sweep spec, in ``staging_dir``), so render
        from the runs' records and list the run files as paths, without reading them.

        Arguments: ``backend``, the configured backend; ``runs``, the runs to submit (all of
        one sweep, possibly a subset when a launch is resumed); ``staging_dir``, a fresh
        local folder for scripts and manifests, removed once ``chester_submit`` returns or
        fails (a dry run keeps it).

        Returns: a :class:`~chester.plugin.records.PreparedSweep`; an option only the real
        submit needs and the backend lacks (a cluster's account) goes in its ``blockers``,
        not an error, so that a dry run still shows the scripts.

        Errors: :class:`~chester.plugin.errors.UserError` for bad options or resources.

        Retried: never (it must have no side effects outside ``staging_dir``).
        """

    @_spec(firstresult=True)
    def chester_submit(self, backend: BackendConfig, prepared: PreparedSweep) -> Sequence[RunHandle]:
        """Send the prepared runs to the target and start (or queue) them.

        When: once per launch, right after ``chester_prepare``. The job store has marked each
        run ``submitting`` before this call and records the handles after it.

        Arguments: ``backend``; ``prepared``, the value ``chester_prepare`` returned.

        Returns: one :class:`~chester.plugin.records.RunHandle` per run, in the order of
        ``prepared.runs``, carrying the run's ``run_id``, ``token``, ``local_dir`` and
        ``remote_dir``; ``remote_id`` is the target's own id for the run when it has one (a
        SLURM ``job_task`` id, an instance id) and ``host`` where it went; ``extra`` holds
        what the backend's later hooks need. A backend may submit the whole sweep in one
        call (job arrays, one SSH session).

        Errors: :class:`~chester.plugin.errors.ConnectError` when nothing reached the target;
        :class:`~chester.plugin.errors.TransientBackendError` when the outcome is unknown;
        :class:`~chester.plugin.errors.BackendError` for permanent failures.

        Retried: on ``ConnectError`` always; on other transient errors only when the
        backend's capabilities say ``idempotent_submit`` — the backend must then check each
        run's token and never start a run twice.
        """

    @_spec(firstresult=True)
    def chester_status(
        self, backend: BackendConfig, handles: Sequence[RunHandle]
    ) -> Mapping[str, RunStatus]:
        """Report the state of many runs at once.

        When: on every poll (``Sweep.status``, ``Sweep.wait``, ``chester status``,
        ``chester monitor``), with every unfinished run of the backend in one call.

        Arguments: ``backend``; ``handles``, the runs to look at.

        Returns: a mapping from each handle's ``token`` to a
        :class:`~chester.plugin.records.RunStatus`. Must make one round trip / one scheduler query for
        all handles, not one per run. A run that finished successfully is ``succeeded``
        only when its worker wrote its success record. A run that ended otherwise carries a
        ``reason`` and, when it had output, ``stderr_tail`` (the last lines of its stderr); a
        queued run may say why it waits in ``pending_reason``; ``host`` names the machine a
        run is on once known. A run whose worker never started must not stay ``queued``
        forever: it ends ``failed`` or ``lost`` with a reason.

        Errors: ``TransientBackendError`` (retried), ``BackendError``.

        Retried: yes.
        """

    @_spec(firstresult=True)
    def chester_pull(
        self,
        backend: BackendConfig,
        handles: Sequence[RunHandle],
        dest: Path,
        patterns: PullPatterns,
    ) -> Sequence[PullResult]:
        """Bring finished runs' folders home.

        When: ``Sweep.pull``, ``Sweep.wait(pull=True)``, ``chester pull``, ``chester
        monitor``; for runs in a terminal state.

        Arguments: ``backend``; ``handles``; ``dest``, the local project root (each run lands
        in its own ``local_dir``); ``patterns``, include/exclude rules.

        Returns: one :class:`~chester.plugin.records.PullResult` per handle, ``complete`` only when
        every file of the run is home (the core marks a run pulled only then, and pulls the
        others again later; a handle with no result counts as not arrived). Must be
        idempotent and incremental (a second pull transfers nothing new) and must never
        delete or overwrite newer local files.

        Errors: ``TransientBackendError`` (retried), ``BackendError``.

        Retried: yes.
        """

    @_spec(firstresult=True)
    def chester_cancel(
        self, backend: BackendConfig, handles: Sequence[RunHandle]
    ) -> Mapping[str, bool]:
        """Stop runs: queued ones never start, running ones are killed with their children.

        When: ``Sweep.cancel``, ``chester cancel``.

        Arguments: ``backend``; ``handles``.

        Returns: a mapping from token to whether the run was stopped by this call.

        Errors: ``TransientBackendError`` (retried), ``BackendError``.

        Retried: yes (cancelling twice is harmless).
        """

    @_spec(firstresult=True)
    def chester_logs(
        self, backend: BackendConfig, handle: RunHandle, follow: bool, stream: str, out: TextIO
    ) -> bool:
        """Write a run's output to ``out``.

        When: ``chester logs RUN [-f]``.

        Arguments: ``backend``; ``handle``; ``follow``, keep streaming until the run ends;
        ``stream``, ``"stdout"`` or ``"stderr"``; ``out``, where to write text.

        Returns: True.

        Errors: ``TransientBackendError`` (retried), ``BackendError``. What a write to
        ``out`` raises (``BrokenPipeError``: its reader went away, ``chester logs -f RUN |
        head``) ends the call at once and propagates as it is, never as a link error.

        Retried: yes; a retry goes on from the byte the failed attempt had written up to,
        counted in the log's raw bytes, so ``out`` gets every byte exactly once. The
        backend keeps that offset for the call
        (:meth:`chester.remote.backend.Backend.log_cursor`).
        """

    @_spec(firstresult=True)
    def chester_capacity(self, backend: BackendConfig, runs: Sequence[RunSpec]) -> Capacity:
        """Say how many of these runs the backend would start now, how many more it would
        accept, how soon a queued one would start and what a run costs there.

        When: before a pool (``type: pool``) places a sweep's runs on its members, at
        launch and on the polls of a laptop that waits (``Sweep.wait``, ``chester
        monitor``). Optional: a member without it is placed on last, as if it had no free
        room and an unknown wait.

        Arguments: ``backend``; ``runs``, the runs to be placed (their resources: GPUs per
        run, time limits).

        Returns: a :class:`~chester.plugin.records.Capacity`. One round trip at most (free
        GPUs on a lab, a QOS's room and ``sbatch --test-only``'s start estimate on SLURM, a
        spot price on EC2); it submits nothing.

        Errors: ``TransientBackendError`` (retried), ``BackendError``.

        Retried: yes (it changes nothing).
        """

    @_spec(firstresult=True)
    def chester_spend(self, backend: BackendConfig, handles: Sequence[RunHandle]) -> Spend:
        """Say what these runs have cost so far, and at most will cost.

        When: before a pool places a run on a paid member (its budget), and by ``chester
        status`` for a pool's spend line. Optional: a backend without it costs nothing.

        Arguments: ``backend``; ``handles``, the runs of one sweep on this backend.

        Returns: a :class:`~chester.plugin.records.Spend` (money from prices x instance
        hours, service units from the scheduler's accounting, GPU-hours). One round trip.

        Errors: ``TransientBackendError`` (retried), ``BackendError``.

        Retried: yes (it changes nothing).
        """

    @_spec
    def chester_register_commands(self, subparsers: Any) -> None:
        """Add ``chester`` subcommands (as llm's ``register_commands`` does).

        When: each time the ``chester`` command parses its arguments.

        Arguments: ``subparsers``, the argparse subparsers action of ``chester``: call
        ``subparsers.add_parser(NAME, help=...)`` and ``set_defaults(chester_command=FUNC)``
        on the parser; ``FUNC(args)`` runs the command and returns its exit status. Keep this
        hook cheap (no heavy imports: they belong in ``FUNC``); a name chester already uses
        is an error.

        Returns: nothing. Collector hook.

        Errors: a ``UserError`` or ``BackendError`` raised by ``FUNC`` is printed as chester's
        own errors are.

        Retried: no (local).
        """
