"""SSH transport of the remote layer: used by every backend that reaches a host over SSH.

Everything goes through the system's OpenSSH client. One :class:`Transport` opens ONE SSH
connection to one host for a whole operation (a submit, a status poll, a pull): an OpenSSH
master (``ssh -fN`` with a ``ControlPath`` of its own), and every command (``ssh -S <path>
host CMD``) and every rsync (``rsync -e 'ssh -S <path>'``) rides it. So the host is reached
as the user's own ``ssh`` reaches it: their ssh_config (``Include``, ``Match``,
``ProxyJump``, ``HostKeyAlias``...), and above all their known-hosts files and
``StrictHostKeyChecking``, in batch mode (nothing ever prompts):

* a key that matches a known one (plain, hashed or wildcard entries in ``UserKnownHostsFile``
  or ``GlobalKnownHostsFile``, a certificate signed by an ``@cert-authority``) connects;
* an unknown host is refused under ``yes`` and ``ask`` (OpenSSH's default, which batch mode
  cannot ask), in one line saying to ``ssh HOST`` once or to set ``accept-new`` for it;
  ``accept-new`` adds its key where OpenSSH adds it; ``no`` connects;
* a changed or ``@revoked`` key is refused, in one line naming the host, the known-hosts file
  and line and the ``ssh-keygen -R`` that removes the old key. Only an explicit
  ``StrictHostKeyChecking no`` connects anyway, with OpenSSH's warning as a chester warning.

The check is made once, by the master, before any command or file is sent; every later
command and rsync of the operation rides that very connection.

**The user's own OpenSSH connection** (clusters with MFA, e.g. Duo): when the user's
ssh_config gives the host a ``ControlPath`` and a master connection is up there (``ssh -fN
host`` once, or any open ``ssh`` session with ``ControlMaster auto``), every command and every
rsync rides that master instead (``-S <path> -o ControlMaster=no``): no new login, so no
second MFA prompt per poll. ``SSHTarget.control_master="no"`` turns the detection off.

Errors are translated into chester's: the host cannot be reached (refused, timeout, DNS) →
:class:`~chester.errors.ConnectError`; the link dropped or stopped answering mid-command →
:class:`~chester.errors.TransientBackendError`; authentication, host keys, bad ssh settings,
a missing remote directory or command, any other non-zero exit → permanent
:class:`~chester.errors.BackendError`. Every message is one line naming the backend and the
host. An exception raised by a caller's ``write`` (``chester logs -f | head``: a closed pipe)
ends the command and propagates as it is.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs

from chester.plugin.errors import BackendError, ConnectError, TransientBackendError


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

__all__ = ["Background", "SSHTarget", "RunResult", "SyncStats", "Transport", "rsync_name"]


class Background:
    """Run ``fn()`` in a thread now; :meth:`result` waits and returns (or raises) what it did.

    For a code sync that runs beside other steps of a submit over the same
    :class:`Transport` (rsync rides its connection too). A plain thread, not
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


#: seconds our master stays up with nothing riding it (after a process that never closed it)
_PERSIST_S = 120
#: what the user's ssh_config may ask for that chester's connections never do: forwardings,
#: a local command after login, a RemoteCommand in place of ours
_QUIET_OPTS = ("-o", "ClearAllForwardings=yes", "-o", "ForwardAgent=no", "-o", "ForwardX11=no",
               "-o", "PermitLocalCommand=no", "-o", "RemoteCommand=none")
#: lines of a mux client's stderr that are ssh's own, not the remote command's
_MUX_FAILURE = re.compile(r"^(mux_client_|control socket|session open refused|channel \d+: open "
                          r"failed|.*administratively prohibited)", re.I | re.M)


class Transport:
    """One SSH connection to one host, reused for a whole operation.

    ``connections_opened`` counts the SSH connections this object opened: its OpenSSH master,
    and a new one after a dropped link. Commands and rsync ride the master.
    """

    def __init__(self, target: SSHTarget, *, backend: str):
        self.target = target
        self.backend = backend
        self.connections_opened = 0
        self.rsync_invocations = 0
        self._ctl_dir: str | None = None
        self._own_ctl: str | None = None  # our master's socket, while we believe it is up
        self._mine: set[str] = set()  # every socket of a master this transport started
        self._masters = 0
        self._settings_cache: dict[str, str] | None = None
        self._user_ctl: str | None = None  # the user's live ControlPath, once found
        self._user_ctl_checked = False
        self._ctl_lock = threading.Lock()
        self._ctl_configured = False  # the user's ssh_config names a ControlPath
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ settings / naming
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

    def _ssh_host(self) -> str:
        """The destination as ``ssh`` takes it (an IPv6 address bare)."""
        return self.target.host

    def _rsync_host(self) -> str:
        return self.target.host if ":" not in self.target.host else f"[{self.target.host}]"

    def settings(self) -> dict[str, str]:
        """OpenSSH's effective settings for the host (``ssh -G``: ``Include`` and ``Match``
        resolved), keys in lower case; empty when ``ssh`` cannot tell (a bad config file,
        which connecting then reports). Asked once per transport."""
        if self._settings_cache is None:
            out: dict[str, str] = {}
            try:
                p = subprocess.run([*self._ssh_common(), "-G", self._ssh_host()],
                                   capture_output=True, text=True, timeout=10,
                                   stdin=subprocess.DEVNULL)
                if p.returncode == 0:
                    for line in p.stdout.splitlines():
                        k, _, v = line.partition(" ")
                        k = k.lower()
                        out[k] = f"{out[k]} {v.strip()}" if k in out else v.strip()
            except (OSError, subprocess.SubprocessError):
                pass
            self._settings_cache = out
        return self._settings_cache

    def _where(self) -> str:
        s = self.settings()
        t = self.target
        user = s.get("user") or t.user or ""
        host = s.get("hostname") or t.host
        port = s.get("port") or t.port or 22
        addr = f"{user + '@' if user else ''}{host}:{port}"
        return f"ssh backend {self.backend!r} ({addr})"

    def _msg(self, problem: str) -> str:
        return f"{self._where()}: {problem}"

    def _login_line(self) -> str:
        """The ``ssh`` command that reaches the host as chester does, for the user to run."""
        return shlex.join([*self._ssh_common(), self._ssh_host()])

    def _known_name(self) -> str:
        """The host as OpenSSH writes it in known-hosts files (``HostKeyAlias``, or the host
        name, with ``[..]:port`` off port 22)."""
        s = self.settings()
        name = s.get("hostkeyalias") or s.get("hostname") or self.target.host
        port = s.get("port") or str(self.target.port or 22)
        return name if port == "22" or s.get("hostkeyalias") else f"[{name}]:{port}"

    # ------------------------------------------------------------------ the connection
    def _ssh_exe(self) -> None:
        if shutil.which("ssh") is None:
            raise BackendError(self._msg("OpenSSH's `ssh` client is not installed on this "
                                         "machine; install it (e.g. openssh-client)"))

    def _alive_opts(self) -> list[str]:
        """Time limits: connecting, and how long a silent link may go unanswered (about twice
        ``connect_timeout``) before the master gives it up."""
        t = self.target
        interval = max(1, round(t.connect_timeout / 2))
        return ["-o", f"ConnectTimeout={max(1, int(round(t.connect_timeout)))}",
                "-o", f"ServerAliveInterval={interval}", "-o", "ServerAliveCountMax=3"]

    def connect(self) -> str:
        """Make sure the connection is up (log in now if needed); return the ControlPath that
        commands and rsync ride: the user's live master, or this transport's own."""
        user = self.user_master()
        if user is not None:
            return user
        with self._lock:
            ctl = self._own_ctl
            if ctl is not None and os.path.exists(ctl):
                return ctl
            return self._start_master()

    def _start_master(self) -> str:
        self._ssh_exe()
        if self._ctl_dir is None:
            self._ctl_dir = tempfile.mkdtemp(prefix="chssh")
        self._masters += 1  # each master its own socket: a late error names the one it hit
        ctl = os.path.join(self._ctl_dir, f"m{self._masters}")
        log_path = os.path.join(self._ctl_dir, f"m{self._masters}.log")
        argv = [*self._ssh_common(), "-o", "BatchMode=yes", *self._alive_opts(), *_QUIET_OPTS,
                "-o", "ControlMaster=yes", "-o", f"ControlPath={ctl}",
                "-o", f"ControlPersist={_PERSIST_S}", "-o", "LogLevel=INFO", "-E", log_path,
                "-f", "-N", "-T", self._ssh_host()]
        limit = 3 * self.target.connect_timeout + 10  # DNS, TCP, banner, key exchange, login
        err: BackendError | None = None
        try:  # what ssh says before its log is open goes to that file too
            with open(log_path, "ab") as early:
                code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=early,
                                      stderr=early, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            err = ConnectError(self._msg(f"connection timed out after {limit:g}s"))
        except OSError as exc:
            err = BackendError(self._msg(f"cannot run ssh: {exc}"))
        text = _read_text(log_path)
        if err is None and (code != 0 or not os.path.exists(ctl)):
            err = self._connect_error(text, code)
        if err is not None:
            if not self._mine:  # nothing of ours to close later: leave no folder behind
                shutil.rmtree(self._ctl_dir, ignore_errors=True)
                self._ctl_dir = None
            raise err
        self._mine.add(ctl)
        self._own_ctl = ctl
        self.connections_opened += 1
        self._report_warnings(text)
        return ctl

    def _report_warnings(self, text: str) -> None:
        """What OpenSSH says when it connects anyway (``StrictHostKeyChecking no`` and a
        changed or revoked key), or when it adds a new host's key."""
        from chester.logs import get_logger

        log = get_logger()
        kh = _host_key_report(text, self._login_line(), refused=False)
        if kh is not None:
            log.warning("ssh_host_key_not_trusted", backend=self.backend,
                        detail=self._msg(f"{kh}; connecting anyway because "
                                         "StrictHostKeyChecking is no for this host, as "
                                         "OpenSSH does (without password logins or "
                                         "forwardings)"))
        for m in re.finditer(r"^Warning: Permanently added .*$", text, re.M):
            log.info("ssh_host_key_added", backend=self.backend, detail=m.group(0))

    def _connect_error(self, text: str, code: int) -> BackendError:
        """The one-line error for a connection OpenSSH did not make (``text``: its log)."""
        low = text.lower()
        last = _one_line(_meaningful(text)) or f"ssh exited with status {code}"
        if "host key verification failed" in low:
            return BackendError(self._msg(self._host_key_refusal(text)))
        err: BackendError
        if "could not resolve hostname" in low or "name or service not known" in low:
            err = ConnectError(self._msg(f"cannot resolve host name ({last})"))
        elif "connection refused" in low:
            err = ConnectError(self._msg("connection refused (is sshd running?)"))
        elif "timed out" in low:
            err = ConnectError(self._msg(
                f"connection timed out after {self.target.connect_timeout:g}s"))
        elif "permission denied" in low or "too many authentication failures" in low:
            err = BackendError(self._msg(f"authentication failed (check the key): {last}"))
        elif re.search(r"bad configuration option|terminating, \d+ bad|can't open user config|"
                       r"bad owner or permissions|line \d+:|unsupported option|keyword",
                       low):
            first = next((ln for ln in _meaningful(text).splitlines()
                          if "terminating, " not in ln), last)
            err = BackendError(self._msg(f"bad SSH settings: {_one_line(first)}"))
        elif "unable to negotiate" in low:
            err = BackendError(self._msg(f"cannot agree on a cipher or key type: {last}"))
        else:
            err = ConnectError(self._msg(f"cannot connect: {last}"))
        if self._ctl_configured:  # MFA hosts are reached through a master
            err = type(err)(f"{err}; your ssh_config gives this host a ControlPath but no "
                            f"master is up there: log in once (`ssh -fN {self.target.host}`), "
                            "then run again")
        return err

    def _host_key_refusal(self, text: str) -> str:
        kh = _host_key_report(text, self._login_line(), refused=True)
        if kh is not None:
            return kh
        s = self.settings()
        policy = {"true": "yes", "false": "no"}.get(s.get("stricthostkeychecking", "ask"),
                                                    s.get("stricthostkeychecking", "ask"))
        m = re.search(r"No (\S+) host key is known for (\S+)", text)
        name = m.group(2) if m else self._known_name()
        files = " ".join(f for f in (s.get("userknownhostsfile", ""),
                                     s.get("globalknownhostsfile", "")) if f)
        where = f" ({files})" if files else ""
        config = self.target.ssh_config or "~/.ssh/config"
        if m or "you have requested strict checking" not in text.lower():
            why = "which batch mode cannot ask" if policy == "ask" else "so OpenSSH refuses it"
            return (f"the host key of {name} is not in your known-hosts files{where} and "
                    f"StrictHostKeyChecking is {policy} ({why}), so nothing was sent; check "
                    f"and accept it once with `{self._login_line()}`, or set "
                    f"`StrictHostKeyChecking accept-new` for this host in {config}")
        return f"OpenSSH refused the host key of {name}: {_one_line(_meaningful(text), 600)}"

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
        path = self.settings().get("controlpath")
        if path is not None and path.lower() == "none":
            path = None
        self._ctl_configured = path is not None
        if path is None or not os.path.exists(path):
            return None
        try:
            r = subprocess.run([*self._ssh_common(), "-S", path, "-O", "check", self._ssh_host()],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return path if r.returncode == 0 else None

    def _client_argv(self, ctl: str) -> list[str]:
        """``ssh`` riding the master at ``ctl``: never a login of its own, never a prompt."""
        return [*self._ssh_common(), "-S", ctl, "-o", "ControlMaster=no", "-o", "BatchMode=yes",
                *self._alive_opts(), *_QUIET_OPTS, "-o", "LogLevel=ERROR"]

    def _master_gone(self, ctl: str) -> bool:
        if not os.path.exists(ctl):
            return True
        try:
            r = subprocess.run([*self._ssh_common(), "-S", ctl, "-O", "check", self._ssh_host()],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return True
        return r.returncode != 0

    def _lost_link(self, ctl: str, detail: str) -> BackendError:
        """The error for a command whose master went away under it."""
        if ctl not in self._mine:  # the user's master
            with self._ctl_lock:
                self._user_ctl, self._user_ctl_checked = None, False
            return BackendError(self._msg(
                "the OpenSSH master connection is gone and a new login needs you "
                f"(log in again, e.g. `ssh -fN {self.target.host}`){': ' + detail if detail else ''}"))
        with self._lock:
            if self._own_ctl == ctl:
                self._own_ctl = None  # the next command logs in again
                try:
                    os.unlink(ctl)  # a master killed outright leaves its socket
                except OSError:
                    pass
        if "not responding" in _read_text(f"{ctl}.log"):
            return TransientBackendError(self._msg(
                "the link stopped answering while a command was running"))
        return TransientBackendError(self._msg(
            f"connection dropped while a command was running{': ' + detail if detail else ''}"))

    def close(self) -> None:
        ctl, self._own_ctl = self._own_ctl, None
        if ctl is not None and os.path.exists(ctl):
            try:
                subprocess.run([*self._ssh_common(), "-S", ctl, "-O", "exit", self._ssh_host()],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                pass
        if self._ctl_dir is not None:
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
        """Run ``command`` on the host over the connection; its stdout goes to ``on_stdout``
        as it arrives when given. Whatever ``on_stdout`` raises ends the command (the remote
        side sees its output closed) and propagates as it is."""
        ctl = self.connect()
        argv = [*self._client_argv(ctl), "-T", self._ssh_host(), command]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None
                                    else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as exc:
            raise BackendError(self._msg(f"cannot run ssh: {exc}")) from exc
        p_out, p_err = proc.stdout, proc.stderr
        assert p_out is not None and p_err is not None
        err: list[bytes] = []
        t_err = threading.Thread(target=lambda: err.append(p_err.read()), daemon=True)
        t_err.start()
        if stdin is not None:
            def feed() -> None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(stdin)
                    proc.stdin.close()
                except (OSError, ValueError):
                    pass

            threading.Thread(target=feed, daemon=True).start()
        timed_out = threading.Event()
        timer = None
        if timeout:
            def expire() -> None:
                timed_out.set()
                proc.kill()

            timer = threading.Timer(timeout, expire)
            timer.daemon = True
            timer.start()
        out: list[bytes] = []
        try:
            reader: Any = p_out  # a BufferedReader: read1 returns what has arrived
            for chunk in iter(lambda: reader.read1(65536), b""):
                if on_stdout is not None:
                    on_stdout(chunk)
                else:
                    out.append(chunk)
            code = proc.wait()
        except BaseException:  # the caller's write failed, Ctrl-C: stop the command
            # (its stderr may stay open in the master until the remote side ends: no wait)
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if timed_out.is_set():
            raise TransientBackendError(self._msg(f"command timed out after {timeout:g}s"))
        t_err.join(10)
        e = b"".join(err)
        if code == 255:  # ssh's own failure, or the command's own exit status 255
            text = e.decode("utf-8", "replace")
            if self._master_gone(ctl):
                raise self._lost_link(ctl, _one_line(text))
            if _MUX_FAILURE.search(text):  # the master is fine, the host refused a session
                raise TransientBackendError(self._msg(
                    f"the host refused another session on the connection: {_one_line(text)}"))
        return b"".join(out), e, code

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
        """Run ``argv`` and hand its stdout to ``write`` as it arrives, decoded as UTF-8.
        What ``write`` raises (a closed pipe) stops the command and is raised as it is."""
        import codecs

        dec = codecs.getincrementaldecoder("utf-8")("replace")
        res = self.stream_bytes(argv, lambda b: write(dec.decode(b)), timeout=timeout,
                                check=check)
        tail = dec.decode(b"", final=True)
        if tail:
            write(tail)
        return res

    def stream_bytes(
        self,
        argv: Sequence[str],
        write: Callable[[bytes], Any],
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> RunResult:
        """Run ``argv`` and hand its stdout's bytes to ``write`` as they arrive, as they are
        (``chester logs -f``: the bytes of a log, counted by whoever writes them). What
        ``write`` raises (a closed pipe) stops the command and is raised as it is."""
        cmd = shlex.join([str(a) for a in argv])
        out, err, code = self._exec(cmd, None, timeout, on_stdout=write)
        return self._result(shlex.quote(str(argv[0])), b"", err, code, check)

    def popen(self, command: str) -> subprocess.Popen[bytes]:
        """Start ``command`` (shell text) on the host over the connection (logging in now
        if needed, with the same host-key checking) and return at once, its stdin and stdout
        pipes to us (its stderr is dropped): a long-lived command that reads and writes as it
        goes (the end watcher). When our end of its stdin closes (closed, or this process
        gone), the command's stdin reaches its end too."""
        ctl = self.connect()
        try:
            return subprocess.Popen([*self._client_argv(ctl), "-T", self._ssh_host(), command],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise BackendError(self._msg(f"cannot run ssh: {exc}")) from exc

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

    # ------------------------------------------------------------------ rsync
    def ssh_command(self) -> list[str]:
        """The ``ssh`` argv rsync uses via ``-e``: it rides this transport's connection
        (opened now when needed), so rsync neither logs in nor checks a host key itself."""
        return self._client_argv(self.connect())

    def _rsync(
        self,
        args: list[str],
        *,
        stdin: bytes | None,
        progress: Callable[[str, int], Any] | None,
        label: str,
        names: list[str] | None = None,
    ) -> SyncStats:
        """One rsync over the connection; ``names`` receives the paths it transferred."""
        ctl = self.connect()
        io_timeout = max(10, int(self.target.connect_timeout * 3))
        argv = [
            "rsync", "-e", shlex.join(self._client_argv(ctl)), f"--timeout={io_timeout}",
            "--stats", "--out-format=>>> %l %n", *args,
        ]
        self.rsync_invocations += 1
        code, err, files, nbytes, text = self._run_rsync(argv, stdin, progress, names)
        files, nbytes = _rsync_totals(text, files, nbytes)
        stats = SyncStats(files=files, bytes=nbytes, invocations=1)
        if code == 0 or code in _RSYNC_PARTIAL:
            return stats
        self._rsync_failed(ctl, code, err, label)

    def _run_rsync(
        self,
        argv: list[str],
        stdin: bytes | None,
        progress: Callable[[str, int], Any] | None,
        names: list[str] | None,
    ) -> tuple[int, str, int, int, str]:
        """Run ``argv`` to its end, feeding it ``stdin`` and reading its stderr alongside:
        ``(exit code, stderr, files, bytes, stats text)`` with the files and bytes counted
        from its transfer lines. An interrupted read kills rsync before it goes on."""
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise BackendError(self._msg(f"cannot run rsync: {exc}")) from exc
        p_out, p_err, p_in = proc.stdout, proc.stderr, proc.stdin
        assert p_out is not None and p_err is not None  # both are pipes
        err_chunks: list[bytes] = []
        t_err = threading.Thread(target=lambda: err_chunks.append(p_err.read()), daemon=True)
        t_err.start()
        if stdin is not None and p_in is not None:
            def feed() -> None:
                try:
                    p_in.write(stdin)
                    p_in.close()
                except (OSError, ValueError):
                    pass

            threading.Thread(target=feed, daemon=True).start()
        try:
            files, nbytes, text = _read_transfers(p_out, progress, names)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            t_err.join(5)
        err = b"".join(err_chunks).decode("utf-8", "replace")
        return code, err, files, nbytes, text

    def _rsync_failed(self, ctl: str, code: int, err: str, label: str) -> NoReturn:
        """Raise the error of an rsync that exited ``code``: a refused host key or login is
        the user's to fix, a dropped link or an interrupted transfer is transient (unless the
        user's own master went: then log in again), anything else is a failure."""
        detail = _one_line(err) or f"exit status {code}"
        low = err.lower()
        if "host key verification failed" in low:  # only when the master had gone meanwhile
            raise BackendError(self._msg(self._host_key_refusal(err)))
        if "permission denied" in low and ("publickey" in low or "password" in low):
            raise BackendError(self._msg("authentication failed (check the key)"))
        if code in _RSYNC_TRANSIENT and self._master_gone(ctl):
            lost = self._lost_link(ctl, "")
            if not isinstance(lost, TransientBackendError):  # the user's master: log in again
                raise lost
            raise TransientBackendError(self._msg(
                f"rsync {label} interrupted, the connection dropped (exit {code}): {detail}"))
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
        folders: Sequence[str] | None = None,
    ) -> SyncStats:
        """Copy the remote folder ``src`` (or the listed paths under it) into ``dest``.
        Incremental, no delete, and a local file is never overwritten when it is newer than
        the host's (``--update``) or was changed here since a pull brought it, however close
        the two writes (:mod:`chester.remote.pulled`: ``folders``, relative to ``dest``, each
        keep that record; by default each entry of ``files_from``, or ``dest`` itself)."""
        from chester.remote import pulled

        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        if folders is None:
            folders = list(files_from) if files_from is not None else [""]
        keep = pulled.changed_here(dest, folders)
        args = ["-rlptz", "--update", "--from0"]
        keep_file = None
        if keep:  # first: these rules win over every include that follows
            fd, keep_file = tempfile.mkstemp(prefix="chester-keep-")
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join(pulled.exclude_rule(p) + b"\0" for p in keep))
            args.append(f"--exclude-from={keep_file}")
        args += filter_args
        data = None
        if files_from is not None:
            args.append("--files-from=-")
            data = b"".join(os.fsencode(p) + b"\0" for p in files_from)
        args += [f"{self._rsync_host()}:{src.rstrip('/')}/", str(dest).rstrip("/") + "/"]
        names: list[str] = []
        try:
            return self._rsync(args, stdin=data, progress=progress, label="pull", names=names)
        finally:
            if keep_file is not None:
                os.unlink(keep_file)
            pulled.remember(dest, folders, names)


def _read_transfers(
    out: Any, progress: Callable[[str, int], Any] | None, names: list[str] | None,
) -> tuple[int, int, str]:
    """Read rsync's stdout to its end: ``(files, bytes, stats text)``. Each ``>>> size name``
    line of a file (not a folder) counts one file of that size, goes to ``names`` and to
    ``progress``; the other lines are the ``--stats`` text."""
    files = 0
    nbytes = 0
    stats_text: list[str] = []
    for raw in out:
        if raw.startswith(b">>> "):
            parts = raw[4:].rstrip(b"\n").split(b" ", 1)
            if len(parts) == 2 and not parts[1].endswith(b"/"):
                try:
                    size = int(parts[0])
                except ValueError:
                    size = 0
                name = rsync_name(parts[1])
                files += 1
                nbytes += size
                if names is not None:
                    names.append(name)
                if progress is not None:
                    progress(name, size)
        else:
            stats_text.append(raw.decode("utf-8", "replace"))
    return files, nbytes, "".join(stats_text)


def _rsync_totals(text: str, files: int, nbytes: int) -> tuple[int, int]:
    """The files and bytes transferred: those rsync's ``--stats`` text reports, else the
    counts of its transfer lines (``files``, ``nbytes``)."""
    m = re.search(r"Number of regular files transferred:\s*([\d,.]+)", text)
    if m:
        files = int(re.sub(r"[,.]", "", m.group(1)))
    m = re.search(r"Total transferred file size:\s*([\d,.]+)", text)
    if m:
        nbytes = int(re.sub(r"[,.]", "", m.group(1)))
    return files, nbytes


def rsync_name(raw: bytes) -> str:
    """A path as rsync prints it (``%n``: unprintable bytes as ``\\#ooo``), as the file
    system names it."""
    return os.fsdecode(re.sub(rb"\\#([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw))


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _meaningful(text: str) -> str:
    """OpenSSH's log without its banners (lines of ``@``) and notes on what it disabled."""
    keep = [ln for ln in text.splitlines()
            if ln.strip() and not ln.startswith("@") and "is disabled to avoid" not in ln
            and not ln.startswith("Warning: Permanently added")]
    return "\n".join(keep)


def _host_key_report(text: str, login: str, refused: bool) -> str | None:
    """One line on a changed or revoked host key from OpenSSH's log (``login``: the ``ssh``
    command that reaches the host), or None when the log tells of neither."""
    outcome = ", so nothing was sent" if refused else ""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        off = re.search(r"Offending (\S+) key in (.+):(\d+)", text)
        fix = re.search(r'ssh-keygen -f "([^"]+)" -R "([^"]+)"', text)
        fp = re.search(r"key sent by the remote host is\s*\n\s*(\S+?)\.?\s*$", text, re.M)
        name = fix.group(2) if fix else "the host"
        sent = f" ({fp.group(1)})" if fp else ""
        where = f"the {off.group(1)} key in {off.group(2)}:{off.group(3)}" if off else \
            "the key in your known-hosts files"
        remove = (f"`ssh-keygen -f {shlex.quote(fix.group(1))} -R {shlex.quote(fix.group(2))}`"
                  if fix else "`ssh-keygen -R HOST`")
        return (f"the host key of {name} has CHANGED{outcome}: the key it sent{sent} is not "
                f"{where}. Someone may be intercepting the connection, or the host was "
                f"reinstalled; if you know it was, remove the old key with {remove} and "
                f"connect once with `{login}` to check and accept the new one")
    if "REVOKED HOST KEY DETECTED" in text:
        m = re.search(r"The (\S+) host key for (\S+) is marked as revoked", text)
        what = f"the {m.group(1)} host key of {m.group(2)}" if m else "the host key"
        return (f"{what} is marked @revoked in your known-hosts files{outcome}: a stolen key "
                "may be impersonating the host; ask its administrator for the current key")
    return None
