"""Backends that ship a sweep to one login host over SSH: the ssh and autobot backends.

:class:`HostedShellBackend` is their base. It implements every lifecycle hook once —
prepare and submit (check the host options, agree on the sweep's per-call settings, stage
small files under their remote paths, sync the code beside one probe of the host's Python,
send every run's files and whatever tool the host lacks in one tar stream, start the
sweep), status and cancel (one call of a target-side tool for every run), pull (one rsync)
and logs (the tool's ``tail``, going on from the byte a dropped link stopped at) — and a
backend supplies only how a sweep starts on its host and which tool answers there
(:meth:`~HostedShellBackend.plan`, :meth:`~HostedShellBackend.tool_argv`,
:meth:`~HostedShellBackend.place_tool`). The steps are also functions of this module, for
a backend that composes them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from chester.plugin.errors import BackendError, UserError
from chester.plugin.manager import hookimpl
from chester.remote import codesync, paths, shell
from chester.remote.backend import Backend

if TYPE_CHECKING:
    from chester.plugin.records import (
        BackendConfig,
        BackendSpec,
        PreparedSweep,
        PullPatterns,
        PullResult,
        RunHandle,
        RunSpec,
        RunStatus,
    )
    from chester.remote.follow import LogCursor
    from chester.remote.ssh import SSHTarget, Transport


def host_target(backend: BackendConfig, who: str) -> SSHTarget:
    """The host to reach, after the checks every hosted backend makes at prepare: an
    absolute ``remote_dir``, a host line SSH can parse, secrets that can be read."""
    from chester.remote.ssh import SSHTarget

    o = backend.options
    if not o.remote_dir.startswith("/"):
        raise UserError(f"{who}: remote_dir must be an absolute path, not {o.remote_dir!r}")
    try:
        target = SSHTarget.parse(o.host, user=o.user, port=o.port,
                                 key_filename=o.key_filename, ssh_config=o.ssh_config)
    except ValueError as exc:
        raise UserError(f"{who}: {exc}") from None
    shell.check_secrets(backend)
    return target


def sweep_settings(backend: BackendConfig, runs: Sequence[RunSpec], who: str
                   ) -> tuple[tuple[str, ...], bool]:
    """The earlier chester's per-call settings a sweep carries in its runs' resources
    (``run_experiment_lite(pre_commands=, sync_env=)``): the pre-commands, which must be the
    same for every run, and whether the environment is synced at this launch."""
    pres = {tuple(str(c) for c in (r.resources.get("pre_commands") or ())) for r in runs}
    if len(pres) > 1:
        raise UserError(f"{who}: pre_commands must be the same for every run of a sweep")
    syncs = {r.resources["sync_on_launch"] for r in runs if "sync_on_launch" in r.resources}
    sync_env = bool(any(syncs)) if syncs else backend.sync_on_launch
    return next(iter(pres)), sync_env


def stage_texts(tree: Path, texts: Mapping[str, str]) -> None:
    """Write each text under ``tree`` at its remote (absolute) path, ready for ``put_tree``."""
    for rpath, text in texts.items():
        p = tree / rpath.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def code_note(backend: BackendConfig) -> str:
    """The launch summary's words on the code that would travel (empty without ``sync``)."""
    o = backend.options
    if not o.sync:
        return ""
    n_files, n_bytes = codesync.footprint(backend, o.extra_sync_dirs)
    return f"code: up to {n_files} files, {n_bytes} bytes to sync; "


def submit_files(prepared: PreparedSweep, tree: Path) -> list[str]:
    """Every run's files staged under ``tree`` at their remote paths, plus what prepare
    staged there (queue, env and sweep files): the relative paths ``put_tree`` sends."""
    staged = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    files = paths.stage_run_files(((str(r.local_dir), r.remote_dir) for r in prepared.runs),
                                  tree)
    return files + sorted(staged - set(files))


def stage_while_logging_in(tr: Transport, prepared: PreparedSweep, tree: Path) -> list[str]:
    """:func:`submit_files`, while ``tr`` logs in to the host beside it (a login, the host
    key check included, takes longer than linking a few thousand files); the login's error,
    if any, is raised once both are done."""
    from chester.remote.ssh import Background

    login = Background(tr.connect, name="chester-login")
    try:
        files = submit_files(prepared, tree)
    finally:
        login.wait()
    login.result()
    return files


def add_file(files: list[str], tree: Path, local: Path, remote: str) -> None:
    """Stage one more local file (chester's runtime, a scheduler) at its remote path."""
    rel = remote.lstrip("/")
    paths.link_or_copy(local, tree / rel)
    files.append(rel)


def add_installed(files: list[str], tree: Path, local: Path, remote: str, key: str, *,
                  what: str) -> list[str]:
    """Stage a local file whose remote name carries the digest of its content
    (``NAME-<digest>.EXT``: chester's runtime, autobot's scheduler) under a part name of
    its own for this launch (``key``), and return the shell lines that check it and rename
    it into place (:func:`chester.remote.runtime.install_lines`; ``what`` names it when it
    did not arrive whole): run them before anything uses it. Nothing ever runs a file that
    is still being written or was cut short."""
    from chester.remote import runtime

    part = runtime.part_path(remote, key)
    add_file(files, tree, local, part)
    return runtime.install_lines(remote, part, strict=True, what=what)


def add_runtime(files: list[str], tree: Path, data: Mapping[str, Any], key: str) -> list[str]:
    """Stage chester's runtime (``data["runtime"]``, for ``data["runtime_remote"]``) with
    :func:`add_installed`; returns the lines that put it into place."""
    return add_installed(files, tree, Path(data["runtime"]), data["runtime_remote"], key,
                         what="the runtime")


def put_tree(tr: Transport, tree: Path, files: Sequence[str], install: Sequence[str]) -> None:
    """Send the staged files in one transfer; when that fails after the runtime's part
    file (``install`` non-empty) may have been written, it is removed (best effort)."""
    try:
        tr.put_tree(tree, sorted(set(files)), "/")
    except BaseException:
        parts = [f for f in files if f.endswith(".part")] if install else []
        for part in parts:
            try:
                tr.run(["rm", "-f", "/" + part.lstrip("/")], timeout=30, check=False)
            except Exception:  # the link is gone too: the next upload removes it in a day
                pass
        raise


def stream_tool(tr: Transport, argv: Sequence[str] | Callable[[], Sequence[str]],
                write: Callable[[str], Any] | LogCursor, resend: Callable[[], None]) -> None:
    """Stream a target-side tool's output; when the host lost the tool's file (Python's
    "can't open file"), send it again once and stream again. ``write`` takes text, or is a
    :class:`~chester.remote.follow.LogCursor` (the output's bytes go to it as they are);
    ``argv`` may be a function, called for each start (a ``tail`` that goes on from the
    cursor's offset)."""
    from chester.remote.follow import LogCursor

    wrote = False

    def counted(data: Any) -> Any:
        nonlocal wrote
        wrote = wrote or bool(data)
        if isinstance(write, LogCursor):
            return write.write(data)
        return write(data)

    def start(check: bool) -> Any:
        args = list(argv() if callable(argv) else argv)
        if isinstance(write, LogCursor):
            return tr.stream_bytes(args, counted, check=check)
        return tr.stream(args, counted, check=check)

    res = start(False)
    if res.exit_code == 2 and "can't open file" in res.stderr or \
            res.exit_code not in (0, 2) and not wrote:  # a damaged file starts nothing
        resend()
        start(True)


def folders_stdin(handles: Iterable[Any]) -> str:
    """The runs' remote folders, one a line: what the target tools read on stdin."""
    return "".join(f"{h.remote_dir}\n" for h in handles)


def transport(backend: BackendConfig) -> Transport:
    """One SSH transport to the backend's host (``host``, ``user``, ``port``,
    ``key_filename``, ``ssh_config``, ``connect_timeout`` options)."""
    from chester.remote.ssh import SSHTarget, Transport

    o = backend.options
    target = SSHTarget.parse(o.host, user=o.user, port=o.port, key_filename=o.key_filename,
                             ssh_config=o.ssh_config, connect_timeout=o.connect_timeout)
    return Transport(target, backend=backend.name)


def setup_argv(backend: BackendConfig, name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run on the host from ``remote_dir`` after the package manager's setup
    (``sh -c 'cd DIR; SETUP; exec "$@"' NAME ARGV...``: nothing of argv meets the shell)."""
    import shlex

    o = backend.options
    setup = shell.setup_lines(backend, o.remote_dir)
    return ["sh", "-c", "\n".join([f"cd {shlex.quote(o.remote_dir)} 2>/dev/null || true",
                                    *setup, 'exec "$@"']), name, *argv]


def run_handle(backend: BackendConfig, r: RunSpec, **extra: str) -> RunHandle:
    """The handle of a run submitted to the backend's host; ``extra`` is kept in it."""
    from chester.plugin.records import RunHandle

    return RunHandle(run_id=r.run_id, token=r.token, backend=backend.name,
                     local_dir=str(r.local_dir), remote_dir=r.remote_dir,
                     host=backend.options.host, extra=tuple(extra.items()))


# ---------------------------------------------------------------------------- the base class
@attrs.frozen(kw_only=True)
class HostedSweep:
    """What :class:`HostedShellBackend` settled for a sweep before its backend plans how the
    sweep starts: the sweep's key on the host (its first run's token), the folder of its
    files there, its env file (sourced before each run), its secrets file (None without
    secrets) and where chester's runtime lives on the host."""

    key: str
    folder: str
    env_file: str
    secrets_file: str | None
    runtime_remote: str
    #: whether the env file runs prepare commands (more than the package manager's
    #: activation, ``env`` exports and the prepare script), which run before each run
    env_prepares: bool = True
    #: the prepare script the env file sources when it is there (None without one)
    prepare_script: str | None = None


@attrs.frozen(kw_only=True)
class HostedPlan:
    """How a sweep starts on the host (:meth:`HostedShellBackend.plan`).

    ``start``: the script that starts or queues the sweep on the host (it prints the
    backend's ``started_marker`` once it did; it runs after the environment was synced and
    the host's Python checked); ``summary``: the launch's one line; ``files``: texts to send
    with the run files, by remote path (a queue, a sweep file); ``scripts``: more for
    ``--dry-run`` to show; ``probe``: shell lines run after the check of the host's Python
    (say what the host has, for :meth:`HostedShellBackend.add_tools`); ``data``: kept in the
    prepared sweep for the backend's own use."""

    start: str
    summary: str
    files: Mapping[str, str] = attrs.field(factory=dict)
    scripts: Mapping[str, str] = attrs.field(factory=dict)
    probe: tuple[str, ...] = ()
    data: Mapping[str, Any] = attrs.field(factory=dict)


class HostedShellBackend(Backend):
    """A backend whose runs start on (or through) one login host reached over SSH, from a
    project synced to ``remote_dir`` (the ssh and autobot backends).

    Every lifecycle hook is here, once. Per operation it opens ONE transport
    (:meth:`transport`): a submit syncs the code beside one probe of the host's Python and
    runtime, sends every run's files (and chester's runtime, or another tool, when the host
    lacks it: under a part name, renamed into place once it checks out) in one tar stream,
    and runs the plan's start script; status and cancel are one call of the host's tool
    with every run folder on stdin; pull is one rsync; logs stream the tool's ``tail``,
    going on after a dropped link from the byte already written (:meth:`log_cursor`).

    A subclass sets :attr:`name`, :attr:`summary`, :attr:`options_cls` (with the options
    ``host``, ``user``, ``port``, ``key_filename``, ``ssh_config``, ``connect_timeout``,
    ``remote_dir``, ``python``, ``sync``, ``extra_sync_dirs`` and the remote layer's groups)
    and supplies how a sweep starts and what answers on the host: :meth:`sweeps_dir`,
    :meth:`plan`, :meth:`tool_argv`, :meth:`place_tool`, and :meth:`add_tools` when it ships
    a tool of its own."""

    summary: str = ""
    options_cls: type = object
    #: what the start script prints once the sweep is started (or queued)
    started_marker: str = "chester-queue-started"
    #: the error when it did not print that
    not_started: str = "the queue did not start"
    #: the name under which a run's handle keeps the sweep's key
    handle_key: str = "queue"
    #: what answers status, cancel and tail on the host, for messages
    tool_name: str = "chester's target tool"
    cancel_timeout: float = 120

    def spec(self) -> BackendSpec:
        from chester.plugin.records import BackendSpec, Capabilities

        return BackendSpec(
            name=self.name, summary=self.summary, options_cls=self.options_cls,
            capabilities=Capabilities(remote=True, shared_fs=False, idempotent_submit=True,
                                      needs_code_sync=True, status_poll_interval_s=2.0),
            remote_root=lambda o: o.remote_dir)

    # -- what a backend supplies ---------------------------------------------------------
    def sweeps_dir(self, backend: BackendConfig) -> str:
        """The folder on the host for the files of each sweep (env, secrets, ...)."""
        raise NotImplementedError

    def plan(self, backend: BackendConfig, runs: Sequence[RunSpec],
             sweep: HostedSweep) -> HostedPlan:
        """How these runs start on the host (no side effects; raise ``UserError`` for bad
        options or resources)."""
        raise NotImplementedError

    def tool_argv(self, backend: BackendConfig, command: str, args: Sequence[str]
                  ) -> list[str]:
        """argv of the host's tool for ``command``: ``status`` and ``cancel`` (run folders
        one a line on stdin, one JSON line out) and ``tail`` (``args``: ``[-f] --from
        BYTES DIR STREAM``; the log's bytes out from that byte on)."""
        raise NotImplementedError

    def place_tool(self, backend: BackendConfig, tr: Transport) -> None:
        """Put the tool back on the host when it lost it (once per call)."""
        raise NotImplementedError

    def add_tools(self, backend: BackendConfig, data: Mapping[str, Any], probed: str,
                  files: list[str], tree: Path) -> list[str]:
        """Stage what the host lacks beyond chester's runtime (``probed``: what the probe
        printed) with :func:`add_installed`, and return the lines that put it in place."""
        return []

    # -- shared steps --------------------------------------------------------------------
    def who(self, backend: BackendConfig) -> str:
        return f"{self.name} backend {backend.name!r} ({backend.options.host})"

    def transport(self, backend: BackendConfig) -> Transport:
        """The one connection of an operation (:func:`transport`)."""
        return transport(backend)

    def tool_call(self, backend: BackendConfig, tr: Transport, command: str, *,
                  stdin: str, timeout: float | None = 120) -> Any:
        from chester.remote import runtime

        return runtime.call_json(tr, self.tool_argv(backend, command, []),
                                 who=self.who(backend), what=self.tool_name, stdin=stdin,
                                 timeout=timeout, resend=lambda: self.place_tool(backend, tr))

    # -- hooks ---------------------------------------------------------------------------
    @hookimpl
    def chester_prepare(self, backend: BackendConfig, runs: Sequence[RunSpec],
                        staging_dir: Path) -> PreparedSweep:
        import shlex

        from chester.plugin.records import PreparedSweep
        from chester.remote import runtime

        o = backend.options
        if not runs:
            return PreparedSweep(backend=backend.name, runs=(), staging_dir=staging_dir)
        who = self.who(backend)
        target = host_target(backend, who)
        pre, sync_env = sweep_settings(backend, runs, who)
        key = runs[0].token
        folder = self.sweeps_dir(backend)
        rt = runtime.build()
        sweep = HostedSweep(key=key, folder=folder, env_file=f"{folder}/{key}.env",
                            secrets_file=f"{folder}/{key}.secrets" if o.secrets else None,
                            runtime_remote=rt.remote_path(o.remote_dir),
                            env_prepares=bool(pre or backend.prepare_commands
                                              or getattr(o, "prepare_commands", ())),
                            prepare_script=shell.prepare_script_path(backend, o.remote_dir))
        plan = self.plan(backend, runs, sweep)
        env_text = shell.render_env_file(backend, o.remote_dir, pre)
        env_sync = shell.env_sync_lines(backend, o.remote_dir) if sync_env else []
        probe = "\n".join([
            *env_sync, f"cd {shlex.quote(o.remote_dir)}",
            runtime.probe_script(o.python, sweep.runtime_remote,
                                 setup=shell.setup_lines(backend, o.remote_dir)),
            *plan.probe])
        filters = codesync.filter_args(backend)
        tree = staging_dir / "tree"
        stage_texts(tree, {**plan.files, sweep.env_file: env_text})
        return PreparedSweep(
            backend=backend.name, runs=tuple(runs), staging_dir=staging_dir,
            uploads=tuple(Path(r.local_dir) / f for r in runs for f in paths.RUN_FILES),
            scripts={"probe.sh": probe, "submit.sh": plan.start, "env.sh": env_text,
                     **plan.scripts,
                     "rsync": codesync.display(target, backend, o.remote_dir, filters)},
            summary=plan.summary,
            data={**plan.data, "key": key, "start": plan.start, "probe": probe,
                  "probe_needs_code": bool(env_sync), "filters": filters, "tree": str(tree),
                  "secrets_file": sweep.secrets_file, "runtime": str(rt.path),
                  "runtime_remote": sweep.runtime_remote})

    @hookimpl
    def chester_submit(self, backend: BackendConfig, prepared: PreparedSweep
                       ) -> list[RunHandle]:
        from chester.remote import runtime
        from chester.remote.ssh import Background

        o = backend.options
        if not prepared.runs:
            return []
        d = prepared.data
        secrets = shell.secret_values(backend) if o.secrets else {}
        tree = Path(d["tree"])
        with self.transport(backend) as tr:
            files = stage_while_logging_in(tr, prepared, tree)
            # the code sync (rsync, over the same connection) runs beside the probe and the
            # upload of the run files, unless the environment sync needs the code first
            code = Background(lambda: codesync.sync(
                backend, tr, o.remote_dir, extra_dirs=o.extra_sync_dirs, filters=d["filters"])
            ) if o.sync else None
            try:
                if code is not None and d["probe_needs_code"]:
                    code.result()
                probe, probed = runtime.probe_target(tr, d["probe"], who=self.who(backend),
                                                     python=o.python)
                install = [] if probe.runtime_present else \
                    add_runtime(files, tree, d, d["key"])
                install += self.add_tools(backend, d, probed, files, tree)
                put_tree(tr, tree, files, install)
                if code is not None:
                    code.result()
            except BaseException:
                if code is not None:
                    code.wait()
                raise
            if d["secrets_file"]:
                tr.put_bytes(shell.render_secrets(secrets), d["secrets_file"], 0o600)
            try:
                res = tr.run_script("\n".join([*install, d["start"]]), timeout=600,
                                    check=False)
            except BaseException:
                shell.remove_secrets(tr, d["secrets_file"])
                raise
            if self.started_marker not in res.stdout:
                shell.remove_secrets(tr, d["secrets_file"])
                raise BackendError(f"{self.who(backend)}: {self.not_started} (exit "
                                   f"{res.exit_code}): {res.stderr.strip()[-300:]}")
        return [run_handle(backend, r, **{self.handle_key: d["key"]}) for r in prepared.runs]

    @hookimpl
    def chester_status(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, RunStatus]:
        from chester.plugin.records import RunStatus

        if not handles:
            return {}
        with self.transport(backend) as tr:
            data = self.tool_call(backend, tr, "status", stdin=folders_stdin(handles))
        return {h.token: RunStatus.from_probe(data[h.remote_dir]) for h in handles}

    #: the records under a run folder the end watcher adds to an end (:meth:`final_status`)
    watch_reads: tuple[str, ...] = ()
    #: the runs' processes live on the host (not on nodes behind it): the end watcher leaves
    #: a run whose process group outlives its worker to the status poll, which stops them
    watch_groups: bool = False

    def final_status(self, handle: RunHandle, records: dict[str, Any]) -> RunStatus | None:
        """A run's final status from the records the end watcher sent, by the one rule
        (:func:`chester.remote.watcher.hosted_final_status`); None when they do not end it."""
        from chester.remote.watcher import hosted_final_status

        return hosted_final_status(handle, records)

    def watch_ends(self, backend: BackendConfig, handles: Sequence[RunHandle],
                   sink: Callable[[str, RunStatus], None]) -> Any:
        """A watcher of the runs' records on the host (:mod:`chester.remote.watcher`): one
        command over its own SSH connection, run by the host's Python (the ``python``
        option) after the package manager's setup, as the host's tool is. Each end it sees
        goes to ``sink`` with the state the records give by the one rule; the host's tool is
        not asked."""
        from chester.remote import watcher

        live = [h for h in handles if h.remote_dir]
        if not live:
            return None
        tr = self.transport(backend)
        try:
            return watcher.Watch(
                tr, live, backend.options.python, sink, self.final_status,
                ends=watcher.HOSTED_ENDS, reads=(*watcher.HOSTED_READS, *self.watch_reads),
                groups=self.watch_groups,
                wrap=lambda argv: setup_argv(backend, "chester-watch", argv))
        except BaseException:
            tr.close()
            raise

    @hookimpl
    def chester_cancel(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, bool]:
        if not handles:
            return {}
        with self.transport(backend) as tr:
            data = self.tool_call(backend, tr, "cancel", stdin=folders_stdin(handles),
                                  timeout=self.cancel_timeout)
        return {h.token: bool(data.get(h.remote_dir)) for h in handles}

    @hookimpl
    def chester_pull(self, backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                     patterns: PullPatterns) -> list[PullResult]:
        from chester.remote.pull import pull_runs

        if not handles:
            return []
        with self.transport(backend) as tr:
            return pull_runs(f"pull {backend.name}", tr, handles, backend.options.remote_dir,
                             Path(dest), patterns)

    @hookimpl
    def chester_logs(self, backend: BackendConfig, handle: RunHandle, follow: bool,
                     stream: str, out: TextIO) -> bool:
        cursor = self.log_cursor(handle, stream, out)

        def argv() -> list[str]:  # from the byte written so far, at each (re)start
            return self.tool_argv(backend, "tail", [*(["-f"] if follow else []), "--from",
                                                    str(cursor.offset), handle.remote_dir,
                                                    stream])

        with self.transport(backend) as tr:
            stream_tool(tr, argv, cursor, lambda: self.place_tool(backend, tr))
        cursor.close()
        return True


def chester_dir(backend: BackendConfig) -> str:
    """chester's own folder on the host (queues, env files, runner logs, slots, runtime)."""
    return str(PurePosixPath(backend.options.remote_dir) / ".chester")
