"""Where SLURM commands run: on this machine, or on a login host through the SSH transport.

Both executors offer the same few calls; the backend never cares which one it has.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from chester.plugin.errors import BackendError, ConnectError, TransientBackendError, UserError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@attrs.frozen
class Result:
    stdout: str
    stderr: str
    exit_code: int


@attrs.frozen
class Transferred:
    files: int = 0
    bytes: int = 0


class Executor(Protocol):
    """What the backend needs from the machine that runs ``sbatch``."""

    host: str | None

    def run_script(self, script: str, *, timeout: float | None = None,
                   check: bool = True) -> Result:
        """Run bash text (``bash -s``, the text on stdin)."""

    def put_tree(self, local_root: Path, rel_paths: Sequence[str], remote_root: str) -> None:
        """Copy files (paths relative to ``local_root``) under ``remote_root``, in one go."""

    def push_project(self, src: Path, dest: str, filter_args: Sequence[str]) -> Transferred:
        """Sync the project's code to ``dest``."""

    def pull(self, src: str, dest: Path, filter_args: Sequence[str],
             folders: Sequence[str] | None = None) -> Transferred:
        """Bring ``src`` (a folder on the target) into ``dest``; never overwrite a local file
        that is newer, or that was changed here since a pull brought it (``folders``,
        relative to ``dest``, keep that record: :mod:`chester.remote.pulled`)."""

    def close(self) -> None: ...


def _rsync_stats(out: str) -> Transferred:
    files = size = 0
    for line in out.splitlines():
        if line.startswith("Number of regular files transferred:"):
            files = int(line.split(":", 1)[1].strip().replace(",", ""))
        elif line.startswith("Total transferred file size:"):
            size = int(line.split(":", 1)[1].strip().split()[0].replace(",", ""))
    return Transferred(files=files, bytes=size)


def env_prefix(env: Mapping[str, str]) -> str:
    """``export`` lines for the scheduler's environment (e.g. ``SLURM_CONF``), quoted."""
    lines = []
    for k, v in sorted(env.items()):
        if not _ENV_NAME.match(k):
            raise UserError(f"slurm: scheduler_env name {k!r} is not a valid variable name")
        lines.append(f"export {k}={shlex.quote(str(v))}\n")
    return "".join(lines)


@attrs.define
class LocalExecutor:
    """``sbatch`` is on this machine: subprocesses, and plain copies."""

    backend: str
    host: str | None = None
    prefix: str = ""

    def run_script(self, script: str, *, timeout: float | None = None,
                   check: bool = True) -> Result:
        try:
            p = subprocess.run(["bash", "-s"], input=self.prefix + script, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TransientBackendError(f"{self.backend}: command timed out after {timeout}s") \
                from exc
        except OSError as exc:
            raise BackendError(f"{self.backend}: cannot run bash: {exc}") from exc
        res = Result(p.stdout, p.stderr, p.returncode)
        if check and p.returncode != 0:
            raise BackendError(f"{self.backend}: command failed ({p.returncode}): "
                               f"{p.stderr.strip()[-2000:]}")
        return res

    def put_tree(self, local_root: Path, rel_paths: Sequence[str], remote_root: str) -> None:
        if Path(local_root).resolve() == Path(remote_root).resolve():
            return  # already in place (no remote_dir: the cluster sees this very folder)
        for rel in rel_paths:
            src = Path(local_root) / rel
            dst = Path(remote_root) / rel
            if dst.exists() and src.resolve() == dst.resolve():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.chester-tmp")
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)

    def _rsync(self, argv: list[str], names: list[str] | None = None) -> Transferred:
        """Run rsync; ``names`` receives the paths it transferred (``--out-format=>>> %n``)."""
        from chester.remote.ssh import rsync_name

        try:
            p = subprocess.run(argv, capture_output=True)
        except OSError as exc:
            raise BackendError(f"{self.backend}: cannot run rsync: {exc}") from exc
        if names is not None:
            names += [rsync_name(ln[4:]) for ln in p.stdout.split(b"\n")
                      if ln.startswith(b">>> ") and not ln.endswith(b"/")]
        if p.returncode not in (0, 24):  # 24: files vanished while copying (a live run)
            raise TransientBackendError(f"{self.backend}: rsync failed ({p.returncode}): "
                                        f"{p.stderr.decode('utf-8', 'replace').strip()[-1000:]}")
        return _rsync_stats(p.stdout.decode("utf-8", "replace"))

    def push_project(self, src: Path, dest: str, filter_args: Sequence[str]) -> Transferred:
        if Path(src).resolve() == Path(dest).resolve():
            return Transferred()
        Path(dest).mkdir(parents=True, exist_ok=True)
        return self._rsync(["rsync", "-a", "--stats", *filter_args, f"{src}/", f"{dest}/"])

    def pull(self, src: str, dest: Path, filter_args: Sequence[str],
             folders: Sequence[str] | None = None) -> Transferred:
        if not Path(src).exists() or Path(src).resolve() == Path(dest).resolve():
            return Transferred()
        from chester.remote import pulled

        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        folders = list(folders) if folders is not None else [""]
        keep = pulled.changed_here(dest, folders)
        argv = ["rsync", "-a", "--update", "--stats", "--from0", "--out-format=>>> %n"]
        keep_file = None
        if keep:  # first: these rules win over every include that follows
            fd, keep_file = tempfile.mkstemp(prefix="chester-keep-")
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join(pulled.exclude_rule(k) + b"\0" for k in keep))
            argv.append(f"--exclude-from={keep_file}")
        names: list[str] = []
        try:
            return self._rsync([*argv, *filter_args, f"{src}/", f"{dest}/"], names)
        finally:
            if keep_file is not None:
                os.unlink(keep_file)
            pulled.remember(dest, folders, names)

    def popen(self, command: str) -> subprocess.Popen[bytes]:
        """Start ``command`` (shell text) here, its stdin and stdout pipes to us."""
        return subprocess.Popen(["bash", "-c", command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        pass


@attrs.define
class RemoteExecutor:
    """``sbatch`` is on a login host: everything goes through the SSH transport."""

    backend: str
    transport: Any
    host: str | None = None
    prefix: str = ""

    def run_script(self, script: str, *, timeout: float | None = None,
                   check: bool = True) -> Result:
        r = self.transport.run_script(self.prefix + script, timeout=timeout, check=False)
        res = Result(r.stdout, r.stderr, r.exit_code)
        if check and res.exit_code != 0:
            raise BackendError(f"{self.backend}: command on {self.host} failed "
                               f"({res.exit_code}): {res.stderr.strip()[-2000:]}")
        return res

    def put_tree(self, local_root: Path, rel_paths: Sequence[str], remote_root: str) -> None:
        self.transport.put_tree(Path(local_root), list(rel_paths), remote_root)

    def push_project(self, src: Path, dest: str, filter_args: Sequence[str]) -> Transferred:
        s = self.transport.rsync_push(Path(src), dest, filter_args=tuple(filter_args))
        return Transferred(files=getattr(s, "files", 0), bytes=getattr(s, "bytes", 0))

    def pull(self, src: str, dest: Path, filter_args: Sequence[str],
             folders: Sequence[str] | None = None) -> Transferred:
        Path(dest).mkdir(parents=True, exist_ok=True)
        s = self.transport.rsync_pull(src, Path(dest), filter_args=tuple(filter_args),
                                      folders=folders)
        return Transferred(files=getattr(s, "files", 0), bytes=getattr(s, "bytes", 0))

    def popen(self, command: str) -> subprocess.Popen[bytes]:
        """Start ``command`` (shell text) on the login host over the connection, its stdin
        and stdout pipes to us: when our end of its stdin closes, so does the command's."""
        popen: subprocess.Popen[bytes] = self.transport.popen(command)
        return popen

    def close(self) -> None:
        self.transport.close()


def open_executor(backend_name: str, options: Any) -> Executor:
    """The executor for a configured backend: remote when ``host`` is set."""
    prefix = env_prefix(options.scheduler_env)
    if not options.host:
        return LocalExecutor(backend=backend_name, prefix=prefix)
    from chester.remote.ssh import SSHTarget, Transport

    target = SSHTarget.parse(options.host, user=options.user, port=options.port,
                             key_filename=options.key_filename, ssh_config=options.ssh_config)
    return RemoteExecutor(backend=backend_name, transport=Transport(target, backend=backend_name),
                          host=options.host, prefix=prefix)


__all__ = ["ConnectError", "Executor", "LocalExecutor", "RemoteExecutor", "Result",
           "Transferred", "open_executor"]
