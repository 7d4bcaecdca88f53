"""The autobot GPU scheduler: runs on the login host, places queued runs on free node GPUs.

Standard library and chester's runtime only: the backend uploads this file as it is (next
to chester's runtime, under ``<remote_dir>/.chester/autobot/``) and runs it with the login
host's Python, naming the runtime zip the launch shipped (``--runtime``, first on
``sys.path``), from which it imports the one rule from records to states
(:mod:`chester.target.states`)::

    python scheduler.py --runtime PYZ submit ROOT SWEEP_JSON  enqueue a sweep (idempotent),
                                                              start the loop
    python scheduler.py --runtime PYZ run ROOT                the loop (one per ROOT, a lock)
    python scheduler.py --runtime PYZ status ROOT  < DIRS     one JSON object: every state
    python scheduler.py --runtime PYZ cancel ROOT  < DIRS     remove queued runs, kill running
    python scheduler.py --runtime PYZ tail ROOT [-f] [--from BYTES] DIR STREAM
                                                              a run's output from that
                                                              byte on, as it is (followed
                                                              until the run ends)

Without ``--runtime`` chester is imported as the Python finds it (installed).

``ROOT`` (``<remote_dir>/.chester/autobot``) is on the filesystem the login host shares with
the nodes. It holds ``queue/`` (one file per waiting run, FIFO by name), ``running/`` (one
file per placed run), ``config.json`` (the last submit's node settings), ``state.json``
(the loop's last view of the nodes), ``scheduler.lock`` (held by the live loop: ``flock``,
not a process-name guess) and ``scheduler.log``. GPU leases live in ``LEASES/<node>/<gpu>``
(``O_EXCL`` files; by default ``ROOT/leases``), so no GPU is handed out twice, by one loop
or by two. Each placed run's folder gets ``.chester/autobot.json`` (node, GPUs, and the
loop's verdict when the run died or its node was lost) and ``.chester/autobot.started``
(a directory made on the node just before the worker starts, so a start is never repeated).

Each cycle the loop asks every node it needs, in parallel, over kept-open ssh sessions (one
``sh`` per node reading commands on its standard input, so the node's login shell starts once),
ONE command: ``nvidia-smi --query-gpu=...`` and ``--query-compute-apps=...`` plus which of
its runs' worker pids still live. A GPU is free when no lease holds it, no compute process
uses it (``free_needs_no_process``) and its memory used is at most ``free_memory_mib``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    Json = dict[str, Any]
    #: a node's ssh session: its process, its stderr file, the bytes read past the last answer
    Session = tuple[subprocess.Popen[bytes], IO[bytes], list[bytes]]

def _runtime_first(argv: list[str]) -> str | None:
    """Put the runtime zip named by ``--runtime PYZ`` (argv's first option) first on
    ``sys.path``, take the option out of ``argv`` and return the zip's path."""
    if len(argv) > 2 and argv[1] == "--runtime":
        path = os.path.abspath(argv[2])
        sys.path.insert(0, path)
        del argv[1:3]
        return path
    return None


#: the runtime zip chester is imported from (``--runtime``), passed on to the loop it starts;
#: set once, as the script starts
RUNTIME = _runtime_first(sys.argv) if __name__ == "__main__" else None

from chester.target import rundir, states  # noqa: E402  (the runtime first on sys.path)

FORMAT = 1
RUN_META = ".chester/run.json"
RUN_STATUS = ".chester/status.json"
RUN_CANCEL = ".chester/cancel"
PLACEMENT = ".chester/autobot.json"
STARTED = ".chester/autobot.started"  # plus "-<attempt>" after the first attempt


DONE = ".done"


def started_marker(run_dir: str, attempt: Any = 1) -> str:
    """The directory made on the node just before the worker of this attempt starts."""
    n = int(attempt or 1)
    return os.path.join(run_dir, STARTED if n == 1 else "%s-%d" % (STARTED, n))


DEFAULTS: dict[str, Any] = {
    "ssh_options": [],
    "nvidia_smi": "nvidia-smi",
    "max_gpus": {},
    "max_gpus_per_node": None,
    "free_memory_mib": 1024,
    "free_needs_no_process": True,
    "node_timeout": 10.0,
    "lost_after": 120.0,
    "start_timeout": 120.0,
    "cycle": 0.5,
    "idle_cycle": 2.0,
    "lease_dir": None,
}


# ------------------------------------------------------------------------------ small helpers
def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str, data: Any, mode: int = 0o644) -> None:
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, ".%s.%d.%d.tmp" % (os.path.basename(path), os.getpid(),
                                                  threading.get_ident()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def remove(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def log(root: str, msg: str) -> None:
    line = "%s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), msg)
    try:
        with open(os.path.join(root, "scheduler.log"), "a") as f:
            f.write(line)
    except OSError:
        pass


def load_config(root: str) -> Json:
    cfg = dict(DEFAULTS)
    cfg.update(read_json(os.path.join(root, "config.json")) or {})
    return cfg


def lease_root(root: str, cfg: Mapping[str, Any]) -> str:
    return cfg.get("lease_dir") or os.path.join(root, "leases")


def run_record(run_dir: str) -> tuple[Json, Json | None, Json | None]:
    """(meta, status, placement) of a run folder; status/placement only when they carry
    the run's token and are of its current attempt (the rule: :func:`states.current`)."""
    meta = read_json(os.path.join(run_dir, RUN_META)) or {}
    tok = meta.get("token")
    st = states.current(meta, read_json(os.path.join(run_dir, RUN_STATUS)))
    pl = read_json(os.path.join(run_dir, PLACEMENT))
    if pl is not None and tok and (pl.get("token") != tok or int(
            pl.get("attempt") or 1) < int(meta.get("attempt") or 1)):
        pl = None  # another run's, or an earlier attempt's
    return meta, dict(st) if st is not None else None, pl


def run_finished(run_dir: str, token: str | None = None) -> bool:
    """True once the run's current attempt will not use its GPUs any more (its end
    recorded, or a verdict given). ``.done`` alone is no end."""
    meta, st, pl = run_record(run_dir)
    if token and meta.get("token") not in (None, token):
        return True  # the folder was reused by another run
    if states.ended(st):
        return True
    return bool(pl and pl.get("verdict"))


#: how often the scheduler looks at the running runs' status records between cycles
END_LOOK_S = 0.05


def pause_until_an_end(run_dirs: Sequence[str], seconds: float, look_s: float = END_LOOK_S
                       ) -> list[str]:
    """Wait up to ``seconds``; return the runs of ``run_dirs`` that recorded their end as
    soon as there is one (empty after ``seconds``), so that their GPUs go to the next run
    now rather than at the next cycle. A forked worker's run (its start record says
    ``forked``) counts once its process is gone too (the pre-started worker wrote its exit
    record), so that what it held of the GPU is free. Each look is one ``stat`` of each
    run's status and exit records (inotify misses writes made on other nodes of a shared
    file system; NFS shows them once its attribute cache lets it, ``actimeo``); a record
    is read only when it changed, and a start record does not count."""
    def sig(d: str) -> tuple[tuple[int, int, int] | None, ...]:
        out: list[tuple[int, int, int] | None] = []
        for name in (RUN_STATUS, rundir.EXIT):
            try:
                st = os.stat(os.path.join(d, name))
            except OSError:
                out.append(None)
                continue
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def over(d: str, exit_sig: tuple[int, int, int] | None) -> bool:
        return run_finished(d) and (exit_sig is not None or not worker_forked(d))

    seen = {d: sig(d) for d in run_dirs}
    # an end recorded before this pause began (while the last one was handed over)
    ended = [d for d, now in seen.items() if now[0] is not None and over(d, now[1])]
    if ended:
        return ended
    deadline = time.time() + seconds
    while True:
        left = deadline - time.time()
        if left <= 0:
            return []
        time.sleep(min(look_s, left))
        ended = []
        for d, before in seen.items():
            now = sig(d)
            if now == before:
                continue
            seen[d] = now
            if over(d, now[1]):
                ended.append(d)
        if ended:
            return ended


def worker_forked(run_dir: str) -> bool:
    """Whether the run's worker was forked by the node's pre-started worker (which writes
    its exit record once its process is gone)."""
    return bool((read_json(os.path.join(run_dir, RUN_STATUS)) or {}).get("forked"))


def worker_gone(run_dir: str, token: str) -> bool:
    """Whether the exit record of the run's worker is there (its process is gone)."""
    ex = read_json(os.path.join(run_dir, rundir.EXIT)) or {}
    return ex.get("token") == token and "returncode" in ex


def node_list(nodes: Iterable[str]) -> str:
    """``autobot-1-1, autobot-1-6`` → ``autobot-1-1..1-6`` when they share a prefix."""
    nodes = list(nodes)
    if len(nodes) > 2:
        pre = os.path.commonprefix(nodes)
        cut = pre.find("-") + 1 if "-" in pre else len(pre)
        if cut:
            return "%s..%s" % (nodes[0], nodes[-1][cut:])
    return ",".join(nodes)


# ------------------------------------------------------------------------------ ssh to nodes
class Nodes:
    """One kept-open ssh session per node: a ``sh`` reading commands on its standard input.

    The node's login shell (and its start-up files) runs once per session, not once per
    command; each command's output ends with a marker line carrying its exit status. A
    session that does not answer in time, or whose connection closed, is dropped; the next
    command opens a new one."""

    def __init__(self, root: str, cfg: Json) -> None:
        self.root = root
        self.cfg = cfg
        self.opts = list(cfg.get("ssh_options") or [])
        self.sessions: dict[str, Session] = {}
        self.commands = 0  # commands sent to nodes (for the bench)
        self.opened = 0  # ssh sessions opened
        self.fresh: set[str] = set()  # sessions not used yet
        #: node -> {(python, runtime, env file, secrets file): the named pipe of that node
        #: session's pre-started worker (zygote_command)}; a new session starts new ones
        self.zygotes: dict[str, dict[tuple[str, str, str, str], str]] = {}

    def _open(self, node: str) -> Session:
        import tempfile

        err = tempfile.TemporaryFile()
        argv = ["ssh", *self.opts, "-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=2", "-o", "ConnectTimeout=%d" % max(
                    1, int(self.cfg["node_timeout"])), node, "exec sh"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                             preexec_fn=_die_with_parent)
        self.sessions[node] = (p, err, [b""])
        self.opened += 1
        return p, err, self.sessions[node][2]

    def drop(self, node: str) -> str:
        sess = self.sessions.pop(node, None)
        if sess is None:
            return ""
        p, err, _buf = sess
        if p.poll() is None:
            p.kill()
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            pass
        try:
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        err.close()
        return text

    def ensure(self, node: str) -> None:
        """Open the node's session unless it is open. Called from the loop's own thread:
        a session dies with the thread that opened it (PR_SET_PDEATHSIG)."""
        sess = self.sessions.get(node)
        if sess is None or sess[0].poll() is not None:
            self.drop(node)
            self._open(node)
            self.fresh.add(node)
            self.zygotes.pop(node, None)

    def zygote(self, node: str, e: Mapping[str, Any]) -> tuple[str, str]:
        """The named pipe of the node session's pre-started worker for entry ``e``'s Python,
        runtime, environment and secrets files, and the shell text that starts it (empty once
        started)."""
        import hashlib

        key = (str(e["python"]), str(e["runtime"]), str(e.get("env_file") or ""),
               str(e.get("secrets_file") or ""))
        known = self.zygotes.setdefault(node, {})
        if key in known:
            return known[key], ""
        ident = "\0".join((node, *key, str(os.getpid()), str(self.opened), str(time.time())))
        fifo = "/tmp/chester-zygote-%s" % hashlib.sha256(ident.encode()).hexdigest()[:20]
        known[key] = fifo
        log_file = os.path.join(self.root, "zygote-%s.log" % node.replace("/", "_"))
        return fifo, zygote_command(key[0], key[1], fifo, log_file, key[2] or None,
                                    key[3] or None, e.get("prepare_script"))

    def run(self, node: str, command: str, timeout: float | None = None
            ) -> tuple[int, str, str]:
        """(exit status, output); 255 when the node did not answer in time or the
        connection closed."""
        import select

        timeout = timeout or self.cfg["node_timeout"]
        if node not in self.sessions or self.sessions[node][0].poll() is not None:
            self.ensure(node)
        if node in self.fresh:
            self.fresh.discard(node)
            timeout = max(timeout, 3 * self.cfg["node_timeout"])  # connect + login shell
        p, err, buf = self.sessions[node]
        assert p.stdin is not None and p.stdout is not None  # both are pipes
        self.commands += 1
        nonce = "@@chester-%d-%d" % (os.getpid(), self.commands)
        text = "{ %s\n} </dev/null 2>&1; echo \"%s $?\"\n" % (command, nonce)
        try:
            p.stdin.write(text.encode())
            p.stdin.flush()
        except OSError:
            return 255, "", self.drop(node).strip() or "connection closed"
        end = time.monotonic() + timeout
        data = buf[0]
        fd = p.stdout.fileno()
        mark = ("\n" + nonce + " ").encode()
        while True:
            i = ("\n" + data.decode("latin-1")).find(mark.decode("latin-1"))
            if i >= 0:
                rest = data[i:]
                nl = rest.find(b"\n")
                if nl >= 0:
                    out = data[:i].decode("utf-8", "replace")
                    try:
                        code = int(rest[len(nonce) + 1:nl])
                    except ValueError:
                        code = 255
                    buf[0] = rest[nl + 1:]
                    return code, out, ""
            left = end - time.monotonic()
            if left <= 0:
                self.drop(node)
                return 255, data.decode("utf-8", "replace"), "timeout"
            ready, _w, _x = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                why = self.drop(node).strip()
                return 255, data.decode("utf-8", "replace"), why or "connection closed"
            data += chunk

    def run_many(self, commands: Mapping[str, str], timeout: float | None = None
                 ) -> dict[str, tuple[int, str, str]]:
        """{node: result} for {node: command}, all at once."""
        out: dict[str, tuple[int, str, str]] = {}
        for node in commands:
            self.ensure(node)

        def one(node: str, cmd: str) -> None:
            out[node] = self.run(node, cmd, timeout)

        threads = [threading.Thread(target=one, args=(n, c), daemon=True)
                   for n, c in commands.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def close(self) -> None:
        for node in list(self.sessions):
            self.drop(node)


def _die_with_parent() -> None:
    """The ssh sessions go when the loop goes, even when it is killed (Linux)."""
    os.setpgrp()
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def query_command(cfg: Mapping[str, Any], pids: Iterable[int]) -> str:
    smi = cfg["nvidia_smi"]
    lines = [
        "%s --query-gpu=index,uuid,memory.used,memory.total --format=csv,noheader,nounits"
        % smi,
        "echo @@apps",
        "%s --query-compute-apps=gpu_uuid,pid --format=csv,noheader" % smi,
        "echo @@alive",
    ]
    if pids:
        lines.append("for p in %s; do [ -d /proc/$p ] && echo $p; done"
                     % " ".join(str(int(p)) for p in pids))
    lines.append("echo @@end")
    return "; ".join(lines)


def parse_query(text: str) -> Json | None:
    """{gpus: [(index, uuid, used, total)], busy: {uuid}, alive: {pid}} or None."""
    if "@@end" not in text:
        return None
    part = "gpu"
    gpus: list[tuple[int, str, float, float]] = []
    busy: set[str] = set()
    alive: set[int] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("@@"):
            part = line[2:]
            continue
        cells = [c.strip() for c in line.split(",")]
        try:
            if part == "gpu" and len(cells) >= 4:
                gpus.append((int(cells[0]), cells[1], float(cells[2]), float(cells[3])))
            elif part == "apps" and len(cells) >= 2:
                busy.add(cells[0])
            elif part == "alive":
                alive.add(int(cells[0]))
        except ValueError:
            continue
    return {"gpus": gpus, "busy": busy, "alive": alive}


# ------------------------------------------------------------------------------ leases
def claim(lroot: str, node: str, gpu: int, token: str, run_dir: str) -> bool:
    d = os.path.join(lroot, node)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, str(gpu))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token, "run_dir": run_dir, "at": time.time(),
                   "pid": os.getpid()}, f)
    return True


def leases(lroot: str) -> dict[str, dict[int, Json]]:
    """{node: {gpu: lease}}"""
    out: dict[str, dict[int, Json]] = {}
    for node in listdir(lroot):
        for g in listdir(os.path.join(lroot, node)):
            if g.startswith("."):
                continue
            path = os.path.join(lroot, node, g)
            data = read_json(path)
            if data is None:  # being written: count it as held
                data = {"token": None, "run_dir": None, "at": time.time()}
            try:
                out.setdefault(node, {})[int(g)] = dict(data, path=path)
            except ValueError:
                continue
    return out


def release(lroot: str, node: str, gpus: Iterable[int], token: str) -> None:
    for g in gpus:
        path = os.path.join(lroot, node, str(g))
        data = read_json(path)
        if data is not None and data.get("token") == token:
            remove(path)


def reap_leases(lroot: str, now: float) -> None:
    """Drop leases whose run ended, or that no placement backs after a grace time."""
    for node, held in leases(lroot).items():
        for g, le in held.items():
            rd_, tok = le.get("run_dir"), le.get("token")
            if not rd_ or not tok:
                if now - le.get("at", now) > 60:
                    remove(le["path"])
                continue
            if run_finished(rd_, tok):
                remove(le["path"])
                continue
            _m, _st, pl = run_record(rd_)
            backed = pl and pl.get("node") == node and g in pl.get("gpus", ())
            if not backed and now - le.get("at", now) > 30:
                remove(le["path"])


# ------------------------------------------------------------------------------ the queue
def queue_entries(root: str) -> list[Json]:
    return list(iter_queue(root))


def iter_queue(root: str) -> Iterator[Json]:
    """The waiting runs in queue order, each file read as it is reached."""
    qd = os.path.join(root, "queue")
    for name in listdir(qd):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        data = read_json(os.path.join(qd, name))
        if data is None:
            continue
        data["path"] = os.path.join(qd, name)
        yield data


def running_entries(root: str) -> list[Json]:
    out = []
    d = os.path.join(root, "running")
    for name in listdir(d):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        data = read_json(os.path.join(d, name))
        if data is not None:
            data["path"] = os.path.join(d, name)
            out.append(data)
    return out


def submit(root: str, sweep_file: str) -> int:
    sweep = read_json(sweep_file)
    if sweep is None:
        print("chester-autobot: cannot read %s" % sweep_file, file=sys.stderr)
        return 2
    for d in ("queue", "running", "sweeps"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    cfg = dict(DEFAULTS)
    cfg.update(sweep.get("config") or {})
    write_json(os.path.join(root, "config.json"), cfg)
    queued = {e.get("token") for e in queue_entries(root)}
    placed = {e.get("token") for e in running_entries(root)}
    base = time.time_ns()
    n = skipped = 0
    for i, run in enumerate(sweep["runs"]):
        tok, run_dir = run["token"], run["run_dir"]
        meta, st, pl = run_record(run_dir)
        started = st is not None  # this attempt's worker started
        if tok in queued or tok in placed or started or pl is not None:
            skipped += 1
            continue
        entry = {k: v for k, v in sweep.items() if k not in ("runs", "config")}
        entry.update(run, submitted_at=time.time(), attempt=int(meta.get("attempt") or 1))
        write_json(os.path.join(root, "queue", "%020d-%06d-%s.json" % (base, i, tok)), entry)
        n += 1
    ensure_running(root)
    print("chester-autobot-queued %d skipped %d" % (n, skipped))
    return 0


def lock_free(root: str) -> bool:
    """True when no loop holds the lock."""
    path = os.path.join(root, "scheduler.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock
    return True


def ensure_running(root: str) -> bool:
    """Start the loop, detached, unless one holds the lock; only when it has work."""
    if not (listdir(os.path.join(root, "queue")) or listdir(os.path.join(root, "running"))):
        return False
    if not lock_free(root):
        return False
    with open(os.path.join(root, "scheduler.log"), "ab") as logf:
        runtime = ["--runtime", RUNTIME] if RUNTIME else []
        subprocess.Popen([sys.executable, os.path.abspath(__file__), *runtime, "run", root],
                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                         start_new_session=True, close_fds=True)
    return True


# ------------------------------------------------------------------------------ the loop
class Loop:
    """The scheduler loop of one ROOT: looks at the nodes, places waiting runs, watches the
    placed ones."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.cfg = load_config(root)
        self.nodes = Nodes(root, self.cfg)
        self.down_since: dict[str, float] = {}  # node -> first failed query (wall time)
        self.view: dict[str, Json] = {}
        self.cycles = 0
        self.seen_secrets: set[str] = set()  # secrets files of runs this loop saw waiting

    # -- one cycle -------------------------------------------------------------------------
    def cycle(self) -> tuple[bool, bool]:
        cfg = self.cfg = load_config(self.root)
        self.nodes.cfg = cfg
        self.nodes.opts = list(cfg.get("ssh_options") or [])
        lroot = lease_root(self.root, cfg)
        now = time.time()
        queue = queue_entries(self.root)
        running = running_entries(self.root)
        self.seen_secrets.update(e["secrets_file"] for e in queue if e.get("secrets_file"))
        want: list[str] = []
        for e in queue:
            for n in e.get("nodes") or ():
                if n not in want:
                    want.append(n)
        pids: dict[str, list[int]] = {}
        for r in running:
            if r["node"] not in want:
                want.append(r["node"])
            st = run_record(r["run_dir"])[1] or {}
            if st.get("token") == r["token"] and st.get("pid"):
                pids.setdefault(r["node"], []).append(st["pid"])
        answers = self.nodes.run_many({n: query_command(cfg, pids.get(n, ())) for n in want})
        view: dict[str, Json] = {}
        for n in want:
            code, out, err = answers.get(n, (255, "", ""))
            q = parse_query(out) if code == 0 else None
            if q is None:
                self.down_since.setdefault(n, now)
                view[n] = {"reachable": False, "since": self.down_since[n],
                           "error": (err.strip().splitlines() or ["no answer"])[-1][:200]}
            else:
                if n in self.down_since:
                    log(self.root, "node %s answers again" % n)
                self.down_since.pop(n, None)
                view[n] = dict(q, reachable=True)
        self._watch(running, view, lroot, now, pids)
        reap_leases(lroot, now)
        held = leases(lroot)
        free = {n: len(f) for n, f in self._free(view, held, cfg).items()}
        started = self._place(queue, view, held, lroot, cfg)
        self._write_state(view, leases(lroot) if started else held, free, started)
        self._drop_secrets(now)
        self.cycles += 1
        return bool(queue) and len(started) < len(queue), bool(running) or bool(started)

    def _watch(self, running: list[Json], view: Mapping[str, Json], lroot: str, now: float,
               asked: Mapping[str, list[int]]) -> None:
        """Release what ended; give a verdict to runs whose worker died or node is lost."""
        cfg = self.cfg
        for r in running:
            run_dir, tok, node = r["run_dir"], r["token"], r["node"]
            meta, st, pl = run_record(run_dir)
            verdict = None
            if meta.get("token") not in (None, tok) or run_finished(run_dir, tok):
                pass
            elif not view.get(node, {}).get("reachable", False):
                since = view.get(node, {}).get("since", now)
                if now - since >= cfg["lost_after"]:
                    verdict = {"state": "lost", "reason": "node %s unreachable for %d s"
                               % (node, now - since)}
                else:
                    continue
            elif st is None:
                if not os.path.isdir(started_marker(run_dir, r.get("attempt"))):
                    if r.get("state") == "starting" and now - r.get("placed_at", now) > 5:
                        self._start(node, [r])  # a loop killed mid-start: start it now
                    continue
                if now - r.get("placed_at", now) < cfg["start_timeout"]:
                    continue
                v = states.not_started(tail=_tail_text(run_dir),
                                       free_bytes=rundir.free_bytes(run_dir), run_dir=run_dir)
                verdict = {"state": v["state"], "reason": v["reason"]} if v else {
                    "state": "failed", "reason": "the worker did not start on %s within %d s: "
                    "%s" % (node, cfg["start_timeout"], _tail(run_dir))}
            elif st.get("ended_at") is None:
                pid = int(st.get("pid") or 0)
                if pid in view[node]["alive"] or pid not in asked.get(node, ()):
                    continue  # alive, or recorded after this cycle's question
                if run_finished(run_dir, tok):  # it ended between the query and now
                    pass
                else:  # the worker is gone without recording its end: the rule says why
                    v = states.died(tail=_tail_text(run_dir), host=node, run_dir=run_dir,
                                    free_bytes=rundir.free_bytes(run_dir))
                    verdict = {"state": v["state"], "reason": v["reason"]}
            if verdict is not None:
                pl = dict(pl or {"token": tok, "node": node, "gpus": r.get("gpus", [])})
                pl["verdict"] = dict(verdict, at=now)
                write_json(os.path.join(run_dir, PLACEMENT), pl)
                log(self.root, "%s: %s" % (run_dir, verdict["reason"]))
            release(lroot, node, r.get("gpus", ()), tok)
            remove(r["path"])

    def _free(self, view: Mapping[str, Json], held: Mapping[str, Mapping[int, Json]],
              cfg: Mapping[str, Any]) -> dict[str, list[int]]:
        return free_gpus(view, held, cfg)

    def hand_over(self, ended: Sequence[str]) -> bool:
        """Give the GPUs of runs that ended, and whose worker's process is gone, to the
        next waiting runs at once, without asking the nodes again; False unless every run
        of ``ended`` is such a run (a cycle then looks at the others now)."""
        running = {r["run_dir"]: r for r in running_entries(self.root)}
        lroot = lease_root(self.root, self.cfg)
        free: dict[str, list[int]] = {}
        for d in ended:
            r = running.get(d)
            if r is None or not run_finished(d, r["token"]) or not worker_gone(d, r["token"]):
                continue
            release(lroot, r["node"], r.get("gpus", ()), r["token"])
            remove(r["path"])
            free.setdefault(r["node"], []).extend(int(g) for g in r.get("gpus", ()))
        if not free:
            return False
        handed = sum(1 for d in ended if d in running and not os.path.exists(
            running[d]["path"]))
        for node, gpus in free.items():
            log(self.root, "%s GPU %s free: handed over" % (node, ",".join(map(str, gpus))))
        # only as far into the queue as the freed GPUs go (a cycle tidies the rest)
        self._place_on(iter_queue(self.root), free, lroot, until_full=True)
        return handed == len(ended)

    def _place(self, queue: list[Json], view: Mapping[str, Json],
               held: Mapping[str, Mapping[int, Json]], lroot: str,
               cfg: Mapping[str, Any]) -> list[Json]:
        return self._place_on(queue, self._free(view, held, cfg), lroot)

    def _place_on(self, queue: Iterable[Json], free: dict[str, list[int]], lroot: str,
                  until_full: bool = False) -> list[Json]:
        """Place waiting runs, in order, on the ``free`` GPUs of each node; start them. With
        ``until_full``, stop once no GPU is left (else every entry is looked at: started
        and cancelled ones leave the queue)."""
        placed: list[Json] = []
        per_node: dict[str, list[Json]] = {}
        taken = {r["token"] for r in running_entries(self.root)}
        for e in queue:
            if until_full and not any(free.values()):
                break
            tok, run_dir = e["token"], e["run_dir"]
            m, st, _pl = run_record(run_dir)
            if st is not None or run_finished(run_dir, tok) \
                    or os.path.exists(os.path.join(run_dir, RUN_CANCEL)):
                remove(e["path"])  # started (by a loop that died since), or cancelled
                continue
            if tok in taken:  # placed by a loop that died mid-start: it is started again
                continue
            k = int(e.get("gpus_per_run") or 1)
            for n in e.get("nodes") or ():
                avail = free.get(n, [])
                if len(avail) < k:
                    continue
                got: list[int] = []
                for g in list(avail):
                    if len(got) == k:
                        break
                    avail.remove(g)
                    if claim(lroot, n, g, tok, run_dir):
                        got.append(g)
                if len(got) < k:
                    release(lroot, n, got, tok)
                    continue
                att = int(e.get("attempt") or 1)
                rec = {"token": tok, "run_dir": run_dir, "node": n, "gpus": got,
                       "placed_at": time.time(), "state": "starting", "entry": e,
                       "attempt": att}
                write_json(os.path.join(run_dir, PLACEMENT),
                           {"token": tok, "node": n, "gpus": got, "attempt": att,
                            "placed_at": rec["placed_at"]})
                write_json(os.path.join(self.root, "running", "%s.json" % tok), rec)
                per_node.setdefault(n, []).append(rec)
                placed.append(rec)
                break
        if per_node:
            self._start_many(per_node)
        return placed

    def _start(self, node: str, recs: list[Json]) -> None:
        self._start_many({node: recs})

    def _start_many(self, per_node: Mapping[str, list[Json]]) -> None:
        """Start each run's worker on its node detached: one command per node, the nodes in
        parallel."""
        commands = {}
        for n, recs in per_node.items():
            lines = []
            for r in recs:
                fifo = None
                if forks(r["entry"]):
                    fifo, starting = self.nodes.zygote(n, r["entry"])
                    if starting:
                        lines.append(starting)
                lines.append(start_line(r["entry"], r["run_dir"], r["gpus"], fifo))
            commands[n] = "\n".join(lines)
        answers = self.nodes.run_many(commands, timeout=max(30.0, self.cfg["node_timeout"]))
        for node, recs in per_node.items():
            code, _out, err = answers.get(node, (255, "", "no answer"))
            for r in recs:
                self._started(node, r, code, err)

    def _started(self, node: str, r: Json, code: int, err: str) -> None:
        tok = r["token"]
        made = os.path.isdir(started_marker(r["run_dir"], r.get("attempt")))
        qpath = r["entry"].get("path")
        if made:
            rec = dict(r, state="started")
            rec.pop("path", None)
            write_json(os.path.join(self.root, "running", "%s.json" % tok), rec)
            if qpath:
                remove(qpath)
            log(self.root, "started %s on %s GPU %s" % (r["run_dir"], node,
                                                      ",".join(map(str, r["gpus"]))))
        else:  # not started: back to the queue (its entry is still there)
            log(self.root, "could not start %s on %s (exit %s): %s"
                % (r["run_dir"], node, code, err.strip()[-300:]))
            remove(os.path.join(self.root, "running", "%s.json" % tok))
            remove(os.path.join(r["run_dir"], PLACEMENT))
            release(lease_root(self.root, self.cfg), node, r["gpus"], tok)

    def _drop_secrets(self, now: float) -> None:
        """A sweep's secrets file goes once none of its runs waits any more (each run's
        shell read it before its worker started): at once when this loop saw its runs wait,
        else (a file uploaded just before its sweep is queued) after a minute."""
        wanted = {e.get("secrets_file") for e in queue_entries(self.root)}
        sdir = os.path.join(self.root, "sweeps")
        for name in listdir(sdir):
            path = os.path.join(sdir, name)
            if not name.endswith(".secrets") or path in wanted:
                continue
            try:
                if path in self.seen_secrets or now - os.stat(path).st_mtime > 60:
                    remove(path)
            except FileNotFoundError:
                pass

    def _write_state(self, view: Mapping[str, Json], held: Mapping[str, Mapping[int, Json]],
                     free: Mapping[str, int], started: list[Json]) -> None:
        """``state.json``: what the last cycle saw (status explains waiting runs with it)."""
        nodes: dict[str, Json] = {}
        for n, v in view.items():
            if v.get("reachable"):
                mine = held.get(n, {})
                nodes[n] = {"reachable": True, "total": len(v["gpus"]),
                            "leased": sorted(mine),
                            "other": sorted(g for g, u, _a, _b in v["gpus"]
                                            if u in v["busy"] and g not in mine),
                            # what was free at the look, less what this cycle handed out
                            "free": max(0, free.get(n, 0) - sum(
                                len(r.get("gpus", ())) for r in started if r.get("node") == n))}
            else:
                nodes[n] = {"reachable": False, "since": v["since"], "error": v["error"]}
        write_json(os.path.join(self.root, "state.json"), {
            "at": time.time(), "pid": os.getpid(), "nodes": nodes, "cycles": self.cycles,
            "ssh_commands": self.nodes.commands,
            "ssh_sessions": self.nodes.opened})


def free_gpus(view: Mapping[str, Json], held: Mapping[str, Mapping[int, Json]],
              cfg: Mapping[str, Any]) -> dict[str, list[int]]:
    """{node: GPU indices that may be handed out now}: no lease, no compute process
    (when asked), memory used under the threshold, within the node's cap."""
    free: dict[str, list[int]] = {}
    caps = cfg.get("max_gpus") or {}
    for n, v in view.items():
        if not v.get("reachable"):
            continue
        mine = held.get(n, {})
        f = sorted(g for g, uuid, used, _total in v["gpus"]
                   if g not in mine
                   and not (cfg["free_needs_no_process"] and uuid in v["busy"])
                   and (cfg["free_memory_mib"] is None or used <= cfg["free_memory_mib"]))
        cap = caps.get(n, cfg.get("max_gpus_per_node"))
        room = len(f) if cap is None else max(0, int(cap) - len(mine))
        free[n] = f[:room]
    return free


def capacity(root: str, asked: Mapping[str, Any]) -> Json:
    """What the lab could start now, for a pool's placement: each node's free GPUs (one
    query per node, as a cycle asks; the leases held), less the GPUs the runs waiting in
    this ROOT's queue will take. ``asked``: ``{"config": the backend's node settings,
    "nodes": [...]}`` (the loop's config.json may not exist yet)."""
    cfg = dict(DEFAULTS)
    cfg.update(read_json(os.path.join(root, "config.json")) or {})
    cfg.update(asked.get("config") or {})
    nodes = [str(n) for n in asked.get("nodes") or ()]
    conn = Nodes(root, cfg)
    try:
        answers = conn.run_many({n: query_command(cfg, ()) for n in nodes})
    finally:
        conn.close()
    view: dict[str, Json] = {}
    for n in nodes:
        code, out, _err = answers.get(n, (255, "", ""))
        q = parse_query(out) if code == 0 else None
        view[n] = dict(q, reachable=True) if q is not None else {"reachable": False}
    free = free_gpus(view, leases(lease_root(root, cfg)), cfg)
    return {"free": {n: len(f) for n, f in free.items()},
            "total": sum(len(v["gpus"]) for v in view.values() if v.get("reachable")),
            "queued_gpus": sum(int(e.get("gpus_per_run") or 1) for e in queue_entries(root)),
            "unreachable": [n for n, v in view.items() if not v.get("reachable")]}


def _tail(run_dir: str, n: int = 3) -> str:
    try:
        with open(os.path.join(run_dir, "stderr.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "no output"
    return " | ".join(text.strip().splitlines()[-n:]) or "no output"


def forks(e: Mapping[str, Any]) -> bool:
    """Whether entry ``e``'s runs may start as forks of a pre-started worker: nothing comes
    before the worker (a container), and the environment file, if any, only sets the
    environment (no prepare commands: those run before each run; a run whose prepare
    script is there when it starts is started as a new process, see :func:`start_line`)."""
    return not e.get("prefix") and (not e.get("env_file") or e.get("env_prepares") is False)


def zygote_command(python: str, runtime: str, fifo: str, log_file: str,
                   env_file: str | None = None, secrets_file: str | None = None,
                   prepare_script: str | None = None) -> str:
    """Shell text run in a node's session: make the named pipe and start the pre-started
    worker (:mod:`chester.target.zygote`) reading it, a child of the session's shell (it
    goes when the session goes), under the environment file sourced after the secrets as
    before a run (the environment before the file written beside the pipe, so that each
    run gets what the file changed over its own); nothing when
    ``CHESTER_WORKER_START=exec`` there."""
    q = shlex.quote
    base = fifo + ".base"
    env = ""
    if env_file:
        # (the prepare script the file may source is not there: see start_line)
        secrets = "set -a; . %s; set +a; " % q(secrets_file) if secrets_file else ""
        env = "%s(umask 077; env -0 >%s) && . %s && " % (secrets, q(base), q(env_file))
    args = " ".join(q(a) for a in (python, runtime, "zygote", fifo, *([base] if env_file
                                                                       else [])))
    absent = ' && [ ! -e %s ]' % q(prepare_script) if prepare_script else ""
    # `( ... exec cmd ) &`: the shell itself is the parent of the pre-started worker
    return ('if [ "${CHESTER_WORKER_START:-fork}" != exec ]%s; then rm -f %s; '
            "mkfifo -m 600 %s; fi; if [ -p %s ]; then ( %sexec %s ) </dev/null >/dev/null "
            "2>>%s & fi"
            % (absent, q(fifo), q(fifo), q(fifo), env, args, q(log_file)))


def start_line(e: Mapping[str, Any], run_dir: str, gpus: Sequence[int],
               fifo: str | None = None) -> str:
    """Shell text run on the node: make the start marker (once), then start the worker
    detached in its own session with CUDA_VISIBLE_DEVICES set: with ``fifo``, by asking
    the node's pre-started worker on that pipe (the shell's environment handed over as
    ``env -0`` wrote it), and as a new process when that cannot be done."""
    q = shlex.quote
    started = started_marker(run_dir, e.get("attempt"))
    argv = [*(e.get("prefix") or []), e["python"], e["runtime"], "worker", run_dir]
    inner = '. "$1" && shift && exec "$@"' if e.get("env_file") else 'shift; exec "$@"'
    env_file = e.get("env_file") or "-"
    secrets = ""
    if e.get("secrets_file"):
        secrets = "set -a; . %s; set +a; " % q(e["secrets_file"])
    ask = ""
    if fifo:
        env_out = os.path.join(run_dir, ".chester", "start.env")
        request = json.dumps({"run_dir": run_dir, "cwd": e["cwd"], "env": env_out})
        # a prepare script is sourced before each run: while there is one, a new process
        there = ("[ ! -e %s ] && " % q(e["prepare_script"])) if e.get("prepare_script") else ""
        ask = ("if %s[ -p %s ]; then (umask 077; env -0 >%s) && timeout 5 sh -c "
               "'printf \"%%s\\n\" \"$1\" >\"$2\"' sh %s %s && exit 0; rm -f %s %s %s; fi; "
               % (there, q(fifo), q(env_out), q(request), q(fifo), q(fifo), q(fifo + ".base"),
                  q(env_out)))
    return ("( mkdir %s 2>/dev/null || exit 0; cd %s || exit 1; %sCUDA_VISIBLE_DEVICES=%s; "
            "export CUDA_VISIBLE_DEVICES; %sexec setsid -f sh -c %s sh %s %s >>%s 2>>%s "
            "</dev/null )"
            % (q(started), q(e["cwd"]), secrets, q(",".join(map(str, gpus))), ask,
               q(inner), q(env_file), " ".join(q(a) for a in argv),
               q(os.path.join(run_dir, "stdout.log")), q(os.path.join(run_dir, "stderr.log"))))


def run_loop(root: str) -> int:
    os.makedirs(root, exist_ok=True)
    fd = os.open(os.path.join(root, "scheduler.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another loop has it
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    loop = Loop(root)
    log(root, "scheduler %d started" % os.getpid())
    try:
        while True:
            t0 = time.time()
            try:
                waiting, busy = loop.cycle()
            except Exception as exc:  # keep going: a bad file must not stop every sweep
                import traceback

                log(root, "cycle failed: %s\n%s" % (exc, traceback.format_exc()))
                waiting, busy = True, True
            if not waiting and not busy and not queue_entries(root) \
                    and not running_entries(root):
                # let go of the lock, then look once more: a submit that came in between
                # started a loop that found the lock taken and left
                fcntl.flock(fd, fcntl.LOCK_UN)
                if not (queue_entries(root) or running_entries(root)):
                    log(root, "scheduler %d: queue empty, exiting" % os.getpid())
                    return 0
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return 0
            pause = loop.cfg["cycle"] if waiting else loop.cfg["idle_cycle"]
            # a run that ends hands its GPUs over now, not at the next cycle: at once when its
            # worker's process is known gone, else by starting the next cycle now
            deadline = t0 + pause
            while True:
                ended = pause_until_an_end([r["run_dir"] for r in running_entries(root)],
                                           max(0.0, deadline - time.time()))
                if not ended or not loop.hand_over(ended):
                    break
                if not queue_entries(root) and not running_entries(root):
                    break  # all done: the cycle lets the loop go
    finally:
        loop.nodes.close()


# ------------------------------------------------------------------------------ status
def status(root: str, run_dirs: Sequence[str]) -> dict[str, Json]:
    cfg = load_config(root)
    queue = queue_entries(root)
    order = {e["run_dir"]: i for i, e in enumerate(queue)}
    state = read_json(os.path.join(root, "state.json")) or {}
    nodes_state = state.get("nodes") or {}
    now = time.time()
    if queue or running_entries(root):
        ensure_running(root)
    out = {}
    for d in run_dirs:
        out[d] = probe(d, order, queue, nodes_state, cfg, now)
    return out


def probe(d: str, order: Mapping[str, int], queue: Sequence[Json],
          nodes_state: Mapping[str, Json], cfg: Mapping[str, Any], now: float) -> Json:
    """One run's state: the records decide by the one rule (:mod:`chester.target.states`);
    where they do not, the loop's placement and verdict, the nodes' last view and the
    queue. A cancelled run says who cancelled it and when (its cancel marker)."""
    res = _probe(d, order, queue, nodes_state, cfg, now)
    if res["state"] == states.CANCELLED and os.path.exists(os.path.join(d, RUN_CANCEL)):
        res["reason"] = rundir.cancel_reason(rundir.read_cancel(d), started=res.get(
            "reason") != states.CANCELLED_BEFORE)
    return res


def _probe(d: str, order: Mapping[str, int], queue: Sequence[Json],
           nodes_state: Mapping[str, Json], cfg: Mapping[str, Any], now: float) -> Json:
    meta, st, pl = run_record(d)
    res: Json = {"state": "queued", "reason": None, "exit_code": None,
                 "attempt": meta.get("attempt")}
    if not meta:
        return dict(res, **states.missing("the login host"))
    where = None
    if pl:
        where = "%s GPU %s" % (pl.get("node"), ",".join(str(g) for g in pl.get("gpus", ())))
        res["host"] = pl.get("node")
        res["gpus"] = pl.get("gpus")
    cancel = os.path.exists(os.path.join(d, RUN_CANCEL))
    done = os.path.exists(os.path.join(d, DONE))
    verdict = (pl or {}).get("verdict")
    if verdict and cancel and verdict["state"] not in states.OWN_CAUSE:
        # the loop's verdict on a run that was cancelled: the cancel stopped it
        verdict = states.cancelled(started=st is not None)
    if st is not None:
        res.update(attempt=st.get("attempt"), started_at=st.get("started_at"),
                   ended_at=st.get("ended_at"), pid=st.get("pid"))
        res["host"] = res.get("host") or st.get("host")
        if states.ended(st):
            v = states.from_end(st, done=done, cancel=cancel)
            v.pop("stopped", None)
            if v["state"] != states.SUCCEEDED:
                v["stderr_tail"] = _tail_text(d)
            return dict(res, **v)
        if verdict:
            return dict(res, state=verdict["state"], reason=verdict["reason"],
                        stderr_tail=_tail_text(d))
        node = (nodes_state.get(pl.get("node") or "") if pl else None) or {}
        if node.get("reachable") is False and now - node.get("since", now) >= cfg["lost_after"]:
            return dict(res, state="lost", reason="node %s unreachable for %d s"
                        % ((pl or {}).get("node"), now - node["since"]))
        return dict(res, state="running", host=where or res.get("host"))
    if verdict:
        return dict(res, state=verdict["state"], reason=verdict["reason"],
                    stderr_tail=_tail_text(d))
    if cancel:
        return dict(res, **states.cancelled(started=False))
    if pl:
        return dict(res, state="running", host=where, reason="starting on %s" % where)
    if d in order:
        e = queue[order[d]]
        allowed = list(e.get("nodes") or ())
        total = free = 0
        down = []
        for n in allowed:
            ns = nodes_state.get(n)
            if not ns:
                continue
            if ns.get("reachable"):
                total += ns.get("total", 0)
                free += ns.get("free", 0)
            else:
                down.append(n)
        why = "no free GPU on %s: %d of %d free" % (node_list(allowed), free, total)
        if int(e.get("gpus_per_run") or 1) > 1:
            why += " (needs %d on one node)" % int(e["gpus_per_run"])
        if down:
            why += "; unreachable: %s" % ",".join(down)
        if not nodes_state:
            why = "waiting for the scheduler's first look at %s" % node_list(allowed)
        return dict(res, state="queued", queue_position=order[d] + 1,
                    pending_reason="queue position %d of %d; %s" % (order[d] + 1, len(queue),
                                                                     why))
    if os.path.isdir(started_marker(d, meta.get("attempt"))):
        return dict(res, state="running", reason="starting")
    return dict(res, state="lost", reason="not in the autobot queue and never started")


def _tail_text(d: str, lines: int = 20) -> str | None:
    try:
        with open(os.path.join(d, "stderr.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-lines:]) or None


# ------------------------------------------------------------------------------ cancel
#: TERM the run's process group, KILL what is left after the grace time (POSIX ``kill``:
#: a negative pid is a group; dash takes no ``--``)
KILL = ("kill -TERM -{g} 2>/dev/null || exit 0; i=0; while [ $i -lt {n} ]; do "
        "kill -0 -{g} 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done; "
        "kill -KILL -{g} 2>/dev/null; exit 0")


def cancel(root: str, run_dirs: Sequence[str], grace_s: float = 5.0) -> dict[str, bool]:
    cfg = load_config(root)
    out = {}
    targets = {}
    queue = {e["run_dir"]: e for e in queue_entries(root)}
    for d in run_dirs:
        meta, st, pl = run_record(d)
        if not meta:
            out[d] = False
            continue
        before = probe(d, {}, [], {}, cfg, time.time())
        if before["state"] not in (states.QUEUED, states.RUNNING) and d not in queue:
            out[d] = False
            continue
        rundir.write_cancel(d)
        if d in queue:
            remove(queue[d]["path"])
        out[d] = True
        if pl or os.path.isdir(started_marker(d, meta.get("attempt"))):
            targets[d] = pl
    if targets:
        # a run placed a moment ago may not have recorded its process group yet
        deadline = time.time() + 10
        pending = dict(targets)
        nodes = Nodes(root, cfg)
        try:
            while pending:
                cmds: dict[str, list[str]] = {}
                for d, pl in list(pending.items()):
                    meta, st, pl2 = run_record(d)
                    pl = pl2 or pl
                    if st is not None and st.get("ended_at") is not None:
                        pending.pop(d)
                        continue
                    if st is not None and st.get("pgid") and pl:
                        cmds.setdefault(pl["node"], []).append(
                            KILL.format(g=int(st["pgid"]), n=int(grace_s * 10)))
                        pending.pop(d)
                if cmds:
                    nodes.run_many({n: "( %s ) & " % " ) & ( ".join(c) + "wait"
                                    for n, c in cmds.items()}, timeout=grace_s + 20)
                if not pending or time.time() > deadline:
                    break
                time.sleep(0.2)
        finally:
            nodes.close()
    return out


# ------------------------------------------------------------------------------ tail
def tail(root: str, run_dir: str, stream: str, follow: bool, start: int = 0) -> int:
    """The run's log from byte ``start`` on stdout, its bytes as they are (the launcher
    counts them): the target tool's follower, ending once the run is neither running nor
    in this scheduler's queue (or the follower over SSH was stopped)."""
    from pathlib import Path

    from chester.target import tool

    cfg = load_config(root)

    def active() -> bool:
        if probe(run_dir, {}, [], {}, cfg, time.time())["state"] == "running":
            return True
        return run_dir in {e["run_dir"] for e in queue_entries(root)}

    tool.follow(Path(run_dir), stream, sys.stdout, follow=follow, start=start, active=active)
    return 0


def _stdin_dirs() -> list[str]:
    return [line for line in sys.stdin.read().splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ("submit", "run", "status", "cancel", "tail",
                                        "capacity"):
        print("usage: python scheduler.py [--runtime PYZ] "
              "submit|run|status|cancel|tail|capacity ROOT ...", file=sys.stderr)
        return 2
    cmd, root = argv[0], argv[1]
    if cmd == "capacity":
        print(json.dumps(capacity(root, json.loads(sys.stdin.read() or "{}"))))
        return 0
    if cmd == "submit":
        return submit(root, argv[2])
    if cmd == "run":
        return run_loop(root)
    if cmd == "status":
        print(json.dumps(status(root, _stdin_dirs())))
        return 0
    if cmd == "cancel":
        print(json.dumps(cancel(root, _stdin_dirs())))
        return 0
    rest, f, start = argv[2:], False, 0
    while rest and rest[0] in ("-f", "--from"):
        if rest[0] == "-f":
            f, rest = True, rest[1:]
        else:
            start, rest = int(rest[1]), rest[2:]
    return tail(root, rest[0], rest[1] if len(rest) > 1 else "stdout", f, start)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            sys.exit(0)
        raise
