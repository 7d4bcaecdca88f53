"""What a backend that ships a sweep to one login host over SSH does at prepare and submit.

The ssh and autobot backends (and yours) share these steps: check the host options, agree
on the sweep's per-call settings, stage small text files under their remote paths, say how
much code would travel, send every run's files (and chester's runtime when the host lacks
it) in one tar stream, and stream a target-side tool's output, resending the tool once
when the host lost it. Each is one function; the backend keeps only what is its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chester.plugin.errors import UserError
from chester.remote import codesync, paths, shell

if TYPE_CHECKING:
    from chester.plugin.records import BackendConfig, PreparedSweep, RunHandle, RunSpec
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


def add_runtime(files: list[str], tree: Path, data: Mapping[str, Any], key: str) -> list[str]:
    """Stage chester's runtime (``data["runtime"]``, for ``data["runtime_remote"]``) under
    a name of its own for this launch (``key``), and return the shell lines that check it
    and rename it into place: run them before anything starts a run
    (:func:`chester.remote.runtime.install_lines`)."""
    from chester.remote import runtime

    part = runtime.part_path(data["runtime_remote"], key)
    add_file(files, tree, Path(data["runtime"]), part)
    return runtime.install_lines(data["runtime_remote"], part, strict=True)


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


def stream_tool(tr: Transport, argv: Sequence[str], write: Callable[[str], Any],
                resend: Callable[[], None]) -> None:
    """Stream a target-side tool's output; when the host lost the tool's file (Python's
    "can't open file"), send it again once and stream again."""
    wrote = False

    def counted(text: str) -> Any:
        nonlocal wrote
        wrote = wrote or bool(text)
        return write(text)

    res = tr.stream(argv, counted, check=False)
    if res.exit_code == 2 and "can't open file" in res.stderr or \
            res.exit_code not in (0, 2) and not wrote:  # a damaged file starts nothing
        resend()
        tr.stream(argv, write)


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
