"""``python -m chester.runner``: the queue that starts runs on one machine as slots free.

Used by the local and SSH backends. It is started detached (its own session), so runs go on
after the launcher exits. A slot is an exclusive ``flock`` on ``<slots-dir>/slot-<i>.lock``
held by this runner (close-on-exec, never passed to the run) for as long as the run's
worker lives, so the cap holds across sweeps and launchers, and a process the run leaves
behind (a daemon, ``setsid cmd &``) cannot keep the slot; slot ``i`` gives the run GPU
``gpus[i]`` in ``CUDA_VISIBLE_DEVICES``.

A run already started (its status record carries its token) or owned by another live
runner is skipped, so starting the same queue twice never runs anything twice.

With ``--spec FILE`` (the local backend's launch: one sweep spec for the launch,
:mod:`chester.target.sweepspec`), each run's folder is written from the spec as the runner
comes to it, while earlier runs hold the slots: nothing per run is written before the
queue starts. The runner then records itself (pid, start time) in ``--runner-record`` so
that a reader can tell a run the queue has not reached yet (no folder) from one whose
runner is gone. A worker's end is seen at once (a ``pidfd`` per worker, waited on with
``select``), not at the next look.

A worker is started by forking this runner (:func:`can_fork`, :mod:`chester.target.forkstart`) when a new interpreter would be
the same one, started the same way: the runner's own Python, no ``--worker-prefix``
(a container) and no ``--env-file``. The child becomes what ``python -c WORKER_CODE RUN_DIR``
would be before any of the run's code runs (its own session, the run's logs on stdout and
stderr, nothing else open, the working folder, the environment with the slot's GPU,
``sys.path``, ``sys.argv`` and a new ``__main__``), then runs the worker and ends as an
interpreter ends (threads joined, ``atexit`` handlers run). The run's start then costs no
interpreter start and no imports the runner already made (the worker, ``pickle``,
``cloudpickle``). ``CHESTER_WORKER_START=exec`` in the runner's environment starts every
worker as a new interpreter instead.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

from chester.target import forkstart
from chester.target import rundir as rd

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the target
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Worker(Protocol):
        """A started worker: a new process (``Popen``) or a fork of the runner."""

        pid: int

        def poll(self) -> int | None: ...

POLL_S = 0.01
#: ``python -m chester.worker RUN_DIR`` without runpy's start-up cost.
WORKER_CODE = "import sys; from chester.target.worker import main; sys.exit(main())"


def can_fork(python: str, prefix: list[str] | None, env_file: str | None) -> bool:
    """Whether a forked runner is the same as the worker's own interpreter would be: the
    same Python (this one), nothing before the worker's argv, no environment file sourced
    by a shell first, and forking allowed (:func:`chester.target.forkstart.enabled`)."""
    return bool(python) and python == sys.executable and not prefix and not env_file \
        and forkstart.enabled()


class Forked:
    """A worker forked from this runner: what the runner asks of a ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already elsewhere: its status is lost
                self.returncode = 255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def default_slots_dir() -> Path:
    base = os.environ.get("CHESTER_SLOTS_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chester" / "slots"


def _try_slot(slots_dir: Path, n: int) -> tuple[int, int] | None:
    for i in range(n):
        fd = os.open(slots_dir / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return i, fd
    return None


def free_slots(slots_dir: Path, n: int) -> int:
    """How many of the ``n`` slots no worker holds now (each tried and let go at once)."""
    free = 0
    for i in range(n):
        try:
            fd = os.open(slots_dir / f"slot-{i}.lock", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            free += 1  # never taken
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return free


def _claim(run_dir: Path, me: dict) -> bool:
    """Take ownership of a queued run unless it started or another live runner has it."""
    fd = os.open(run_dir / rd.META / "claim.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two runners never both claim one run
        return _claim_locked(run_dir, me)
    finally:
        os.close(fd)


def _claim_locked(run_dir: Path, me: dict) -> bool:
    meta = rd.read_json(run_dir / rd.RUN_JSON) or {}
    status = rd.read_json(run_dir / rd.STATUS)
    if status and status.get("token") == meta.get("token") and \
            status.get("attempt", 1) >= meta.get("attempt", 1):
        return False
    owner = rd.read_json(run_dir / rd.QUEUED)
    if owner and owner.get("runner_pid") != me["runner_pid"] and \
            rd.pid_alive(owner.get("runner_pid"), owner.get("runner_ticks")):
        return False
    rd.write_json_atomic(run_dir / rd.QUEUED, {**me, "token": meta.get("token"),
                                               "queued_at": time.time()})
    return True


class _Workers:
    """The workers this runner started, each with the slot lock it holds for it and its run
    folder, until it ends."""

    def __init__(self) -> None:
        self.running: list[Worker] = []
        self.slots: dict[Worker, tuple[int, int]] = {}  # worker -> its slot (i, fd)
        self.dirs: dict[Worker, tuple[Path, dict[str, Any]]] = {}  # + token, attempt
        self.pidfds: dict[Worker, int] = {}  # to wait for any worker's end
        self.ended: list[tuple[Path, int, dict[str, Any]]] = []  # exit records not yet written
        #: slots whose worker ended, still locked: handed to this runner's next run at once
        #: (no release and take again), released when there is none
        self.free: list[tuple[int, int]] = []

    def add(self, child: Worker, slot: tuple[int, int], run_dir: Path) -> None:
        self.running.append(child)
        self.slots[child] = slot  # held here until the worker ends, whatever it leaves running
        self.dirs[child] = (run_dir, rd.started_as(run_dir))
        try:
            self.pidfds[child] = os.pidfd_open(child.pid)
        except (AttributeError, OSError):  # before Python 3.9 or Linux 5.3: look every POLL_S
            pass

    def reap(self) -> None:
        """Free the slot of every worker that ended (:attr:`free`); keep those still
        running. How each ended is written by :meth:`record_ended` (after the next worker
        started)."""
        alive = []
        for c in self.running:
            code = c.poll()
            if code is None:
                alive.append(c)
                continue
            if c in self.slots:
                self.free.append(self.slots.pop(c))
            if c in self.pidfds:
                os.close(self.pidfds.pop(c))
            started = self.dirs.pop(c, None)
            if started is not None:
                self.ended.append((started[0], code, started[1]))
        self.running = alive

    def record_ended(self) -> None:
        """Record how each reaped worker exited (a worker killed by a signal or by
        ``os._exit`` records nothing itself)."""
        ended, self.ended = self.ended, []
        for run_dir, returncode, meta in ended:
            rd.record_exit(run_dir, returncode, meta)

    def wait(self, timeout: float) -> None:
        """Return when a worker ends or after ``timeout`` seconds."""
        fds = list(self.pidfds.values())
        if not fds or len(fds) < len(self.running):
            time.sleep(timeout)
            return
        try:
            select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            time.sleep(timeout)

    def release(self) -> None:
        """Release the free slots (for other runners: this one has no run to start)."""
        for _index, fd in self.free:
            os.close(fd)
        self.free = []

    def wait_all(self) -> None:
        """Reap the workers as they end until none is left."""
        self.release()
        while self.running:
            self.reap()
            self.release()
            self.record_ended()
            if self.running:
                self.wait(POLL_S * 10)


def run_queue(run_dirs: list[Path], *, max_parallel: int, gpus: list[str], python: str,
              slots_dir: Path, cwd: str | None, env_file: str | None = None,
              prefix: list[str] | None = None, spec: Path | None = None,
              record: Path | None = None) -> int:
    """Start a worker for each run of ``run_dirs`` this runner claims, one per free slot of
    ``max_parallel``, in order; a run cancelled before it got a slot is ended by a worker
    run in place (it records the cancel). With ``spec``, each run's folder is written from
    that sweep spec first. Return once every worker started has ended."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    me = {"runner_pid": os.getpid(), "runner_ticks": rd.proc_start_time(os.getpid()),
          "host": rd.hostname()}
    if record is not None:
        rd.write_json_atomic(record, me)
    workers = _Workers()
    base_env = dict(os.environ)
    base_env.pop("CHESTER_SLOTS_DIR", None)
    if spec is None:  # the folders are there: every run is claimed (reads queued) at once
        run_dirs = [d for d in run_dirs if _claim(d, me)]
    for run_dir in run_dirs:
        if spec is not None and not (_materialize(spec, run_dir) and _claim(run_dir, me)):
            continue  # from a spec, each run is written and claimed as the queue reaches it
        token = (rd.read_json(run_dir / rd.RUN_JSON) or {}).get("token")
        slot = None if rd.cancelled(run_dir, token) else \
            _wait_for_slot(workers, slots_dir, max_parallel, run_dir, token)
        if slot is None:  # cancelled, before it waited or while it waited
            subprocess.call([*(prefix or ()), *rd.tool_argv(python, "worker"), str(run_dir)],
                            cwd=cwd)
            continue
        child = _start_worker(run_dir, slot, base_env, gpus=gpus, python=python, cwd=cwd,
                              env_file=env_file, prefix=prefix)
        workers.add(child, slot, run_dir)
        workers.record_ended()  # the ends seen while waiting, now that the slot is busy again
    workers.wait_all()
    return 0


def _materialize(spec: Path, run_dir: Path) -> bool:
    """Write ``run_dir`` from the sweep spec (unless it is written already); False, with one
    line in the runner's log, when the spec cannot give it (the run then reads lost once
    this runner is gone)."""
    from chester.target import sweepspec

    try:
        sweepspec.materialize(spec, str(run_dir))
    except (sweepspec.SpecError, OSError) as exc:
        print(f"chester.runner: cannot write the run folder {run_dir} from its sweep spec: "
              f"{exc}", file=sys.stderr, flush=True)
        return False
    return True


def _wait_for_slot(workers: _Workers, slots_dir: Path, max_parallel: int, run_dir: Path,
                   token: str | None) -> tuple[int, int] | None:
    """Wait for a free slot, reaping the workers that end meanwhile (one of this runner's
    ends wakes it at once; a slot another runner frees is seen within ``POLL_S``); None
    when the run was cancelled while it waited."""
    slot = None
    while slot is None:
        workers.reap()
        slot = workers.free.pop(0) if workers.free else _try_slot(slots_dir, max_parallel)
        if slot is None:
            workers.wait(POLL_S)
        if rd.cancelled(run_dir, token):
            break
    return slot


def _start_worker(run_dir: Path, slot: tuple[int, int], base_env: dict[str, str], *,
                  gpus: list[str], python: str, cwd: str | None, env_file: str | None,
                  prefix: list[str] | None) -> Worker:
    """Start the run's worker in its own session, its output appended to the run's logs and
    the slot's GPU in ``CUDA_VISIBLE_DEVICES``; an earlier start's exit record goes first.
    The worker is a fork of this runner where that is the same (:func:`can_fork`), else a
    new process. The slot's lock is released if the worker cannot start."""
    index, fd = slot
    try:  # an earlier start's exit status is not this worker's
        os.unlink(run_dir / rd.EXIT)
    except OSError:
        pass
    env = dict(base_env)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    if can_fork(python, prefix, env_file):
        return _fork_worker(run_dir, fd, cwd, env)
    out = open(run_dir / rd.STDOUT, "ab")
    err = open(run_dir / rd.STDERR, "ab")
    try:
        argv = [python, "-c", WORKER_CODE, str(run_dir)] if not rd.runtime_archive() \
            else [*rd.tool_argv(python, "worker"), str(run_dir)]
        argv = [*(prefix or ()), *argv]
        if env_file:
            argv = ["/bin/sh", "-c", '. "$0" && exec "$@"', env_file, *argv]
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True)
    except BaseException:
        os.close(fd)
        raise
    finally:
        out.close()
        err.close()


def _fork_worker(run_dir: Path, fd: int, cwd: str | None, env: dict[str, str]) -> Forked:
    """Fork the worker (:func:`chester.target.forkstart.fork`); the slot's lock is
    released if it cannot start."""
    try:
        return Forked(forkstart.fork(str(run_dir), cwd, env))
    except forkstart.BecomeWorker:
        raise
    except BaseException:
        os.close(fd)
        raise


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except forkstart.BecomeWorker as child:  # in a forked child: the runner's frames are gone
        run_dir, cwd, env = child.run_dir, child.cwd, child.env
    return forkstart.as_worker(run_dir, cwd, env)


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chester.runner")
    p.add_argument("--max-parallel", type=int, default=os.cpu_count() or 1)
    p.add_argument("--gpus", default="", help="comma-separated GPU ids, one per slot")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--slots-dir", type=Path, default=None)
    p.add_argument("--cwd", default=None)
    p.add_argument("--env-file", default=None, help="sh file sourced before each run")
    p.add_argument("--worker-prefix", default="",
                   help="argv (shell words) put before each worker's, e.g. a container's exec")
    p.add_argument("--from-file", type=Path, default=None, help="file with one run folder a line")
    p.add_argument("--spec", type=Path, default=None,
                   help="sweep spec each run folder is written from as the queue reaches it")
    p.add_argument("--runner-record", type=Path, default=None,
                   help="file this runner records itself in (pid, start time) as it starts")
    p.add_argument("run_dirs", nargs="*", type=Path)
    a = p.parse_args(argv)
    dirs = list(a.run_dirs)
    if a.from_file:
        dirs += [Path(line) for line in a.from_file.read_text().splitlines() if line.strip()]
    gpus = [g for g in a.gpus.split(",") if g.strip()]
    return run_queue(dirs, max_parallel=max(1, a.max_parallel), gpus=gpus, python=a.python,
                     slots_dir=a.slots_dir or default_slots_dir(), cwd=a.cwd,
                     env_file=a.env_file, prefix=shlex.split(a.worker_prefix), spec=a.spec,
                     record=a.runner_record)


if __name__ == "__main__":
    sys.exit(main())
