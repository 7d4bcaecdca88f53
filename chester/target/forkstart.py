"""Starting a worker as a fork of a process that already imported it.

A queue runner (:mod:`chester.target.runner`) and a node's pre-started worker
(:mod:`chester.target.zygote`) fork each run's worker instead of starting a new interpreter
when the new interpreter would be the same one. The child raises :class:`BecomeWorker` at
once: that unwinds the parent's frames (their ``finally`` blocks close what they opened)
up to the tool's ``main``, which calls :func:`as_worker`. Before any of the run's code runs
the child becomes what ``python -c WORKER_CODE RUN_DIR`` would be: its own session, the
run's logs on stdout and stderr, nothing else open, the working folder, the run's
environment, ``sys.path``, ``sys.argv`` and a new ``__main__``. It then runs the worker and
returns its exit status to ``main``, so the process ends as an interpreter ends (threads
joined, ``atexit`` handlers run). The start costs no interpreter start and none of the
imports the parent made once (:func:`preload`).

Standard library only, like everything under :mod:`chester.target`.
"""

from __future__ import annotations

import os
import sys

from chester.target import rundir as rd

#: ``exec``: every worker a new interpreter, never a fork
START_ENV = "CHESTER_WORKER_START"
#: the process's working folder as it started (``sys.path`` holds it where ``-m`` or the
#: runtime zip put it there)
START_CWD = os.getcwd()


def enabled() -> bool:
    """Whether forking is allowed here (a system with ``fork``, not turned off by
    ``CHESTER_WORKER_START=exec``)."""
    return hasattr(os, "fork") and os.environ.get(START_ENV, "fork") != "exec"


_preloaded = False


def preload() -> None:
    """Import once, in the parent, what every forked worker imports (the first fork pays)."""
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    import pickle  # noqa: F401

    import chester.target.worker  # noqa: F401

    try:  # a function pickled by value imports it as it loads
        import cloudpickle  # noqa: F401
    except ImportError:
        pass


class BecomeWorker(BaseException):
    """Raised in a forked child at once; the tool's ``main`` catches it and calls
    :func:`as_worker` with these fields once the parent's frames are gone."""

    def __init__(self, run_dir: str, cwd: str | None, env: dict[str, str]) -> None:
        super().__init__(run_dir)
        self.run_dir, self.cwd, self.env = run_dir, cwd, env


def fork(run_dir: str, cwd: str | None, env: dict[str, str]) -> int:
    """Fork; in the parent return the child's pid, in the child raise :class:`BecomeWorker`."""
    preload()
    sys.stdout.flush()  # nothing the parent buffered is written twice
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        raise BecomeWorker(run_dir, cwd, env)
    return pid


#: True in a worker started by :func:`fork` (its start record says so: ``forked``)
FORKED = False


def as_worker(run_dir: str, cwd: str | None, env: dict[str, str]) -> int:
    """In a forked child, with the parent's frames gone: become what a new
    ``python -c WORKER_CODE RUN_DIR`` would be before the run's code runs, then run the
    worker and return its exit status."""
    global FORKED
    FORKED = True
    import builtins
    import importlib.machinery
    import types

    detach(run_dir)
    close_inherited()
    if cwd:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    archive = rd.runtime_archive()
    # where a new interpreter has its working folder on sys.path: `-c` puts "" first, the
    # runtime zip puts the working folder after itself
    if not getattr(sys.flags, "safe_path", False) and START_CWD in sys.path:
        sys.path[sys.path.index(START_CWD)] = os.getcwd() if archive else ""
    sys.argv = [archive, run_dir] if archive else ["-c", run_dir]
    # a __main__ as a new worker has it (a run's code may look at it, pickle by it): the
    # worker module run from the runtime zip, else what `-c WORKER_CODE` leaves
    from chester.target import worker

    if archive:
        sys.modules["__main__"] = worker
        sys.modules.setdefault("chester.worker", worker)
    else:
        main_module = types.ModuleType("__main__")
        main_module.__dict__.update(__loader__=importlib.machinery.BuiltinImporter,
                                    __annotations__={}, __builtins__=builtins, sys=sys,
                                    main=worker.main)
        sys.modules["__main__"] = main_module
    return worker.main([run_dir])


def detach(run_dir: str) -> None:
    """Take a session of its own; stdin from ``/dev/null``, stdout and stderr appended to
    the run's logs (as a worker's starter gives them)."""
    os.setsid()
    append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    for target, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, os.path.join(run_dir, rd.STDOUT), append),
                                (2, os.path.join(run_dir, rd.STDERR), append)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, target)
        os.close(opened)


def close_inherited() -> None:
    """Close every descriptor above stderr the parent had open (slot locks, pidfds, its
    pipes): the run gets none of them, as ``close_fds`` gives a new process none."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(3, 1024)
        return
    for fd in fds:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, closed already
