"""SSH transport of the remote layer: used by every backend that reaches a host over SSH.

One :class:`Transport` holds ONE fabric ``Connection`` to one host and reuses it for a
whole operation (a submit, a status poll, a pull). ``rsync`` runs over ``ssh`` with the same
options and a ``ControlMaster`` socket, so a series of rsync calls costs one more SSH
connection at most.

**The user's own OpenSSH connection** (clusters with MFA, e.g. Duo): when the user's
ssh_config gives the host a ``ControlPath`` and a master connection is up there (``ssh -fN
host`` once, or any open ``ssh`` session with ``ControlMaster auto``), every command and every
rsync rides that master through the system ``ssh`` (``-S <path> -o ControlMaster=no``): no
new login, so no second MFA prompt per poll. Without such a master, fabric/paramiko opens its
own connection as before. ``SSHTarget.control_master="no"`` turns the detection off.

Errors are translated into chester's: the host cannot be reached (refused, timeout, DNS) →
:class:`~chester.errors.ConnectError`; the link dropped or timed out mid-command →
:class:`~chester.errors.TransientBackendError`; authentication, host keys, a missing remote
directory or command, any other non-zero exit → permanent :class:`~chester.errors.BackendError`.
Every message is one line naming the backend and the host.

fabric/paramiko are imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from chester.errors import BackendError, ConnectError, TransientBackendError


def _tar_bytes(root: Path, rel_files: Sequence[str]) -> bytes:
    """An uncompressed tar of ``rel_files`` (relative to ``root``)."""
    tar_exe = shutil.which("tar")
    if tar_exe:
        listing = b"".join(os.fsencode(f) + b"\0" for f in rel_files)
        p = subprocess.run([tar_exe, "-c", "-f", "-", "-C", str(root), "--no-recursion",
                            "--null", "-T", "-"], input=listing, capture_output=True)
        if p.returncode == 0:
            return p.stdout
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in rel_files:
            tar.add(str(root / rel), arcname=rel, recursive=False)
    return buf.getvalue()

__all__ = ["Background", "SSHTarget", "RunResult", "SyncStats", "Transport"]


class Background:
    """Run ``fn()`` in a thread now; :meth:`result` waits and returns (or raises) what it did.

    For a code sync that runs beside other steps of a submit over the same
    :class:`Transport` (rsync has its own ControlMaster connection). A plain thread, not
    ``concurrent.futures``: it may be started while the interpreter exits (a script's runs
    submitted at its end)."""

    def __init__(self, fn: Callable[[], Any], name: str = "chester-sync"):
        self._value: Any = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._value = fn()
            except BaseException as exc:  # re-raised by result()
                self._error = exc

        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self) -> None:
        """Wait without raising (when another error is already on its way)."""
        self._thread.join()

#: rsync exit codes that mean "the link / the remote side went away": worth a retry.
_RSYNC_TRANSIENT = {10, 12, 30, 35, 255}
#: rsync exit codes for "some files could not be transferred" (e.g. vanished or missing
#: source files). Not fatal for a pull of many runs: the caller checks what arrived.
_RSYNC_PARTIAL = {23, 24}

_SPEC_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>[^@:\s]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?$")


@attrs.frozen(kw_only=True)
class SSHTarget:
    """Where to connect. ``host`` is an ``~/.ssh/config`` alias or a host name / address."""

    host: str
    user: str | None = None
    port: int | None = None
    key_filename: str | None = None
    #: path of an ssh_config file; ``~/.ssh/config`` is honoured when None
    ssh_config: str | None = None
    connect_timeout: float = 10.0
    #: "auto": ride the user's OpenSSH master when their ssh_config has one and it is up;
    #: "no": always open our own connection
    control_master: str = "auto"

    @classmethod
    def parse(cls, spec: str, **kw: Any) -> SSHTarget:
        """``"alias"``, ``"user@host"`` or ``"user@host:port"``; ``kw`` fills the other fields
        (an explicit ``user``/``port`` in ``kw`` wins only when the spec has none)."""
        m = _SPEC_RE.match(spec.strip())
        if not m:
            raise ValueError(f"not an SSH host: {spec!r} (use alias, user@host or user@host:port)")
        host = m.group("host").strip("[]")
        user = m.group("user") or kw.pop("user", None)
        port = int(m.group("port")) if m.group("port") else kw.pop("port", None)
        kw.pop("user", None)
        kw.pop("port", None)
        return cls(host=host, user=user, port=port, **kw)


@attrs.frozen(kw_only=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int


@attrs.frozen(kw_only=True)
class SyncStats:
    """What one or more rsync invocations did."""

    files: int = 0
    bytes: int = 0
    invocations: int = 0

    def __add__(self, other: SyncStats) -> SyncStats:
        return SyncStats(
            files=self.files + other.files,
            bytes=self.bytes + other.bytes,
            invocations=self.invocations + other.invocations,
        )


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    s = lines[-1] if lines else ""
    return s if len(s) <= limit else s[: limit - 3] + "..."


class Transport:
    """One SSH connection to one host, reused for a whole operation.

    ``connections_opened`` counts the SSH connections this object opened (the fabric one,
    reconnects, and the rsync ControlMaster).
    """

    def __init__(self, target: SSHTarget, *, backend: str):
        self.target = target
        self.backend = backend
        self.connections_opened = 0
        self.rsync_invocations = 0
        self._conn: Any = None
        self._ctl_dir: str | None = None
        self._host_key_opts: list[str] | None = None
        self._user_ctl: str | None = None  # the user's live ControlPath, once found
        self._user_ctl_checked = False
        self._ctl_lock = threading.Lock()
        self._ctl_configured = False  # the user's ssh_config names a ControlPath
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ naming / errors
    def _where(self) -> str:
        if self._conn is None:
            try:  # resolves user/host/port through ssh_config; opens nothing
                self._conn = self._make_connection()
            except Exception:
                pass
        c = self._conn
        t = self.target
        user = (c.user if c is not None else t.user) or ""
        host = c.host if c is not None else t.host
        port = (c.port if c is not None else t.port) or 22
        addr = f"{user + '@' if user else ''}{host}:{port}"
        return f"ssh backend {self.backend!r} ({addr})"

    def _msg(self, problem: str) -> str:
        return f"{self._where()}: {problem}"

    def _translate(self, exc: BaseException, during: str) -> BackendError:
        """Map a fabric/paramiko/socket exception to a chester error."""
        import paramiko
        from paramiko.ssh_exception import NoValidConnectionsError

        connecting = during == "connect"
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return BackendError(self._msg("host key mismatch (check known_hosts)"))
        if isinstance(exc, paramiko.AuthenticationException) and \
                "transport shut down or saw eof" in str(exc).lower():
            # the link dropped during authentication, not a refused key
            if connecting:
                return ConnectError(self._msg("connection dropped while authenticating"))
            return TransientBackendError(self._msg("connection dropped while authenticating"))
        if isinstance(exc, paramiko.AuthenticationException):
            return BackendError(self._msg("authentication failed (check the key)"))
        if isinstance(exc, socket.gaierror):
            return ConnectError(self._msg(f"cannot resolve host name ({exc.strerror or exc})"))
        if isinstance(exc, NoValidConnectionsError):
            return ConnectError(self._msg("connection refused (is sshd running?)"))
        if isinstance(exc, ConnectionRefusedError):
            return ConnectError(self._msg("connection refused (is sshd running?)"))
        if isinstance(exc, (socket.timeout, TimeoutError)):
            if connecting:
                return ConnectError(self._msg(f"connection timed out after {self.target.connect_timeout:g}s"))
            return TransientBackendError(self._msg(f"timed out during {during}"))
        if isinstance(exc, paramiko.SSHException):
            text = _one_line(str(exc)) or type(exc).__name__
            if connecting:
                return ConnectError(self._msg(f"cannot connect: {text}"))
            return TransientBackendError(self._msg(f"link failed during {during}: {text}"))
        if isinstance(exc, (OSError, EOFError)):
            text = _one_line(str(exc)) or type(exc).__name__
            if connecting:
                return ConnectError(self._msg(f"cannot connect: {text}"))
            return TransientBackendError(self._msg(f"link failed during {during}: {text}"))
        return BackendError(self._msg(f"{during} failed: {type(exc).__name__}: {_one_line(str(exc))}"))

    # ------------------------------------------------------------------ connection
    def _make_connection(self) -> Any:
        from fabric import Config, Connection

        t = self.target
        if t.ssh_config:
            cfg = Config(runtime_ssh_path=t.ssh_config)
            cfg.load_ssh_config()
        else:
            cfg = Config()
        ck: dict[str, Any] = {
            "banner_timeout": t.connect_timeout,
            "auth_timeout": t.connect_timeout,
            "channel_timeout": t.connect_timeout,
        }
        if t.key_filename:
            ck["key_filename"] = [t.key_filename]
        return Connection(
            t.host,
            user=t.user,
            port=t.port,
            config=cfg,
            connect_timeout=t.connect_timeout,
            connect_kwargs=ck,
        )

    def connection(self) -> Any:
        """The open fabric ``Connection`` (opened, or re-opened after a drop, on demand)."""
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = self._make_connection()
                except Exception as exc:  # bad ssh_config etc.
                    raise BackendError(self._msg(f"bad SSH settings: {_one_line(str(exc))}")) from exc
            c = self._conn
            if not c.is_connected:
                try:
                    c.open()
                except Exception as exc:
                    try:
                        c.close()
                    except Exception:
                        pass
                    err = self._translate(exc, "connect")
                    if self._ctl_configured:  # MFA hosts are reached through a master
                        err = type(err)(f"{err}; your ssh_config gives this host a "
                                        "ControlPath but no master is up there: log in once "
                                        f"(`ssh -fN {self.target.host}`), then run again")
                    raise err from exc
                self.connections_opened += 1
                tr = c.client.get_transport()
                if tr is not None:
                    tr.set_keepalive(5)
            return c

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        if self._ctl_dir is not None:
            subprocess.run(
                [*self._ssh_base(), "-O", "exit", self._rsync_host()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=10, check=False,
            )
            shutil.rmtree(self._ctl_dir, ignore_errors=True)
            self._ctl_dir = None

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def _exec(
        self,
        command: str,
        stdin: bytes | None,
        timeout: float | None,
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> tuple[bytes, bytes, int]:
        if self.user_master() is not None:
            return self._exec_via_master(command, stdin, timeout, on_stdout)
        conn = self.connection()
        try:
            tr = conn.client.get_transport()
            if tr is None or not tr.is_active():
                raise EOFError("SSH session not active")
            chan = tr.open_session(timeout=self.target.connect_timeout)
        except (KeyboardInterrupt, SystemExit):
            self._drop()
            raise
        except BaseException as exc:
            # the link is dead; drop it so the next call reconnects
            self._drop()
            raise self._translate(exc, "opening a channel") from exc
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = time.monotonic() + timeout if timeout else None
        #: silence longer than this makes us check that the link is still there
        probe_after = max(5.0, self.target.connect_timeout)
        last_seen = time.monotonic()
        try:
            chan.settimeout(0.5)
            chan.exec_command(command)
            if stdin is not None:
                sender = threading.Thread(target=self._send_all, args=(chan, stdin), daemon=True)
                sender.start()
            else:
                chan.shutdown_write()
            while True:
                got = False
                while chan.recv_ready():
                    b = chan.recv(65536)
                    if not b:
                        break
                    got = True
                    if on_stdout is not None:
                        on_stdout(b)
                    else:
                        out.append(b)
                while chan.recv_stderr_ready():
                    b = chan.recv_stderr(65536)
                    if not b:
                        break
                    got = True
                    err.append(b)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not tr.is_active():
                    break
                if deadline is not None and time.monotonic() > deadline:
                    chan.close()
                    raise TransientBackendError(self._msg(f"command timed out after {timeout:g}s"))
                if got:
                    last_seen = time.monotonic()
                elif time.monotonic() - last_seen > probe_after:
                    if not self._link_alive(tr):
                        chan.close()
                        self._drop()
                        raise TransientBackendError(self._msg(
                            "the link stopped answering while a command was running"))
                    last_seen = time.monotonic()
                if not got:
                    time.sleep(0.01)
            code = chan.recv_exit_status() if chan.exit_status_ready() else -1
        except (BackendError, KeyboardInterrupt, SystemExit):
            if not isinstance(sys.exc_info()[1], BackendError):
                self._drop()  # Ctrl-C: the remote side sees its pipes close and stops
            raise
        except BaseException as exc:
            self._drop()
            raise self._translate(exc, "a command") from exc
        finally:
            try:
                chan.close()
            except Exception:
                pass
        if code == -1:
            self._drop()
            raise TransientBackendError(self._msg("connection dropped while a command was running"))
        return b"".join(out), b"".join(err), code

    @staticmethod
    def _send_all(chan: Any, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                if chan.closed:
                    return
                try:
                    n = chan.send(view[:32768])
                except TimeoutError:
                    continue  # window full; the reader loop watches the link
                if n <= 0:
                    return
                view = view[n:]
            chan.shutdown_write()
        except Exception:
            pass

    def _link_alive(self, tr: Any) -> bool:
        """Does the server still answer? (a keepalive request; any reply counts)"""
        done = threading.Event()

        def ping() -> None:
            try:
                tr.global_request("keepalive@openssh.com", wait=True)
            except Exception:
                pass
            finally:
                done.set()

        threading.Thread(target=ping, daemon=True).start()
        return done.wait(self.target.connect_timeout) and tr.is_active()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass

    def _result(self, cmd_label: str, out: bytes, err: bytes, code: int, check: bool) -> RunResult:
        res = RunResult(
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            exit_code=code,
        )
        if check and code != 0:
            detail = _one_line(res.stderr) or _one_line(res.stdout) or f"exit status {code}"
            if code == 127:
                problem = f"command not found on the host: {cmd_label} ({detail})"
            else:
                problem = f"{cmd_label} failed with exit status {code}: {detail}"
            raise BackendError(self._msg(problem))
        return res

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> RunResult:
        """Run ``argv`` (joined with ``shlex``) on the host; ``stdin`` is sent to it."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        cmd = shlex.join([str(a) for a in argv])
        out, err, code = self._exec(cmd, data, timeout)
        return self._result(shlex.quote(str(argv[0])), out, err, code, check)

    def run_script(self, script: str, *, timeout: float | None = None, check: bool = True) -> RunResult:
        """Run a bash script, sent on stdin of ``bash -s`` (never on a command line)."""
        out, err, code = self._exec("bash -s", script.encode(), timeout)
        return self._result("remote script", out, err, code, check)

    def stream(
        self,
        argv: Sequence[str],
        write: Callable[[str], Any],
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> RunResult:
        """Run ``argv`` and hand its stdout to ``write`` as it arrives (``chester logs -f``)."""
        import codecs

        dec = codecs.getincrementaldecoder("utf-8")("replace")
        cmd = shlex.join([str(a) for a in argv])
        out, err, code = self._exec(cmd, None, timeout, on_stdout=lambda b: write(dec.decode(b)))
        tail = dec.decode(b"", final=True)
        if tail:
            write(tail)
        return self._result(shlex.quote(str(argv[0])), b"", err, code, check)

    # ------------------------------------------------------------------ file transfer
    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote_path`` (parent created) with ``mode``, atomically."""
        parent = os.path.dirname(remote_path) or "."
        tmp = f"{remote_path}.tmp.{os.getpid()}"
        script = (
            f"set -e; umask 077; mkdir -p {shlex.quote(parent)}; cat > {shlex.quote(tmp)}; "
            f"chmod {mode:o} {shlex.quote(tmp)}; mv -f {shlex.quote(tmp)} {shlex.quote(remote_path)}"
        )
        out, err, code = self._exec(f"sh -c {shlex.quote(script)}", data, 600)
        self._result(f"writing {remote_path}", out, err, code, True)

    def put_tree(self, local_root: Path, rel_paths: Sequence[str], remote_root: str) -> None:
        """Send many small files (paths relative to ``local_root``) in ONE transfer: a
        gzip'd tar stream over the open connection, unpacked under ``remote_root``.

        Regular files only (folders are created as needed), so extracting never changes the
        mode or owner of an existing folder on the host. The archive is made by the system's
        ``tar`` (thousands of files in milliseconds), or by Python's ``tarfile`` without one.
        """
        import gzip

        local_root = Path(local_root)
        files: list[str] = []
        for rel in rel_paths:
            top = local_root / rel
            if top.is_dir():
                files += sorted(p.relative_to(local_root).as_posix() for p in top.rglob("*")
                                if p.is_file() and not p.is_symlink())
            else:
                files.append(rel)
        archive = gzip.compress(_tar_bytes(local_root, files), compresslevel=1)
        script = (f"set -e; mkdir -p {shlex.quote(remote_root)}; "
                  f"gzip -dc | tar -x --no-same-owner -f - -C {shlex.quote(remote_root)}")
        out, err, code = self._exec(f"sh -c {shlex.quote(script)}", archive, 600)
        self._result(f"unpacking files under {remote_root}", out, err, code, True)

    # ------------------------------------------------------------------ the user's master
    def _ssh_common(self) -> list[str]:
        """``ssh`` with the target's config file, port, key and user."""
        t = self.target
        argv = ["ssh"]
        if t.ssh_config:
            argv += ["-F", t.ssh_config]
        if t.port:
            argv += ["-p", str(t.port)]
        if t.key_filename:
            argv += ["-i", t.key_filename]
        if t.user:
            argv += ["-l", t.user]
        return argv

    def user_master(self) -> str | None:
        """The ControlPath of the user's OpenSSH master for this host when their ssh_config
        names one and a master answers there (``ssh -O check``); None otherwise. Looked up
        once per transport (threads share the answer)."""
        with self._ctl_lock:
            if not self._user_ctl_checked:
                self._user_ctl = self._find_user_master()
                self._user_ctl_checked = True
            return self._user_ctl

    def _find_user_master(self) -> str | None:
        if self.target.control_master == "no" or shutil.which("ssh") is None:
            return None
        base = self._ssh_common()
        try:
            out = subprocess.run([*base, "-G", self._rsync_host()], capture_output=True,
                                 text=True, timeout=10, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        path = None
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            if k.lower() == "controlpath" and v.strip() and v.strip().lower() != "none":
                path = v.strip()
        self._ctl_configured = path is not None
        if path is None or not os.path.exists(path):
            return None
        try:
            r = subprocess.run([*base, "-S", path, "-O", "check", self._rsync_host()],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return path if r.returncode == 0 else None

    def _master_argv(self) -> list[str]:
        """``ssh`` over the user's master: never a new login (no prompt, no new master)."""
        path = self.user_master()
        assert path is not None
        return [*self._ssh_common(), "-S", path, "-o", "ControlMaster=no",
                "-o", "BatchMode=yes"]

    def _exec_via_master(self, command: str, stdin: bytes | None, timeout: float | None,
                         on_stdout: Callable[[bytes], None] | None) -> tuple[bytes, bytes, int]:
        """:meth:`_exec` through the system ``ssh`` riding the user's master."""
        argv = [*self._master_argv(), "-T", self._rsync_host(), command]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None
                                    else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as exc:
            raise BackendError(self._msg(f"cannot run ssh: {exc}")) from exc
        out: list[bytes] = []
        err: list[bytes] = []
        p_out, p_err = proc.stdout, proc.stderr
        assert p_out is not None and p_err is not None

        def read_out() -> None:
            reader: Any = p_out  # a BufferedReader: read1 returns what has arrived
            for chunk in iter(lambda: reader.read1(65536), b""):
                if on_stdout is not None:
                    on_stdout(chunk)
                else:
                    out.append(chunk)

        def read_err() -> None:
            err.append(p_err.read())

        readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
        for t in readers:
            t.start()
        if stdin is not None:
            def feed() -> None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(stdin)
                    proc.stdin.close()
                except (OSError, ValueError):
                    pass

            threading.Thread(target=feed, daemon=True).start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TransientBackendError(self._msg(f"command timed out after {timeout:g}s")) \
                from None
        for t in readers:
            t.join(10)
        e = b"".join(err)
        if code == 255:  # ssh's own failure (the master is gone, or the link)
            text = e.decode("utf-8", "replace")
            low = text.lower()
            with self._ctl_lock:
                self._user_ctl, self._user_ctl_checked = None, False
            if "permission denied" in low or "control socket" in low or "mux" in low:
                raise BackendError(self._msg(
                    "the OpenSSH master connection is gone and a new login needs you "
                    f"(log in again, e.g. `ssh -fN {self.target.host}`): {_one_line(text)}"))
            raise TransientBackendError(self._msg(
                f"link failed over the OpenSSH master: {_one_line(text) or 'exit 255'}"))
        return b"".join(out), e, code

    # ------------------------------------------------------------------ rsync
    def _ssh_base(self) -> list[str]:
        if self.user_master() is not None:  # rsync rides the user's master too
            return self._master_argv()
        t = self.target
        if self._ctl_dir is None:
            self._ctl_dir = tempfile.mkdtemp(prefix="chssh")
        argv = self._ssh_common()
        if self._host_key_opts is None:
            self._host_key_opts = self._default_host_key_opts(list(argv))
        argv += self._host_key_opts
        to = max(1, int(round(t.connect_timeout)))
        argv += [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={to}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self._ctl_dir}/%C",
            "-o", "ControlPersist=120",
        ]
        return argv

    def _default_host_key_opts(self, base: list[str]) -> list[str]:
        """Like the fabric side (which accepts a new host's key, refuses a changed one):
        ``StrictHostKeyChecking=accept-new`` unless the user's ssh_config decides."""
        try:
            out = subprocess.run([*base, "-G", self._rsync_host()], capture_output=True,
                                 text=True, timeout=10, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            if k.lower() == "stricthostkeychecking":
                return ["-o", "StrictHostKeyChecking=accept-new"] if v.strip() == "ask" else []
        return []

    def ssh_command(self) -> list[str]:
        """The ``ssh`` argv rsync uses via ``-e``: same port, key, config and timeouts, with a
        ControlMaster socket so consecutive rsync calls share one connection."""
        return self._ssh_base()

    def _rsync_host(self) -> str:
        return self.target.host if ":" not in self.target.host else f"[{self.target.host}]"

    def _master_alive(self) -> bool:
        if self._ctl_dir is None:
            return False
        r = subprocess.run(
            [*self._ssh_base(), "-O", "check", self._rsync_host()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=10, check=False,
        )
        return r.returncode == 0

    def _rsync(
        self,
        args: list[str],
        *,
        stdin: str | None,
        progress: Callable[[str, int], Any] | None,
        label: str,
    ) -> SyncStats:
        if self.user_master() is None and not self._master_alive():
            self.connections_opened += 1
        ssh = shlex.join(self.ssh_command())
        io_timeout = max(10, int(self.target.connect_timeout * 3))
        argv = [
            "rsync", "-e", ssh, f"--timeout={io_timeout}", "--stats",
            "--out-format=>>> %l %n", *args,
        ]
        self.rsync_invocations += 1
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        p_out, p_err, p_in = proc.stdout, proc.stderr, proc.stdin
        assert p_out is not None and p_err is not None  # both are pipes
        err_chunks: list[str] = []
        t_err = threading.Thread(target=lambda: err_chunks.append(p_err.read()), daemon=True)
        t_err.start()
        if stdin is not None and p_in is not None:
            def feed() -> None:
                try:
                    p_in.write(stdin)
                    p_in.close()
                except Exception:
                    pass

            threading.Thread(target=feed, daemon=True).start()
        files = 0
        nbytes = 0
        stats_text: list[str] = []
        for line in p_out:
            if line.startswith(">>> "):
                parts = line[4:].rstrip("\n").split(" ", 1)
                if len(parts) == 2 and not parts[1].endswith("/"):
                    try:
                        size = int(parts[0])
                    except ValueError:
                        size = 0
                    files += 1
                    nbytes += size
                    if progress is not None:
                        progress(parts[1], size)
            else:
                stats_text.append(line)
        code = proc.wait()
        t_err.join(5)
        err = "".join(err_chunks)
        text = "".join(stats_text)
        m = re.search(r"Number of regular files transferred:\s*([\d,.]+)", text)
        if m:
            files = int(re.sub(r"[,.]", "", m.group(1)))
        m = re.search(r"Total transferred file size:\s*([\d,.]+)", text)
        if m:
            nbytes = int(re.sub(r"[,.]", "", m.group(1)))
        stats = SyncStats(files=files, bytes=nbytes, invocations=1)
        if code == 0 or code in _RSYNC_PARTIAL:
            return stats
        detail = _one_line(err) or f"exit status {code}"
        low = err.lower()
        if "permission denied" in low and ("publickey" in low or "password" in low):
            raise BackendError(self._msg("authentication failed (check the key)"))
        if "host key verification failed" in low or "remote host identification has changed" in low:
            raise BackendError(self._msg("host key not accepted (unknown or changed; "
                                         "check known_hosts)"))
        if "could not resolve hostname" in low:
            raise ConnectError(self._msg(f"cannot resolve host name ({detail})"))
        if "connection refused" in low:
            raise ConnectError(self._msg("connection refused (is sshd running?)"))
        if "connection timed out" in low or "operation timed out" in low:
            raise ConnectError(self._msg(f"connection timed out ({detail})"))
        if code in _RSYNC_TRANSIENT:
            raise TransientBackendError(self._msg(f"rsync {label} interrupted (exit {code}): {detail}"))
        raise BackendError(self._msg(f"rsync {label} failed (exit {code}): {detail}"))

    def rsync_push(
        self,
        src: Path,
        dest: str,
        *,
        filter_args: Sequence[str] = (),
        dry_run: bool = False,
        progress: Callable[[str, int], Any] | None = None,
    ) -> SyncStats:
        """Copy the local folder ``src`` into the remote folder ``dest`` (created), with
        rsync filter rules. Never deletes anything on the host."""
        args = ["-rlptz", "--mkpath", *filter_args]
        if dry_run:
            args.append("--dry-run")
        args += [str(src).rstrip("/") + "/", f"{self._rsync_host()}:{dest.rstrip('/')}/"]
        return self._rsync(args, stdin=None, progress=progress, label="push")

    def rsync_pull(
        self,
        src: str,
        dest: Path,
        *,
        filter_args: Sequence[str] = (),
        files_from: Sequence[str] | None = None,
        progress: Callable[[str, int], Any] | None = None,
    ) -> SyncStats:
        """Copy the remote folder ``src`` (or the listed paths under it) into ``dest``.
        Incremental, ``--update`` (a newer local file is never overwritten), no delete."""
        Path(dest).mkdir(parents=True, exist_ok=True)
        args = ["-rlptz", "--update", *filter_args]
        stdin = None
        if files_from is not None:
            args += ["--files-from=-", "--from0"]
            stdin = "".join(p + "\0" for p in files_from)
        args += [f"{self._rsync_host()}:{src.rstrip('/')}/", str(dest).rstrip("/") + "/"]
        return self._rsync(args, stdin=stdin, progress=progress, label="pull")
