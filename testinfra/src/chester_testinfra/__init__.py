"""Real servers for the integration tests: SSH hosts, a single-node SLURM and an AWS endpoint.

The fixtures live in :mod:`chester_testinfra.plugin` (a pytest plugin, loaded through its
entry point wherever this package is installed); the machinery is in
:mod:`chester_testinfra.sshd`, :mod:`chester_testinfra.slurm` and :mod:`chester_testinfra.aws`.
Everything started here binds to loopback or to addresses inside network namespaces created
here, and is stopped by pid at the end of the session.

This module holds the small helpers the three share.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

__all__ = [
    "InfraUnavailable",
    "Daemon",
    "free_port",
    "kill_pids",
    "on_exit",
    "stopped_at_end",
    "pids_with_env",
    "require",
    "skip_or_fail",
    "wait_until",
]


class InfraUnavailable(Exception):
    """Something a fixture needs is missing (binary, root, ...): the test skips."""


def skip_or_fail(reason: str) -> None:
    """``pytest.skip``. When ``CI=true`` the session then fails, unless the test is listed
    in ``ci_allowed_skips`` with its reason (see :mod:`chester_testinfra.suite`)."""
    pytest.skip(reason)


def require(*, root: bool = False, binaries: Iterable[str] = ()) -> None:
    """Raise :class:`InfraUnavailable` unless we are root (if asked) and every binary exists.

    A binary is an absolute path or a name looked up on ``PATH`` (plus the sbin folders,
    which a non-login root shell may lack).
    """
    if root and os.geteuid() != 0:
        raise InfraUnavailable("needs root")
    missing = [b for b in binaries if find_binary(b) is None]
    if missing:
        raise InfraUnavailable(
            "missing binaries: " + ", ".join(missing) + " (see .ci/install.sh)")


def find_binary(name: str) -> str | None:
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) else None
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], object], timeout: float, what: str = "a condition",
               interval: float = 0.05) -> object:
    """Poll ``pred`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- processes --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _popen(argv: list[str], **kw) -> subprocess.Popen:
    """``subprocess.Popen`` from the main thread or from one spawner thread that lives as long
    as the process: ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends,
    so a daemon started from a short-lived thread (a fault injected later) would die with it."""
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(argv, **kw)
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="infra-spawner")
    return _spawner.submit(lambda: subprocess.Popen(argv, **kw)).result()


class Daemon:
    """A server process run in the foreground as our child, stopped by its pid.

    It gets ``SIGKILL`` if the test process dies without cleaning up (``PR_SET_PDEATHSIG``),
    and its stdout/stderr go to ``log``. It may be started from any thread.
    """

    def __init__(self, argv: list[str], log: Path, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None):
        self.argv = argv
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = _popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, cwd=cwd,
                preexec_fn=_die_with_parent, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process, then ``SIGKILL`` it if it has not exited after ``timeout``."""
        if self.proc.poll() is not None:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def pids_with_env(entries: Iterable[str]) -> list[int]:
    """Pids of processes whose environment holds any of ``entries`` (``"KEY=value"``),
    excluding this process and its ancestors."""
    wanted = [e.encode() for e in entries]
    skip = _ancestors()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(w in env for w in wanted):
            found.append(int(name))
    return found


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(name))
    return kids


def descendants_of(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        out += kids
        todo += kids
    return out


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def run(argv: list[str], *, check: bool = True, timeout: float = 60,
        env: Mapping[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` with text output captured; the error names the command and its output."""
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=dict(env) if env is not None else None, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: "
                           f"{(p.stderr or p.stdout).strip()[-1500:]}")
    return p


# -- cleanup that also runs when the session dies early -------------------------------

_exit_hooks: list[Callable[[], None]] = []


def on_exit(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` at interpreter exit unless it was removed (see :func:`done_exit`).

    Fixtures stop their servers in ``finally``; this is the second line for an interrupted
    session. ``fn`` must be idempotent.
    """
    _exit_hooks.append(fn)
    return fn


def done_exit(fn: Callable[[], None]) -> None:
    try:
        _exit_hooks.remove(fn)
    except ValueError:
        pass


@contextlib.contextmanager
def stopped_at_end(stop: Callable[[], None]) -> Iterator[None]:
    """Run the block, then ``stop`` (idempotent): in ``finally``, and at interpreter exit
    should the session die first (:func:`on_exit`)."""
    hook = on_exit(stop)
    try:
        yield
    finally:
        stop()
        done_exit(hook)


@atexit.register
def _run_exit_hooks() -> None:
    while _exit_hooks:
        fn = _exit_hooks.pop()
        try:
            fn()
        except Exception:
            pass
