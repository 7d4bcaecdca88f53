"""``python chester-<digest>.pyz zygote FIFO [BASE]``: a pre-started worker for one node.

The autobot scheduler starts one on a node, as a child of its kept-open ``sh`` there, for
runs that need no container and whose environment file only sets the environment (the
package manager's activation, ``env`` exports; no prepare commands), under that file. It
imports the worker (and ``cloudpickle``) once, then reads start requests from ``FIFO`` (a
named pipe the scheduler made, mode 0600), one JSON line each:
``{"run_dir": ..., "cwd": ..., "env": FILE}``, where ``FILE`` holds the environment of the
shell that asked (``env -0``, after the run's secrets and ``CUDA_VISIBLE_DEVICES``; read and
removed by the worker). ``BASE`` is the session's environment with the sweep's secrets,
before the environment file (``env -0``, read and removed at start): what the file changed
over it is applied over each run's, as sourcing the file before the run would. For each request it forks the worker
(:mod:`chester.target.forkstart`): its own session, the run's logs, folder and environment
in place before any of the run's code runs. When that environment sets a ``PYTHON*``
variable differently from this process's, the child starts a new interpreter for the worker
instead (what such a variable changes is fixed as an interpreter starts).

It lives as long as the shell that started it (its parent; it looks five times a second),
so it goes with the scheduler's session to the node; the workers it started go on. It
reaps each as it ends (woken by ``SIGCHLD``) and writes how its process ended in the run's
``.chester/exit.json`` (token, attempt, returncode), as a queue runner does: the worker
records the run's own end before, and the scheduler knows from this file that the
worker's process, and what it held of the GPUs, is gone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from chester.target import forkstart

LOOK_S = 0.2
USAGE = "usage: python -m chester.target.zygote FIFO [BASE]"


def _read_env(path: str) -> dict[str, str]:
    """The NUL-separated ``KEY=VALUE`` file ``env -0`` wrote (then removed)."""
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


#: what the environment file changed over the session's environment: (set, removed)
_FILE_CHANGES: tuple[dict[str, str], list[str]] = ({}, [])


def _file_changes(base_file: str) -> tuple[dict[str, str], list[str]]:
    """What this process's environment (the session's, then the environment file) changed
    over ``base_file`` (the session's alone)."""
    base = _read_env(base_file)
    own = dict(os.environ)
    return ({k: v for k, v in own.items() if base.get(k) != v},
            [k for k in base if k not in own])


#: pid -> (run folder, its token and attempt as the worker started) of each live worker
_STARTED: dict[int, tuple[str, dict]] = {}


def _start(request: dict) -> None:
    """Fork the worker for one request (the child raises ``BecomeWorker``)."""
    from chester.target import rundir as rd

    run_dir, cwd, env_file = request["run_dir"], request.get("cwd"), request["env"]
    meta = rd.started_as(run_dir)
    try:  # an earlier start's exit status is not this worker's
        os.unlink(os.path.join(run_dir, rd.EXIT))
    except OSError:
        pass
    pid = os.fork()
    if pid:
        _STARTED[pid] = (run_dir, meta)
        return
    # a shell starts a background job (this process) with INT and QUIT ignored; a worker
    # its shell starts in the foreground has them as a new interpreter sets them; CHLD is
    # this process's own
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    try:
        env = _read_env(env_file)
        env.update(_FILE_CHANGES[0])
        for key in _FILE_CHANGES[1]:
            env.pop(key, None)
        changed = any(env.get(k) != os.environ.get(k)
                      for k in {*env, *os.environ} if k.startswith("PYTHON"))
    except BaseException as exc:  # said where the run's story is read, and in the log
        line = f"chester.zygote: cannot start the worker of {run_dir}: {exc}\n"
        for where in (os.path.join(run_dir, "stderr.log"), None):
            try:
                if where is None:
                    sys.stderr.write(line)
                    sys.stderr.flush()
                else:
                    with open(where, "a") as f:
                        f.write(line)
            except OSError:
                pass
        os._exit(1)
    if changed:  # the interpreter must start under that environment: a new one
        _exec_worker(run_dir, cwd, env)
    raise forkstart.BecomeWorker(run_dir, cwd, env)


def _exec_worker(run_dir: str, cwd: str | None, env: dict[str, str]) -> None:
    """Replace this child by a new interpreter running the worker (never returns)."""
    from chester.target import rundir as rd

    try:
        forkstart.detach(run_dir)
        if cwd:
            os.chdir(cwd)
        argv = rd.tool_argv(sys.executable, "worker") + [run_dir]
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)


def _reap() -> None:
    """Reap the workers that ended; write each one's exit record."""
    from chester.target import rundir as rd

    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        started = _STARTED.pop(pid, None)
        if started is None:
            continue
        run_dir, meta = started
        rd.record_exit(run_dir, os.waitstatus_to_exitcode(status), meta)


def serve(fifo: str, base_file: str | None = None) -> int:
    """Start a worker for each request on ``fifo`` until the parent goes."""
    global _FILE_CHANGES
    if base_file:
        _FILE_CHANGES = _file_changes(base_file)
    parent, me = os.getppid(), os.getpid()
    forkstart.preload()
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    # a writer of its own: the pipe never reads as closed between two requests
    wfd = os.open(fifo, os.O_WRONLY)
    # a worker's end wakes the loop at once (its exit record is written then)
    woken, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    buf = b""
    try:
        while os.getppid() == parent:
            ready, _w, _x = select.select([rfd, woken], [], [], LOOK_S)
            if woken in ready:
                try:
                    os.read(woken, 4096)
                except OSError:
                    pass
            _reap()
            if rfd not in ready:
                continue
            buf += os.read(rfd, 65536)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    request = json.loads(line)
                except ValueError:
                    print(f"chester.zygote: not a request: {line[:200]!r}", file=sys.stderr,
                          flush=True)
                    continue
                _start(request)
    finally:
        os.close(wfd)
        os.close(rfd)
        if os.getpid() == me:  # not in a forked worker on its way out of here
            try:
                os.unlink(fifo)
            except OSError:
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2) or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        return serve(*argv)
    except forkstart.BecomeWorker as child:  # a forked worker: the server's frames are gone
        run_dir, cwd, env = child.run_dir, child.cwd, child.env
    return forkstart.as_worker(run_dir, cwd, env)


if __name__ == "__main__":
    sys.exit(main())
