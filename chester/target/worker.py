"""``python -m chester.worker RUN_DIR [--spec SWEEP_SPEC]``: run one run's function on the target.

Reads ``RUN_DIR/.chester/payload.pkl`` (the function and the exact variant), records the
start in ``.chester/status.json`` (pid, process start time, host, attempt), calls
``fn(variant, log_dir, exp_name)``, records the end (exit status, time, exception and
traceback) and writes ``.done`` on success. With ``--spec``, the run folder is first
written from the sweep spec (:mod:`chester.sweepspec`) unless it is already there. Nothing
is passed on the command line but paths, so no value ever meets a shell.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from chester.target import rundir as rd

EXIT_FAILED = 1
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """Raised inside the run when the worker gets SIGTERM."""


def _on_term(signum: int, _frame: object) -> None:
    # a second TERM (a shutdown racing a cancel) must not kill the worker before it
    # records how the run ended
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"terminated by signal {signum}")


class Requeue(BaseException):
    """Raised by the run (:func:`requeue`) after it saved a checkpoint: the worker asks the
    scheduler to queue the run again (SLURM: ``scontrol requeue``); the next attempt sees
    :func:`attempt` one higher and ``CHESTER_RESUMED=1``."""


_PREEMPTED = False


def _on_usr1(_signum: int, _frame: object) -> None:
    global _PREEMPTED
    _PREEMPTED = True


def preempted() -> bool:
    """True once the scheduler warned that the run's time is nearly up (SLURM sends
    ``USR1`` ``lead`` seconds before the time limit: ``--signal=B:USR1@lead``; the EC2 agent
    sends ``USR1`` on a spot interruption notice and also writes the marker file named by
    ``$CHESTER_PREEMPT_FILE``, which counts too). A training loop checks it, saves a
    checkpoint and calls :func:`requeue`."""
    if _PREEMPTED:
        return True
    marker = os.environ.get("CHESTER_PREEMPT_FILE")
    return bool(marker and os.path.exists(marker))


def attempt() -> int:
    """This run's attempt (1 first; a requeued run's next attempt is 2, ...)."""
    return int(os.environ.get("CHESTER_ATTEMPT") or 1)


def requeue() -> None:
    """End this attempt and queue the run again to resume (raises :class:`Requeue`)."""
    raise Requeue("requeued to resume from its checkpoint")


def _requeue_self() -> str | None:
    """Ask SLURM to queue this job (or array task) again; None when it took it, else why not."""
    import subprocess

    if os.environ.get("CHESTER_REQUEUE_BY"):
        return None  # the agent that started this worker queues the run again once it ended
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{task}" if task and \
        os.environ.get("SLURM_ARRAY_JOB_ID") else os.environ.get("SLURM_JOB_ID")
    if not job:
        return "not running under SLURM"
    try:
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"scontrol requeue {job}: {exc}"
    return None if r.returncode == 0 else f"scontrol requeue {job}: {r.stderr.strip()}"


def _attempt(meta: dict) -> int:
    if os.environ.get("CHESTER_ATTEMPT"):
        return int(os.environ["CHESTER_ATTEMPT"])
    if os.environ.get("SLURM_RESTART_COUNT"):
        return int(os.environ["SLURM_RESTART_COUNT"]) + 1
    return int(meta.get("attempt", 1))


#: How long a new attempt lets the worker of an earlier one finish (it was told to stop:
#: a requeue) before stopping it itself.
PREVIOUS_ATTEMPT_GRACE_S = 30.0


def _outlive(prior: dict) -> None:
    """Wait for the worker of an earlier attempt of this run to end; stop it if it lingers.

    A scheduler may start the run again while the old worker still records its end (a
    requeue signals the job, marks it pending and can start it at once; a worker whose
    shell died first is no longer tracked). The new attempt must not run beside it.
    """
    pid, ticks = prior.get("pid"), prior.get("start_ticks")
    print(f"chester.worker: attempt {prior.get('attempt') or 1} (pid {pid}) is still ending; "
          "waiting for it", file=sys.stderr)
    deadline = time.monotonic() + PREVIOUS_ATTEMPT_GRACE_S
    while time.monotonic() < deadline:
        if not rd.pid_alive(pid, ticks):
            return
        time.sleep(0.1)
    pgid = prior.get("pgid")
    if pgid and pgid != os.getpgid(0):
        rd.kill_group(int(pgid))
    elif pid:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, TypeError, ValueError):
            pass


def _keep_earlier_logs(run_dir: str, token: str) -> None:
    """The folder held an earlier run (this run was submitted again, or took the folder
    over): that run's logs move beside (``stdout.1.log``, ``stderr.1.log``) and its records
    go (:func:`rundir.retire`). This worker's own output, opened on ``stdout.log`` and
    ``stderr.log`` by whatever started it, follows to new files of those names."""
    opened = {}
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
            opened[fd] = (st.st_dev, st.st_ino)
        except OSError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    moved = rd.retire(run_dir, token)
    for fd, name in ((1, rd.STDOUT), (2, rd.STDERR)):
        new = moved.get(name)
        try:
            ident = (os.stat(new).st_dev, os.stat(new).st_ino) if new else None
        except OSError:
            ident = None
        if ident is None or opened.get(fd) != ident:
            continue  # this stream does not write to the moved log
        out = os.open(os.path.join(run_dir, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                      0o644)
        os.dup2(out, fd)
        os.close(out)


def run(run_dir: str) -> int:
    """Run the run in ``run_dir``; return the process exit status."""
    run_dir = os.path.abspath(run_dir)
    meta = rd.read_json(os.path.join(run_dir, rd.RUN_JSON))
    if meta is None:
        print(f"chester.worker: {run_dir} is not a chester run folder (no {rd.RUN_JSON})",
              file=sys.stderr)
        return 2
    token = meta["token"]
    attempt = _attempt(meta)
    prior = rd.read_json(os.path.join(run_dir, rd.STATUS))
    if prior and prior.get("token") == token and not _may_run_again(prior, attempt):
        return 0
    if rd.cancelled(run_dir, token):
        _record_cancelled_unstarted(run_dir, token, attempt)
        return 0
    if prior and prior.get("token") not in (None, token):
        _keep_earlier_logs(run_dir, token)  # an earlier run of this folder
    try:
        os.unlink(os.path.join(run_dir, rd.DONE))
    except FileNotFoundError:
        pass
    record = _record_start(run_dir, meta, attempt)
    if rd.cancelled(run_dir, token):
        # a cancel marked the run after the check above and read no start record to stop:
        # the start record is written first and the marker read after, so one side sees
        # the other, and the run's code never starts (its TERM is the same cancel)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _record_cancelled_unstarted(run_dir, token, attempt)
        return 0
    _enter_run_environment(meta, attempt)
    exit_code = _call_run(run_dir, meta, record)
    return _record_end(run_dir, record, exit_code)


def _may_run_again(prior: dict, attempt: int) -> bool:
    """Decide whether this worker runs the run its folder already recorded (``prior``, of
    the same token): not when it already succeeded (unless ``CHESTER_RERUN=1``), nor while
    a worker of the same or a later attempt still runs it on this host; a worker of an
    earlier attempt is waited for (:func:`_outlive`) first."""
    if prior.get("state") == "succeeded" and os.environ.get("CHESTER_RERUN") != "1":
        print("chester.worker: this run already succeeded; not running it again",
              file=sys.stderr)
        return False
    # a pid means something only on the host that recorded it (run folders may sit on a
    # filesystem shared by many nodes)
    here = prior.get("host") in (None, rd.hostname())
    if here and prior.get("ended_at") is None and prior.get("pid") != os.getpid() \
            and rd.pid_alive(prior.get("pid"), prior.get("start_ticks")):
        if int(prior.get("attempt") or 1) >= attempt:
            print("chester.worker: this run is already running (pid %s)" % prior.get("pid"),
                  file=sys.stderr)
            return False
        _outlive(prior)
    return True


def _record_cancelled_unstarted(run_dir: str, token: str, attempt: int) -> None:
    """Record a run cancelled before it started: its end, with who cancelled it and when."""
    marker = rd.read_cancel(run_dir)
    rd.write_json_atomic(os.path.join(run_dir, rd.STATUS), {
        "token": token, "attempt": attempt, "state": "cancelled",
        "reason": rd.cancel_reason(marker, started=False), "ended_at": time.time(),
        **rd.cancel_fields(marker)})


def _record_start(run_dir: str, meta: dict, attempt: int) -> dict:
    """Record the run as running (pid, process group, start ticks, host, attempt) and take
    the signals: ``USR1`` (the preemption warning) before the record says running, ``TERM``
    after it. Return the record, which the end completes."""
    pid = os.getpid()
    record = {
        "token": meta["token"], "name": meta.get("name"), "attempt": attempt, "pid": pid,
        "pgid": os.getpgid(pid), "start_ticks": rd.proc_start_time(pid), "host": rd.hostname(),
        "started_at": time.time(), "ended_at": None, "state": "running",
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        # started as a fork of a process that had imported the worker (chester.forkstart)
        "forked": bool(getattr(sys.modules.get("chester.target.forkstart"), "FORKED", False)),
    }
    # the warning is handled before the record says "running" (a backend that signals a
    # running worker must never kill it with USR1's default action): see preempted()
    signal.signal(signal.SIGUSR1, _on_usr1)
    rd.write_json_atomic(os.path.join(run_dir, rd.STATUS), record)
    signal.signal(signal.SIGTERM, _on_term)
    return record


def _enter_run_environment(meta: dict, attempt: int) -> None:
    """Set what the run sees of its launch: ``CHESTER_ATTEMPT``, ``CHESTER_RESUMED`` on a
    later attempt, the run's own environment, and its project folder (importable, and in
    ``CHESTER_PROJECT_DIR``)."""
    # set both ways: a value inherited from whatever started the worker must not leak in
    os.environ["CHESTER_ATTEMPT"] = str(attempt)
    if attempt > 1:
        os.environ["CHESTER_RESUMED"] = "1"
    else:
        os.environ.pop("CHESTER_RESUMED", None)
    os.environ.update({str(k): str(v) for k, v in (meta.get("env") or {}).items()})
    project = meta.get("project_dir")
    if project:
        os.environ["CHESTER_PROJECT_DIR"] = str(project)
        if project not in sys.path:
            sys.path.insert(0, project)


def _call_run(run_dir: str, meta: dict, record: dict) -> int:
    """Load the payload and call the function (or command) on its variant; decide how the
    run ended (requeued, stopped by SIGTERM or a cancel, exited, failed) into ``record``
    and return the exit status. ``TERM`` goes back to its default action afterwards."""
    try:
        # cloudpickle's load is pickle's: a function pickled by value imports cloudpickle
        # as it loads, one pickled by name (a module's function, a command) does not
        import pickle

        with open(os.path.join(run_dir, rd.PAYLOAD), "rb") as f:
            fn = pickle.load(f)
            if isinstance(fn, dict):  # the older form: one pickle holding both
                fn, variant = fn["fn"], fn["variant"]
            else:  # the function's pickle, then the variant's
                variant = pickle.load(f)
        fn(variant, run_dir, meta.get("name"))
    except Requeue as exc:
        return _record_requeue(record, exc)
    except Terminated as exc:
        return _record_terminated(run_dir, record, exc)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code:
            record.update(state="failed", reason=f"SystemExit({exc.code!r})")
        return code
    except BaseException as exc:  # the run's own failure: record it, keep the traceback
        return _record_failure(record, exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0


def _record_requeue(record: dict, exc: Requeue) -> int:
    """The run asked to be queued again: ask the scheduler; terminated (to resume) when it
    took it, failed with the scheduler's reason when not."""
    why = _requeue_self()
    record.update(state="terminated" if why is None else "failed",
                  reason=str(exc) if why is None else f"could not requeue: {why}")
    if why is None:
        record["requeue"] = True
    return EXIT_TERMINATED if why is None else EXIT_FAILED


def _record_terminated(run_dir: str, record: dict, exc: Terminated) -> int:
    """SIGTERM stopped the run: cancelled when a cancel marker is there (with who and when),
    else terminated; one line on stderr says which."""
    # the run's own cleanup (its finally blocks, a command's last words) has printed
    # what it had to; chester's frames are no part of the run's story: one line, no
    # traceback
    if os.path.exists(os.path.join(run_dir, rd.CANCEL)):
        marker = rd.read_cancel(run_dir)
        why = rd.cancel_reason(marker)
        record.update(state="cancelled", reason=why, signal=signal.SIGTERM.value,
                      **rd.cancel_fields(marker))
        _say(f"chester: {why} (SIGTERM); the run stopped")
    else:
        record.update(state="terminated", reason=str(exc), signal=signal.SIGTERM.value)
        _say(f"chester: the run was stopped by SIGTERM ({exc})")
    return EXIT_TERMINATED


def _record_failure(record: dict, exc: BaseException) -> int:
    """The run raised: a failed command records its own exit status (its stderr is the
    story); any other exception records its type and traceback."""
    command = sys.modules.get("chester.target.command")
    if command is not None and isinstance(exc, command.CommandFailed):
        # a command run: its own stderr is the story, not a traceback of the worker
        code = exc.returncode
        record.update(state="failed", reason=str(exc), command_exit_status=code)
        return code if 0 < code < 256 else (128 - code if code < 0 else EXIT_FAILED)
    return _record_exception(record, exc)


def _record_end(run_dir: str, record: dict, exit_code: int) -> int:
    """Record the run's end (time, exit status); on success write ``.done`` first, and a
    ``.done`` that cannot be written fails the run. Return the final exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    record["ended_at"] = time.time()
    record["exit_code"] = exit_code
    if exit_code == 0:
        # .done first: a reader between the two writes sees a running run (.done alone is
        # no end), never a success record without .done, which the rule reads as failed
        record["state"] = "succeeded"
        try:
            open(os.path.join(run_dir, rd.DONE), "a").close()
        except OSError as exc:
            exit_code = record["exit_code"] = EXIT_FAILED
            record.update(state="failed", reason="the run returned, but its .done could "
                          f"not be written: {exc.strerror or exc}")
    rd.write_json_atomic(os.path.join(run_dir, rd.STATUS), record)
    return exit_code


def _say(line: str) -> None:
    """One line of chester's own on the run's stderr, after what the run printed."""
    try:
        sys.stdout.flush()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or full stderr: the record still says it
        pass


def _record_exception(record: dict, exc: BaseException) -> int:
    """Record the exception being handled as the run's failure; print its traceback."""
    import traceback

    # from the run's own frames: the worker's call of the function is no part of its story
    frames = exc.__traceback__
    if frames is not None and frames.tb_next is not None \
            and frames.tb_frame.f_code is _call_run.__code__:
        frames = frames.tb_next
    tb = "".join(traceback.format_exception(type(exc), exc, frames))
    sys.stderr.write(tb)
    record.update(state="failed", reason=f"{type(exc).__name__}: {exc}"[:2000],
                  exception=type(exc).__name__, traceback=tb[-20000:])
    return EXIT_FAILED


USAGE = "usage: python -m chester.worker RUN_DIR [--spec SWEEP_SPEC]"
HELP = USAGE + """

Run one run of a sweep (chester's target-side worker; from the shipped runtime:
python chester-<digest>.pyz worker ...).

input:   RUN_DIR/.chester/run.json (token, name, attempt) and .chester/payload.pkl (the
         function, or command, then the variant); with --spec, the folder is first written
         from the launch's sweep spec (this run's entry only)
records: RUN_DIR/.chester/status.json at the start (pid, pgid, start_ticks, host, attempt,
         forked: started as a fork of a runner or node's pre-started worker, state: running) and at the end (ended_at, state, exit_code; on failure reason,
         exception, traceback; when cancelled, cancelled_by and cancelled_at from the
         cancel marker); RUN_DIR/.done on success
earlier: when the folder held an earlier run (submitted again, or a launch took the folder
         over), its stdout.log and stderr.log move to stdout.N.log and stderr.N.log (the
         first number free) and its status to .chester/status.N.json before the run starts
exit status: 0 succeeded (or already done), 1 the function raised or the command failed,
         143 stopped by a signal, 2 usage or an unreadable sweep spec
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(HELP, end="")
        return 0
    spec = None
    if len(argv) == 3 and argv[1] == "--spec":
        argv, spec = argv[:1], argv[2]
    if len(argv) != 1 or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    if spec is not None:
        from chester.target import sweepspec

        for tries_left in (2, 1, 0):
            try:
                sweepspec.materialize(spec, argv[0])
                break
            except (sweepspec.SpecError, OSError) as exc:
                if tries_left:  # a resumed launch may be replacing the file right now
                    time.sleep(1.0)
                    continue
                print(f"chester.worker: cannot write the run folder {argv[0]} from its sweep "
                      f"spec: {exc}", file=sys.stderr)
                return 2
    return run(argv[0])


if __name__ == "__main__":
    # `chester.preempted()`/`chester.requeue()` in the run are this module's (run as a
    # script, it would otherwise be imported a second time with its own flag and class),
    # under its name and the one it had before (chester.worker)
    sys.modules.setdefault("chester.target.worker", sys.modules[__name__])
    sys.modules.setdefault("chester.worker", sys.modules[__name__])
    sys.exit(main())
