"""The end watcher of the ssh backend: while a wait waits, the end of a run reaches it from
the run's own end record on the host (a ``stat`` a second there, over the open SSH
connection), not at the next status poll; and the watcher lives no longer than the wait. On
the real test sshd hosts (``sshd_hosts``); records are written on the host by other
processes, as the runs' workers write them."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
from chester_backend_ssh.plugin import SSHBackend

from chester.launcher import launch
from chester.plugin.manager import hookimpl
from chester.plugin.records import RunHandle
from chester.plugin.testing import dispatcher_with, fn_sleep
from chester.types import State

from .test_ssh_e2e import make_config

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: writes a run's records as its worker does (argv: folder, token, state; then, optional,
#: the token of a cancel marker to write first, "-" for none)
WRITER = textwrap.dedent("""
    import json, os, sys, time
    d, token, state = sys.argv[1:4]
    os.makedirs(os.path.join(d, ".chester"), exist_ok=True)
    def put(name, data):
        tmp = os.path.join(d, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, os.path.join(d, name))
    put(".chester/run.json", {"token": token, "attempt": 1})
    if len(sys.argv) > 4 and sys.argv[4] != "-":
        put(".chester/cancel", {"by": "chester cancel", "at": time.time(), "token": sys.argv[4]})
    with open(os.path.join(d, "stderr.log"), "w") as f:
        f.write("Traceback: boom\\n")
    t = time.time()
    put(".chester/status.json", {"token": token, "attempt": 1, "state": state,
                                 "host": "worker-1", "started_at": t - 1, "ended_at": t,
                                 "exit_code": 0 if state == "succeeded" else 3})
    if state == "succeeded":
        open(os.path.join(d, ".done"), "w").close()
""")


def _write_on_host(host, folder: str, token: str, state: str, cancel: str = "-") -> None:
    """Write the records by a process on the host itself (a command over ssh)."""
    import shlex

    host.run(shlex.join([sys.executable, "-c", WRITER, folder, token, state, cancel]))


def _handles(remote: str, n: int) -> list[RunHandle]:
    return [RunHandle(run_id=i, token=f"tok{i}", backend="box", local_dir=f"/nowhere/r{i}",
                      remote_dir=f"{remote}/r{i}", host="h") for i in range(n)]


def _setup(tmp_path, sshd_hosts, **opts):
    _project, cfg = make_config(tmp_path, sshd_hosts,
                                {"box": (0, {"python": sys.executable, **opts})})
    return cfg, f"/remote/{tmp_path.name}"


def test_ends_written_on_the_host_reach_the_sink_within_a_second(tmp_path, sshd_hosts):
    cfg, remote = _setup(tmp_path, sshd_hosts)
    host = sshd_hosts[0]
    got: queue.Queue = queue.Queue()
    hs = _handles(remote, 5)
    w = SSHBackend().watch_ends(cfg.backend("box"), hs,
                                lambda t, st: got.put((t, st, time.time())))
    assert w is not None
    try:
        # a running record is no end, nor another run's end in a reused folder
        _write_on_host(host, hs[2].remote_dir, "tok2", "running")
        _write_on_host(host, hs[3].remote_dir, "old", "failed")
        lags, ends = [], {}
        for h, state in ((hs[0], "succeeded"), (hs[1], "failed")):
            _write_on_host(host, h.remote_dir, h.token, state)
            token, st, seen = got.get(timeout=10)
            assert token == h.token
            ends[token] = st
            lags.append(seen - st.ended_at)
        assert max(lags) < 2.0, lags  # a tick of 1 s, plus the line's way back
        assert ends["tok0"].state == State.SUCCEEDED and ends["tok0"].host == "worker-1"
        assert ends["tok1"].state == State.FAILED and ends["tok1"].exit_code == 3
        # a stop by a signal under this run's cancel marker: cancelled, by the rule
        _write_on_host(host, hs[4].remote_dir, "tok4", "terminated", "tok4")
        token, st, _ = got.get(timeout=10)
        assert token == "tok4" and st.state == State.CANCELLED, st
        assert st.reason.startswith("cancelled by chester cancel at "), st.reason
        assert got.empty() and w.alive
        # the reused folder's own run ends later: that end is sent, with its stderr's end
        _write_on_host(host, hs[3].remote_dir, "tok3", "failed")
        token, st, _ = got.get(timeout=10)
        assert token == "tok3" and st.state == State.FAILED and st.exit_code == 3
        assert st.host == "worker-1" and "Traceback: boom" in (st.stderr_tail or "")
    finally:
        w.close()
    assert w.proc.returncode == 0  # it ended with its stdin


def test_the_final_status_is_the_one_the_hosts_tool_gives(tmp_path, sshd_hosts):
    """The same records read by the watcher and by the host's tool (a status poll) give the
    same state, reason, exit code and host."""
    cfg, remote = _setup(tmp_path, sshd_hosts)
    host = sshd_hosts[0]
    b = cfg.backend("box")
    cases = [("succeeded", "-"), ("failed", "-"), ("terminated", "-"), ("failed", "tok3"),
             ("timeout", "tok4")]
    hs = _handles(remote, len(cases))
    got: queue.Queue = queue.Queue()
    w = SSHBackend().watch_ends(b, hs, lambda t, st: got.put((t, st)))
    try:
        for h, (state, cancel) in zip(hs, cases, strict=True):
            _write_on_host(host, h.remote_dir, h.token, state, cancel)
        seen = dict(got.get(timeout=10) for _ in hs)
    finally:
        w.close()
    polled = SSHBackend().chester_status(b, hs)
    for h in hs:
        a, p = seen[h.token], polled[h.token]
        assert (a.state, a.reason, a.exit_code, a.host, a.ended_at, a.stderr_tail) == \
            (p.state, p.reason, p.exit_code, p.host, p.ended_at, p.stderr_tail), (h.token, a, p)
    assert [seen[h.token].state for h in hs] == [
        State.SUCCEEDED, State.FAILED, State.FAILED, State.CANCELLED, State.TIMEOUT]


#: a waiting process: starts a watcher and prints its marker, then waits for ever
WAITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from chester.config import load_config
    from chester.plugin.records import RunHandle
    from chester_backend_ssh.plugin import SSHBackend
    cfg, folder = load_config(Path(sys.argv[1])), sys.argv[2]
    h = RunHandle(run_id=0, token="t", backend="box", local_dir=folder, remote_dir=folder)
    w = SSHBackend().watch_ends(cfg.backend("box"), [h], lambda t, st: None)
    print(w.marker, flush=True)
    time.sleep(3600)
""")


def test_killing_the_waiting_process_ends_its_watcher_on_the_host(tmp_path, sshd_hosts):
    _setup(tmp_path, sshd_hosts)
    host = sshd_hosts[0]
    p = subprocess.Popen([sys.executable, "-c", WAITER,
                          str(tmp_path / "project" / "chester.yaml"),
                          f"/remote/{tmp_path.name}/r0"], stdout=subprocess.PIPE, text=True)
    try:
        marker = p.stdout.readline().strip()
        assert marker.startswith("chester-watch-")

        def running() -> bool:  # looked for on the host, over ssh (the pattern's "[c]"
            # keeps the shell that runs pgrep, whose command line holds it, from matching)
            res = host.run(f"pgrep -f '[{marker[0]}]{marker[1:]}' || true")
            return bool(res.stdout.strip())

        deadline = time.monotonic() + 15
        while not running():
            assert time.monotonic() < deadline, "the watcher never started"
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 15
        while running():
            assert time.monotonic() < deadline, "the watcher outlived its waiting process"
            time.sleep(0.2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


class _CountingSSH(SSHBackend):
    """The ssh backend, counting its status polls (each one call of the host's tool)."""

    def __init__(self, polls: list[float]):
        super().__init__()
        self.polls = polls

    @hookimpl
    def chester_status(self, backend, handles):
        self.polls.append(time.monotonic())
        return super().chester_status(backend, handles)


def test_a_wait_with_a_long_poll_ends_when_the_last_run_ends(tmp_path, sshd_hosts):
    """Polls 30 s apart: the wait still returns within about two seconds of the last run's
    end record, from one status poll (the one the wait starts with)."""
    project, cfg = make_config(tmp_path, sshd_hosts,
                               {"box": (0, {"python": sys.executable, "max_parallel": 3})})
    polls: list[float] = []
    sweep = launch(fn_sleep, [{"sleep": s} for s in (1, 2, 3)], backend="box",
                   exp_prefix="watch", config=cfg,
                   dispatcher=dispatcher_with(_CountingSSH(polls), name="ssh"))
    states = sweep.wait(timeout=120, poll_interval=30, pull=False, progress=False)
    returned = time.time()
    assert set(states.values()) == {State.SUCCEEDED}, states
    rows = [sweep.store.run(r.id) for r in sweep.runs]
    last = max(r.ended_at for r in rows)
    assert returned - last < 3.0, (returned - last, rows)
    assert all(r.host for r in rows), rows
    assert len(polls) == 1, polls  # the ends came from the records, not another poll


class _BrokenWatcherSSH(SSHBackend):
    """The ssh backend whose end watcher cannot run on the host (its Python is missing
    there), counting how often a wait starts it."""

    def __init__(self, starts: list[float]):
        super().__init__()
        self.starts = starts

    def watch_ends(self, backend, handles, sink):
        import attrs

        self.starts.append(time.time())
        broken = attrs.evolve(backend, options=attrs.evolve(backend.options,
                                                            python="/nonexistent/python3"))
        return super().watch_ends(broken, handles, sink)


def test_a_watcher_that_cannot_run_on_the_host_is_not_started_again(tmp_path, sshd_hosts):
    """A watcher that exits with an error (no such Python there) leaves the wait to its
    polls, which see every end; the wait does not open a connection for another watcher at
    every pause."""
    project, cfg = make_config(tmp_path, sshd_hosts,
                               {"box": (0, {"python": sys.executable, "max_parallel": 2})})
    starts: list[float] = []
    sweep = launch(fn_sleep, [{"sleep": s} for s in (1, 3)], backend="box",
                   exp_prefix="broken", config=cfg,
                   dispatcher=dispatcher_with(_BrokenWatcherSSH(starts), name="ssh"))
    states = sweep.wait(timeout=120, poll_interval=0.5, pull=False, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, states
    assert len(starts) == 1, starts


def fn_leave(variant, log_dir, exp_name):
    import os as _os
    import subprocess as _sp
    import time as _time

    _time.sleep(2)  # ends after the wait's first poll
    if variant["orphan"]:  # left behind in the run's process group
        child = _sp.Popen(["sleep", "300"])
        with open(_os.path.join(log_dir, "child.pid"), "w") as f:
            f.write(str(child.pid))


def test_a_run_that_leaves_processes_behind_is_left_to_the_poll_that_stops_them(
        tmp_path, sshd_hosts):
    """The status poll stops what a run that succeeded left in its process group; the
    watcher does not report such a run, so its end comes from a poll, which stops them."""
    project, cfg = make_config(tmp_path, sshd_hosts,
                               {"box": (0, {"python": sys.executable, "max_parallel": 2})})
    host = sshd_hosts[0]
    polls: list[float] = []
    sweep = launch(fn_leave, [{"orphan": False}, {"orphan": True}], backend="box",
                   exp_prefix="leave", config=cfg,
                   dispatcher=dispatcher_with(_CountingSSH(polls), name="ssh"))
    states = sweep.wait(timeout=120, poll_interval=3, pull=True, progress=False)
    assert set(states.values()) == {State.SUCCEEDED}, states
    assert len(polls) >= 2, polls  # the second run's end was seen by a poll
    child = int((sweep.runs[1].log_dir / "child.pid").read_text())
    # stopped: gone, or a zombie nobody has reaped yet
    ps = host.run(f"ps -o stat= -p {child} || true")
    assert ps.stdout.strip() in ("", "Z"), ps.stdout
