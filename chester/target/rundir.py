"""The run folder: its files, and small helpers used on the launcher and on the target.

This module must import nothing heavy: it runs on every target. Every file and field is
described in docs/target.md.

Layout of one run folder (the seed's, plus chester's own records under ``.chester/``)::

    <log_dir>/<sub_dir>/<exp_prefix>/<N>_<name>/
        variant.json        the variant, for people and tools (JSON; repr for odd values)
        stdout.log          the run's standard output
        stderr.log          the run's standard error
        stdout.N.log        an earlier run of the folder (attempt N, or the run it took over)
        .done               written on success (the seed's marker)
        .chester/run.json   token, name, attempt: what the run is
        .chester/payload.pkl  cloudpickle of the function, then of the exact variant (mode 0600)
        .chester/status.json  the worker's record: start, end, exit status, exception
        .chester/queued.json  the queue runner that owns the run (pid, start time)
        .chester/exit.json  the worker's exit status, as the process that started it saw it
        .chester/cancel     present once the run was cancelled: who, when, which run (JSON)

``.chester/exit.json`` is how the worker's process ended, written by the queue runner that
started it (:mod:`chester.target.runner`) for every worker it reaps, whatever its end: at
once, or, when a run waits for the slot, once that run's worker started; on an autobot node,
by the pre-started worker that forked it (:mod:`chester.target.zygote`) as soon as it reaps
it. Each removes it before it starts a worker in the folder, and :func:`retire` removes an earlier run's
when another run (another token) takes the folder. One JSON object:

- ``token``: the run's token (``run.json``'s) as the worker started
- ``attempt``: the run's attempt (``run.json``'s) as the worker started
- ``returncode``: the worker process's exit status; negative when a signal ended it
  (``-9``: SIGKILL)

A reader (:func:`chester.target.states.decide`, the target tool's ``status``) takes it only
when its token is the run's and its attempt the run's current one or later, and only when
the worker's ``status.json`` does not record the run's end: a worker killed by a signal, or
ended by ``os._exit``, records no end itself, and one that never recorded its start (its
setup failed) none at all. A ``returncode`` that is not a whole number counts as none.
While the runner lives and the file is not there yet, a run whose worker is gone without
recording its end reads ``running`` (the runner is about to write it), unless the disk is
full.

``.chester/queued.json`` names the queue runner that owns the run, written by that runner
when it claims the run (under ``.chester/claim.lock``, so two runners never both claim one
run; a run whose ``status.json`` records the current attempt, or whose owner is another
live runner, is not claimed). One JSON object:

- ``runner_pid``: the runner's process id
- ``runner_ticks``: the runner's start time in clock ticks since boot (``/proc/PID/stat``
  field 22), so that a reused pid is not taken for the runner
- ``host``: the host the runner runs on
- ``token``: the run's token as the runner claimed it
- ``queued_at``: when it claimed the run (seconds since the epoch)

A reader takes it only when its ``token`` is the run's (else it is an earlier run's runner):
while that runner lives, a run that never started reads ``queued`` ("waiting for a free
slot") and a worker gone without recording its end reads ``running`` until the runner writes
``exit.json``; with no runner alive and no start recorded, the run reads ``lost``; with no
``queued.json`` at all, ``queued`` ("not yet picked up").
"""

from __future__ import annotations

import json
import os
import signal
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the target

if TYPE_CHECKING:  # this module runs on every target: keep imports minimal
    from pathlib import Path
    from typing import Any

META = ".chester"
RUN_JSON = f"{META}/run.json"
PAYLOAD = f"{META}/payload.pkl"
STATUS = f"{META}/status.json"
QUEUED = f"{META}/queued.json"
CANCEL = f"{META}/cancel"
#: the worker's exit status as its queue runner saw it ({"token", "attempt", "returncode"})
EXIT = f"{META}/exit.json"
DONE = ".done"
STDOUT = "stdout.log"
STDERR = "stderr.log"
VARIANT_JSON = "variant.json"


def write_json_atomic(path: str | Path, data: Any, mode: int = 0o644) -> None:
    """Write JSON so that a reader never sees half a file."""
    path = os.fspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent or ".", exist_ok=True)
    tmp = os.path.join(parent, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, default=repr)
    os.replace(tmp, path)


def write_bytes_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write bytes so that a reader never sees half a file."""
    path = os.fspath(path)
    parent, name = os.path.split(path)
    tmp = os.path.join(parent or ".", f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def cancelled(run_dir: str | Path, token: str | None) -> bool:
    """Is the run ``token`` in ``run_dir`` cancelled? The marker names the run it was
    written for; one for an earlier run of the folder (a relaunch, a folder taken over)
    does not count, one that names no run (written by an older chester) counts for any."""
    path = os.path.join(os.fspath(run_dir), CANCEL)
    if not os.path.lexists(path):
        return False
    owner = read_cancel(run_dir).get("token")
    return not owner or owner == token


def retire(run_dir: str | Path, token: str | None = None) -> dict[str, str]:
    """Make way for a new run in a folder an earlier run used (a run submitted again, a
    folder taken over): its ``stdout.log``/``stderr.log`` move beside, numbered
    (``stdout.1.log``, the first number free for both), its status record goes to
    ``.chester/status.N.json``, and its ``.done`` and its queue, exit and cancel records go
    (those written for the run ``token`` stay). Returns each moved log's new path by its
    old name."""
    run_dir = os.fspath(run_dir)
    n = 1
    while any(os.path.lexists(os.path.join(run_dir, f"{stem}.{n}.log"))
              for stem in ("stdout", "stderr")):
        n += 1
    moved = {}
    for name in (STDOUT, STDERR):
        old = os.path.join(run_dir, name)
        try:
            if os.path.getsize(old) == 0:
                continue
            new = os.path.join(run_dir, f"{name[:-4]}.{n}.log")
            os.replace(old, new)
            moved[name] = new
        except OSError:
            continue
    status = read_json(os.path.join(run_dir, STATUS))
    if status is not None and (token is None or status.get("token") != token):
        try:
            os.replace(os.path.join(run_dir, STATUS),
                       os.path.join(run_dir, META, f"status.{n}.json"))
        except OSError:
            pass
    for rel in (QUEUED, EXIT):
        if token is not None and (read_json(os.path.join(run_dir, rel)) or {}).get(
                "token") == token:
            continue
        _unlink(os.path.join(run_dir, rel))
    if not (token is not None and cancelled(run_dir, token)):
        _unlink(os.path.join(run_dir, CANCEL))
    _unlink(os.path.join(run_dir, DONE))
    return moved


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
        return None


#: who cancels when nothing says otherwise (the target tool's ``cancel --by``)
CANCELLED_BY = "chester cancel"


def write_cancel(run_dir: str | Path, by: str = CANCELLED_BY, token: str | None = None
                 ) -> None:
    """Write the cancel marker: who cancelled the run, when, as which user on which host,
    and which run of the folder (``token``: see :func:`cancelled`)."""
    import getpass

    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):  # a uid with no name
        user = None
    write_json_atomic(os.path.join(os.fspath(run_dir), CANCEL), {
        "by": by, "at": time.time(), "user": user, "host": hostname(), "token": token})


def read_cancel(run_dir: str | Path) -> dict[str, Any]:
    """The cancel marker's record ({} for a marker without one, as older versions wrote)."""
    found = read_json(os.path.join(os.fspath(run_dir), CANCEL))
    return found if isinstance(found, dict) else {}


def clock(t: float, now: float | None = None) -> str:
    """``14:02`` for a time today, ``Dec 06 14:02`` for another day (this host's clock)."""
    here = time.localtime(t)
    today = time.localtime(time.time() if now is None else now)
    if here[:3] == today[:3]:
        return time.strftime("%H:%M", here)
    return time.strftime("%b %d %H:%M", here)


def cancel_reason(marker: dict[str, Any], *, started: bool = True) -> str:
    """``cancelled by chester cancel at 14:02`` (``... before it started``) from a cancel
    marker's record; ``cancelled`` when it says nothing."""
    words = ["cancelled"]
    if marker.get("by"):
        words.append(f"by {marker['by']}")
    at = marker.get("at")
    if isinstance(at, (int, float)):
        words.append(f"at {clock(at)}")
    if not started:
        words.append("before it started")
    return " ".join(words)


def cancel_fields(marker: dict[str, Any]) -> dict[str, Any]:
    """The marker's who and when as status fields (``cancelled_by``, ``cancelled_at``)."""
    return {"cancelled_by": marker.get("by"), "cancelled_at": marker.get("at")}


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """Is this exact process (pid and start time) still running and not a zombie?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        state = data[data.rfind(b")") + 2:].split()[0]
        if state in (b"Z", b"X"):
            return False
    except OSError:
        if os.path.exists("/proc/self"):
            return False
    if start_time is not None:
        now = proc_start_time(pid)
        if now is not None and now != start_time:
            return False  # the pid was reused
    return True


def group_alive(pgid: int | None) -> bool:
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def kill_group(pgid: int, grace_s: float = 5.0) -> bool:
    """TERM the whole process group, then KILL whatever is left after ``grace_s``."""
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_has_live(pgid):
            return True
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _group_has_live(pgid: int) -> bool:
    """True while the group has a member that is not a zombie."""
    if not os.path.isdir("/proc"):
        return group_alive(pgid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        try:
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
        except (IndexError, ValueError):
            continue
    return False


def free_bytes(path: str | Path) -> int | None:
    """The bytes an unprivileged writer may still write on ``path``'s file system (None when
    it cannot be asked)."""
    try:
        vfs = os.statvfs(path)
    except OSError:
        return None
    return vfs.f_bavail * vfs.f_frsize


def hostname() -> str:
    return os.uname().nodename


def tail(path: str | Path, lines: int = 20, max_bytes: int = 8192) -> str | None:
    """The last ``lines`` lines of a text file (None when missing or empty)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return None
    text = data.decode("utf-8", "replace").rstrip("\n")
    if not text:
        return None
    return "\n".join(text.splitlines()[-lines:])


def runtime_archive() -> str | None:
    """The runtime zip (``chester-<digest>.pyz``) this process runs from, or None when
    chester is installed as a package here."""
    path = __file__
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return None
        if path.endswith(".pyz") and not os.path.isdir(path):
            return path
        path = parent


def tool_argv(python: str, tool: str) -> list[str]:
    """The argv that starts one of chester's target tools (``worker``, ``runner``,
    ``target``) with ``python``: from the runtime zip this process runs from, if any."""
    rt = runtime_archive()
    module = "chester.target" if tool == "target" else f"chester.target.{tool}"
    return [python, rt, tool] if rt else [python, "-m", module]


def started_as(run_dir: str | Path) -> dict[str, Any]:
    """The token and attempt a worker is started for, read as it starts: the run may be
    submitted again (attempt 2) before this worker's exit is recorded."""
    meta = read_json(os.path.join(run_dir, RUN_JSON)) or {}
    return {"token": meta.get("token"), "attempt": meta.get("attempt")}


def record_exit(run_dir: str | Path, returncode: int, meta: dict[str, Any]) -> None:
    """Write :data:`EXIT` for the worker that was started as ``meta`` (:func:`started_as`);
    a full disk leaves it out (the status then says the run died without a record)."""
    try:
        write_json_atomic(os.path.join(run_dir, EXIT), {
            "token": meta.get("token"), "attempt": meta.get("attempt"),
            "returncode": returncode})
    except OSError:
        pass
