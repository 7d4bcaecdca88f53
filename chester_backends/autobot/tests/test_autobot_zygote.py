"""A node's pre-started worker (``chester.target.zygote``), driven as the scheduler drives
it: a ``sh`` reading commands on its standard input, as a node's kept-open session is,
given the scheduler's own shell text, with chester's runtime zip (nothing installed).

A run started through it sees what a run started as a new process sees (descriptors,
argv, ``sys.path``, ``__main__``, folder, environment with secrets and GPUs, session,
signal handlers); the pre-started worker goes with the session; when it cannot take a
start (gone, or ``CHESTER_WORKER_START=exec``), the run starts as a new process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import pytest
from chester_backend_autobot import scheduler as S

from chester.launcher import write_run_folder
from chester.remote import runtime


def probe(variant, log_dir, exp_name):
    import json as _json
    import os as _os
    import signal as _signal
    import sys as _sys

    seen = {
        "fds": sorted(int(fd) for fd in _os.listdir("/proc/self/fd")),
        "argv": _sys.argv[1:],
        "path": _sys.path,
        "main": sorted(vars(_sys.modules["__main__"])),
        "cwd": _os.getcwd(),
        "env": dict(_os.environ),
        "own_session": _os.getsid(0) == _os.getpid() == _os.getpgrp(),
        "signals": {s.name: getattr(_signal.getsignal(s), "__qualname__",
                                    repr(_signal.getsignal(s)))
                    for s in (_signal.SIGINT, _signal.SIGPIPE, _signal.SIGCHLD,
                              _signal.SIGHUP, _signal.SIGTERM, _signal.SIGUSR1)},
        "stdin": _os.path.realpath("/proc/self/fd/0"),
        "stdout": _os.path.realpath("/proc/self/fd/1"),
        "forked": "zygote" in open("/proc/self/cmdline").read().split("\0"),
    }
    with open(_os.path.join(log_dir, "seen.json"), "w") as f:
        _json.dump(seen, f)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Session:
    """A ``sh`` reading commands on stdin: what the scheduler's ssh session to a node runs."""

    def __init__(self, env: dict[str, str]) -> None:
        self.p = subprocess.Popen(["sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env, text=True)
        self.n = 0

    def run(self, command: str) -> int:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.n += 1
        mark = f"@@done-{self.n}"
        self.p.stdin.write("{ %s\n} </dev/null 2>&1; echo \"%s $?\"\n" % (command, mark))
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            assert line, "the session ended"
            if line.startswith(mark):
                return int(line.split()[1])

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(10)


@pytest.fixture
def node(tmp_path):
    rt = runtime.build()
    secrets = tmp_path / "secrets.env"
    secrets.write_text("TOKEN='a b\n$(touch pwned)'\n")
    # what an env file with no prepare commands holds: activation and exports (a secret's
    # name too: the file is sourced after the secrets, so its value wins)
    env_file = tmp_path / "sweep.env"
    env_file.write_text("# chester: sourced before each run of this sweep\n"
                        "export FROM_ENV_FILE='x y'\nexport PATH=\"/opt/extra:$PATH\"\n"
                        "export TOKEN2=\"seen $TOKEN\"\nunset DROPPED_BY_FILE\n:\n")
    project = tmp_path / "proj"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHESTER")}
    env["DROPPED_BY_FILE"] = "1"
    return SimpleNamespace(rt=str(rt.path), secrets=str(secrets), project=project, env=env,
                           root=tmp_path, env_file=str(env_file))


def _entry(node) -> dict:
    return {"python": sys.executable, "runtime": node.rt, "cwd": str(node.project),
            "env_file": node.env_file, "env_prepares": False, "secrets_file": node.secrets,
            "prefix": []}


def _fifo(nodes: S.Nodes, node) -> str:
    return nodes.zygotes["n1"][(sys.executable, node.rt, node.env_file, node.secrets)]


def _run_folder(node, name: str) -> Path:
    d = node.root / "runs" / f"{name} $(touch pwned) 'x'"
    write_run_folder(SimpleNamespace(id=1, name=name, token=f"tok-{name}", local_dir=str(d)),
                     fn=probe, variant={"i": name}, project_dir=str(node.project), env={})
    return d


def _seen(d: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = d / ".chester" / "status.json"
        if status.exists() and json.loads(status.read_text()).get("ended_at"):
            break
        time.sleep(0.05)
    assert json.loads((d / ".chester" / "status.json").read_text())["state"] == "succeeded"
    return json.loads((d / "seen.json").read_text())


def _start(session: Session, nodes: S.Nodes, node, d: Path, gpus, pre_started=True) -> int:
    e = _entry(node)
    fifo = None
    lines = []
    if pre_started:
        fifo, starting = nodes.zygote("n1", e)
        if starting:
            lines.append(starting)
    lines.append(S.start_line(e, str(d), gpus, fifo))
    return session.run("\n".join(lines))


def _nodes(node) -> S.Nodes:
    return S.Nodes(str(node.root), {"ssh_options": [], "node_timeout": 10})


def test_a_run_started_by_the_pre_started_worker_sees_what_a_new_process_sees(node):
    session = Session(node.env)
    nodes = _nodes(node)
    forked_dir, new_dir = _run_folder(node, "forked"), _run_folder(node, "new")
    try:
        assert _start(session, nodes, node, forked_dir, [1, 3]) == 0
        assert _start(session, nodes, node, new_dir, [1, 3], pre_started=False) == 0
        forked, new = _seen(forked_dir), _seen(new_dir)
        assert forked["forked"] and not new["forked"]
        # the pre-started worker records the forked worker's exit once its process is gone
        exit_file = forked_dir / ".chester" / "exit.json"
        deadline = time.monotonic() + 10
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(exit_file.read_text()) == {"token": "tok-forked", "attempt": 1,
                                                     "returncode": 0}
        assert S.worker_gone(str(forked_dir), "tok-forked")
        assert json.loads((forked_dir / ".chester" / "status.json").read_text())["forked"]
        for key in ("fds", "path", "main", "cwd", "own_session", "signals", "stdin"):
            assert forked[key] == new[key], key
        assert forked["argv"] == [str(forked_dir)] and new["argv"] == [str(new_dir)]
        assert forked["stdout"] == str(forked_dir / "stdout.log")
        assert forked["env"]["CUDA_VISIBLE_DEVICES"] == "1,3"
        assert forked["env"]["TOKEN"] == "a b\n$(touch pwned)"
        assert forked["env"]["FROM_ENV_FILE"] == "x y"
        assert forked["env"]["TOKEN2"] == "seen a b\n$(touch pwned)"
        assert forked["env"]["PATH"].startswith("/opt/extra:")
        assert "DROPPED_BY_FILE" not in forked["env"]
        ignore = {"_", "CHESTER_RUN_DIR"}
        assert {k: v for k, v in forked["env"].items() if k not in ignore} == \
            {k: v for k, v in new["env"].items() if k not in ignore}
        assert not (forked_dir / ".chester" / "start.env").exists(), "the secrets are gone"
        # a second start of the same run does nothing (its start marker is there)
        assert _start(session, nodes, node, forked_dir, [1, 3]) == 0
        assert json.loads((forked_dir / ".chester" / "status.json").read_text())[
            "attempt"] == 1
    finally:
        session.close()
    assert not list(node.root.rglob("pwned")) and not Path("pwned").exists()
    # the pre-started worker goes with the session that started it
    fifo = _fifo(nodes, node)
    deadline = time.monotonic() + 10
    while (os.path.exists(fifo) or _zygotes(fifo)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(fifo)
    assert not _zygotes(fifo)


def _zygotes(fifo: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"zygote {fifo}"], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def test_a_start_the_pre_started_worker_cannot_take_starts_a_new_process(node):
    session = Session(node.env)
    nodes = _nodes(node)
    first, second = _run_folder(node, "first"), _run_folder(node, "second")
    try:
        assert _start(session, nodes, node, first, [0]) == 0
        assert _seen(first)["forked"]
        # the first run's worker (a fork: it has the pre-started worker's command line) is
        # gone once its exit is recorded; then only the pre-started worker matches
        deadline = time.monotonic() + 10
        while not S.worker_gone(str(first), "tok-first") and time.monotonic() < deadline:
            time.sleep(0.05)
        fifo = _fifo(nodes, node)
        zygotes = _zygotes(fifo)
        assert zygotes
        for pid in zygotes:
            os.kill(pid, signal.SIGKILL)  # gone without a word: its pipe stays
        assert _start(session, nodes, node, second, [0]) == 0
        seen = _seen(second)
        assert not seen["forked"] and seen["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        session.close()


def test_worker_start_exec_on_the_node_starts_no_pre_started_worker(node):
    session = Session({**node.env, "CHESTER_WORKER_START": "exec"})
    nodes = _nodes(node)
    d = _run_folder(node, "plain")
    try:
        assert _start(session, nodes, node, d, [2]) == 0
        assert not _seen(d)["forked"]
        assert not os.path.exists(_fifo(nodes, node))
    finally:
        session.close()


@pytest.mark.parametrize("entry, forks", [
    ({"prefix": [], "env_file": None}, True),
    ({"prefix": [], "env_file": "/s/k.env", "env_prepares": False}, True),
    ({"prefix": [], "env_file": "/s/k.env", "env_prepares": True}, False),  # prepare commands
    ({"prefix": [], "env_file": "/s/k.env"}, False),  # an entry from before: not known
    ({"prefix": ["apptainer", "exec", "i.sif"], "env_file": None}, False),  # a container
])
def test_runs_start_pre_started_only_without_a_container_or_prepare_commands(entry, forks):
    assert S.forks(entry) is forks


def test_a_run_whose_environment_changes_how_python_starts_gets_a_new_interpreter(node):
    """A ``PYTHON*`` variable the pre-started worker was not started with (here
    ``PYTHONPATH``) is fixed as an interpreter starts: that run's worker is a new one."""
    fifo = str(node.root / "pipe")
    os.mkfifo(fifo, 0o600)
    z = subprocess.Popen([sys.executable, node.rt, "zygote", fifo], env=node.env,
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        extra = node.root / "on-pythonpath"
        extra.mkdir()
        runs = {}
        for name, env in (("same", dict(node.env)),
                          ("changed", {**node.env, "PYTHONPATH": str(extra)})):
            d = _run_folder(node, name)
            env_file = d / ".chester" / "start.env"
            env_file.write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in env.items()))
            with open(fifo, "w") as f:
                f.write(json.dumps({"run_dir": str(d), "cwd": str(node.project),
                                    "env": str(env_file)}) + "\n")
            runs[name] = _seen(d)
        assert runs["same"]["forked"] and not runs["changed"]["forked"]
        assert str(extra) in runs["changed"]["path"]
        assert str(extra) not in runs["same"]["path"]
    finally:
        z.kill()
        z.wait(10)
