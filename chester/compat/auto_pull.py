"""The earlier chester's ``chester.auto_pull``: look at runs on remote hosts, stop what they
left running, and pull their folders home, over chester's own SSH transport.

The functions keep the seed's names, arguments, return values and meaning; a *job* is the
seed's dict ``{"host", "remote_log_dir", "local_log_dir", "exp_name"}`` (optionally
``"extra_pull_dirs": [{"remote", "local"}, ...]`` and ``"status"``)::

    from chester.auto_pull import get_remote_pid, check_process_running, check_job_status

    job = {"host": "gpu1", "remote_log_dir": "/home/me/proj/data/train/x/1_x",
           "local_log_dir": "data/train/x/1_x", "exp_name": "1_x"}
    check_job_status(job)        # 'running' | 'done' | 'done_orphans' | 'failed'
    pid = get_remote_pid(job["host"], job["remote_log_dir"])
    if pid and check_process_running(job["host"], pid): ...

The seed's table decides the state: ``.done`` and the process gone → ``done``; ``.done`` and
it (or what it started) still running → ``done_orphans``; no ``.done`` and gone → ``failed``;
no ``.done`` and running → ``running``; no process recorded yet → ``running`` (or ``done``).
The process is the one in the run folder's ``.chester_pid`` (a run started by hand the seed's
way: ``nohup bash run.sh ... & echo $! > .chester_pid``) or, for a run chester launched, its
worker as the worker recorded it (``.chester/status.json``: pid with its start time, so a
reused pid is never taken for the run, and its process group, so leftovers count).

``host`` is what the seed's manifests hold (``host_address[mode]``): an SSH destination
(``alias``, ``user@host``, ``user@host:port``) reached as ``ssh`` reaches it, or, when a
backend in ``chester.yaml`` has that ``host`` (or that name), with that backend's SSH options
(``ssh_config``, ``key_filename``, ``port``, ``user``, ``connect_timeout``). Every function
reuses one connection per host for the whole process. As in the seed, a host that cannot be
reached is reported in one ``[auto_pull]`` line and the answer is the careful one
(``check_process_running`` → True, the others False or None); a job dict without its keys is
a one-line ``ValueError``.

``python -m chester.auto_pull --manifest M.json [--poll-interval N] [--bare] [--once]`` runs
:func:`poll_and_pull` on a seed manifest (a JSON list of jobs, updated in place); without
``--manifest`` it waits for the runs of the store and pulls them as they end (``chester
monitor``, ``--exp-prefix PREFIX`` for one sweep).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chester.remote.ssh import RunResult, SSHTarget, Transport

__all__ = [
    "BARE_EXCLUDES", "check_done_marker", "check_job_status", "check_process_running",
    "get_remote_pid", "kill_process_tree", "load_manifest", "main", "poll_and_pull",
    "pull_extra_dirs", "pull_results", "save_manifest",
]

#: what ``bare`` leaves on the host, as the seed did: pickles, pictures, checkpoints
BARE_EXCLUDES = ("*.pkl", "*.png", "*.gif", "*.pth", "*.pt")
#: seconds a command on the host may take (the seed's ssh timeout)
COMMAND_TIMEOUT = 30.0
#: seconds between SIGTERM and SIGKILL in :func:`kill_process_tree`
KILL_GRACE_S = 5.0
_JOB_KEYS = ("host", "remote_log_dir")

_transports: dict[str, Transport] = {}
_lock = threading.Lock()


def _say(msg: str) -> None:
    print(f"[auto_pull] {msg}", flush=True)


# -- reaching a host ---------------------------------------------------------------------------
def _configured_target(host: str) -> tuple[SSHTarget, str] | None:
    """The SSH options of a backend in chester.yaml whose ``host`` (or name) is ``host``."""
    from chester.config import get_config
    from chester.plugin.errors import ChesterError
    from chester.remote.ssh import SSHTarget

    try:
        cfg = get_config()
        names = cfg.backend_names()
        raws = [(name, cfg.backend_raw(name)[1]) for name in names]
    except ChesterError:  # no usable chester.yaml here: the host as ssh knows it
        return None
    for wanted in ("host", "name"):
        for name, raw in raws:
            spec = raw.get("host")
            if not isinstance(spec, str) or not spec:
                continue
            if (spec if wanted == "host" else name) != host:
                continue
            kw = {k: raw[k] for k in ("user", "port", "key_filename", "ssh_config",
                                      "connect_timeout") if raw.get(k) is not None}
            try:
                return SSHTarget.parse(spec, **kw), name
            except (TypeError, ValueError):
                return None
    return None


def _transport(host: str) -> Transport:
    """One transport per host for the whole process (closed when it exits)."""
    from chester.remote.ssh import SSHTarget, Transport

    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"chester.auto_pull: host must be an SSH destination, got {host!r}")
    with _lock:
        tr = _transports.get(host)
        if tr is None:
            found = _configured_target(host)
            target, label = found if found is not None else (SSHTarget.parse(host), host)
            tr = Transport(target, backend=label)
            if not _transports:
                atexit.register(close)
            _transports[host] = tr
        return tr


def close() -> None:
    """Close the connections opened so far (done when the process exits)."""
    with _lock:
        trs = list(_transports.values())
        _transports.clear()
    for tr in trs:
        tr.close()


def _sh(host: str, script: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> RunResult:
    """``script`` run by ``sh`` on the host with ``args`` as ``$1``...: values never meet
    the remote shell's parser. A leading ``~/`` in ``$1`` is the remote home."""
    prelude = 'case $1 in "~/"*) d=$1; shift; set -- "$HOME/${d#??}" "$@";; esac\n'
    return _transport(host).run(["sh", "-c", prelude + script, "sh", *args],
                                timeout=timeout, check=False)


def _careful(what: str, default: Any, fn: Any) -> Any:
    """``fn()``, or ``default`` after one line when the host cannot be asked."""
    from chester.plugin.errors import ChesterError

    try:
        return fn()
    except (ChesterError, OSError) as exc:
        _say(f"{what}: {exc}")
        return default


# -- the seed's functions ----------------------------------------------------------------------
def check_done_marker(host: str, remote_log_dir: str) -> bool:
    """Is there a ``.done`` in the run folder on the host?"""
    return bool(_careful(
        f"cannot check {host}:{remote_log_dir}/.done", False,
        lambda: _sh(host, 'test -f "$1/.done"', remote_log_dir).exit_code == 0))


#: prints the folder's .done state, then the .chester_pid file or the worker's record
_READ_RUN = r'''
if [ -f "$1/.done" ]; then echo done; else echo notdone; fi
if [ -f "$1/.chester_pid" ]; then echo pidfile; cat "$1/.chester_pid"
elif [ -f "$1/.chester/status.json" ]; then echo status; cat "$1/.chester/status.json"
else echo none; fi
'''


def _read_run(host: str, remote_log_dir: str) -> tuple[bool, dict[str, Any] | None]:
    """(``.done`` present, the recorded process ``{"pid", "ticks", "pgid", "record"}`` or
    None) in one round trip; raises when the host cannot be asked."""
    from chester.plugin.errors import BackendError

    r = _sh(host, _READ_RUN, remote_log_dir)
    if r.exit_code != 0:
        raise BackendError(f"reading {host}:{remote_log_dir} failed: {r.stderr.strip()}")
    head, _, rest = r.stdout.partition("\n")
    kind, _, body = rest.partition("\n")
    done = head == "done"
    if kind == "pidfile":
        text = body.strip()
        if not text:
            return done, None
        try:
            return done, {"pid": int(text), "ticks": None, "pgid": None, "record": "file"}
        except ValueError:
            raise ValueError(f"invalid PID in {host}:{remote_log_dir}/.chester_pid: "
                             f"{text[:40]!r}") from None
    if kind == "status":
        try:
            st = json.loads(body)
            pid = int(st["pid"])
        except (ValueError, KeyError, TypeError):
            return done, None  # being written, or not a worker's record
        pgid = st.get("pgid")
        return done, {"pid": pid, "ticks": st.get("start_ticks"),
                      "pgid": pgid if pgid == pid else None, "record": "worker",
                      "ended": st.get("ended_at") is not None}
    return done, None


def get_remote_pid(host: str, remote_log_dir: str) -> int | None:
    """The PID recorded in the run folder: ``.chester_pid``, else the worker's record of a
    run chester launched; None when there is none (yet) or the host cannot be asked."""
    def read() -> int | None:
        try:
            proc = _read_run(host, remote_log_dir)[1]
        except ValueError as exc:
            _say(str(exc).capitalize())
            return None
        return proc["pid"] if proc else None

    return _careful(f"error reading PID from {host}:{remote_log_dir}", None, read)


#: "<pid alive> <group alive>": the pid (with its start time when known) and, when given, a
#: process group of that id with a live member (a pid is never reused while its group lives)
_ALIVE = r'''
pid=$1 ticks=$2 grp=$3 alive=0 grp_alive=0
st=$(ps -p "$pid" -o stat= 2>/dev/null)
case $st in ""|Z*|X*) ;; *) alive=1;; esac
reused=0
if [ "$alive" = 1 ] && [ -n "$ticks" ] && [ -r "/proc/$pid/stat" ]; then
  now=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f20)
  [ "$now" = "$ticks" ] || { alive=0; reused=1; }
fi
if [ -n "$grp" ] && [ "$reused" = 0 ] && ps -eo pgid=,stat= 2>/dev/null |
   awk -v g="$grp" '$1 == g && $2 !~ /^[ZX]/ {f = 1} END {exit !f}'; then grp_alive=1; fi
echo "$alive $grp_alive"
'''


def _alive(host: str, pid: int, ticks: Any = None, pgid: Any = None) -> tuple[bool, bool]:
    from chester.plugin.errors import BackendError

    r = _sh(host, _ALIVE, str(int(pid)), "" if ticks is None else str(int(ticks)),
            "" if pgid is None else str(int(pgid)))
    parts = r.stdout.split()
    if r.exit_code != 0 or len(parts) != 2:
        raise BackendError(f"checking process {pid} on {host} failed: "
                           f"{r.stderr.strip() or r.stdout.strip()}")
    return parts[0] == "1", parts[1] == "1"


def check_process_running(host: str, pid: int) -> bool:
    """Is process ``pid`` running on the host (a zombie is not)? True when the host cannot
    be asked: the careful answer, as in the seed."""
    return bool(_careful(f"cannot check process {pid} on {host}; assuming it runs", True,
                         lambda: _alive(host, pid)[0]))


#: TERM the process, its descendants and the process group it leads; KILL what is left
#: after the grace (polled, not slept through); prints "killed" when KILL was needed
_KILL = r'''
pid=$1 grace=$2
tree() {
  ps -eo pid=,ppid=,pgid= 2>/dev/null | awk -v root="$pid" '
    { parent[$1] = $2; group[$1] = $3 }
    END { keep[root] = 1; more = 1
          while (more) { more = 0
            for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; more = 1 } }
          for (p in group) if (group[p] == root) keep[p] = 1
          for (p in keep) if (p in parent) print p }'
}
live() { for p in $1; do
  case $(ps -p "$p" -o stat= 2>/dev/null) in ""|Z*|X*) ;; *) echo "$p";; esac; done; }
procs=$(tree)
[ -n "$procs" ] || exit 0
kill -TERM $procs 2>/dev/null
n=$(awk -v g="$grace" 'BEGIN {print int(g * 10)}')
while [ "$n" -gt 0 ] && [ -n "$(live "$procs")" ]; do sleep 0.1; n=$((n - 1)); done
left=$(live "$procs $(tree)")
if [ -n "$left" ]; then kill -KILL $left 2>/dev/null; echo killed; fi
exit 0
'''


def kill_process_tree(host: str, pid: int) -> None:
    """Stop process ``pid`` on the host and everything it started: SIGTERM to it, its
    descendants and the process group it leads, then SIGKILL to whatever is still there
    after 5 seconds (the seed's sequence; it reached direct children only)."""
    def kill() -> None:
        r = _sh(host, _KILL, str(int(pid)), str(KILL_GRACE_S),
                timeout=COMMAND_TIMEOUT + KILL_GRACE_S)
        if r.exit_code != 0:
            _say(f"Failed to stop PID {pid} on {host}: {r.stderr.strip()}")
            return
        _say(f"Sent SIGTERM to PID {pid} and children on {host}")
        if "killed" in r.stdout.split():
            _say(f"Sent SIGKILL to PID {pid} and children on {host}")

    _careful(f"Failed to send SIGTERM to PID {pid} on {host}", None, kill)


def _job_fields(job: Any) -> tuple[str, str]:
    if not isinstance(job, dict):
        raise ValueError(f"chester.auto_pull: a job is a dict with 'host' and 'remote_log_dir' "
                         f"(and 'local_log_dir', 'exp_name'), got {type(job).__name__}")
    missing = [k for k in _JOB_KEYS if not isinstance(job.get(k), str) or not job.get(k)]
    if missing:
        raise ValueError(f"chester.auto_pull: the job {job.get('exp_name', '')!r} has no "
                         f"{' or '.join(repr(k) for k in missing)} (a job is {{'host', "
                         "'remote_log_dir', 'local_log_dir', 'exp_name'}})")
    return job["host"], job["remote_log_dir"]


def check_job_status(job: dict) -> str:
    """The job's state from its ``.done`` and its process (see the module docstring):
    ``'running'``, ``'done'``, ``'done_orphans'`` or ``'failed'``."""
    host, remote_log_dir = _job_fields(job)

    def status() -> str:
        try:
            done, proc = _read_run(host, remote_log_dir)
        except ValueError as exc:
            _say(str(exc).capitalize())
            done, proc = check_done_marker(host, remote_log_dir), None
        if proc is None:  # nothing started yet (or nothing recorded): the seed's answer
            return "done" if done else "running"
        alive, group = _alive(host, proc["pid"], proc["ticks"], proc["pgid"])
        if done:
            return "done_orphans" if alive or group else "done"
        return "running" if alive else "failed"

    return str(_careful(f"cannot check {host}:{remote_log_dir}; counted as running",
                        "running", status))


def pull_results(host: str, remote_log_dir: str, local_log_dir: str, bare: bool = False) -> bool:
    """Copy the remote folder's files into ``local_log_dir`` (incremental, nothing deleted,
    a file changed here since it was pulled is kept); ``bare`` leaves the big files
    (:data:`BARE_EXCLUDES`). True when the copy succeeded."""
    from chester.remote.paths import PULL_EXCLUDES

    local = Path(os.path.expanduser(os.fspath(local_log_dir)))
    _say(f"Pulling: {host}:{remote_log_dir} -> {local}")

    def pull() -> bool:
        if _sh(host, 'test -d "$1"', remote_log_dir).exit_code != 0:
            _say(f"Failed to pull: {host}:{remote_log_dir} is not a folder on the host")
            return False
        excludes = [f"--exclude={p.split('/')[-1]}" for p in PULL_EXCLUDES]
        if bare:
            excludes += [f"--exclude={p}" for p in BARE_EXCLUDES]
        local.parent.mkdir(parents=True, exist_ok=True)
        _transport(host).rsync_pull(remote_log_dir, local, filter_args=excludes)
        return True

    return bool(_careful(f"Error pulling from {host}:{remote_log_dir}", False, pull))


def pull_extra_dirs(host: str, extra_pull_dirs: list, bare: bool = False) -> bool:
    """Pull each ``{"remote": ..., "local": ...}`` folder; True when all arrived."""
    if not extra_pull_dirs:
        return True
    all_success = True
    for entry in extra_pull_dirs:
        if not isinstance(entry, dict) or not entry.get("remote") or not entry.get("local"):
            raise ValueError("chester.auto_pull: extra_pull_dirs entries are dicts with "
                             f"'remote' and 'local' folders, got {entry!r}")
        _say(f"Pulling extra dir: {host}:{entry['remote']} -> {entry['local']}")
        if not pull_results(host, entry["remote"], entry["local"], bare=bare):
            _say(f"Warning: Failed to pull extra dir {entry['remote']}")
            all_success = False
    return all_success


def load_manifest(manifest_path: str) -> list:
    """The jobs of a seed manifest (a JSON list); ``[]`` when the file is not there."""
    if not os.path.exists(manifest_path):
        return []
    with open(manifest_path, encoding="utf-8") as f:
        jobs = json.load(f)
    if not isinstance(jobs, list):
        raise ValueError(f"chester.auto_pull: {manifest_path} is not a list of jobs")
    return jobs


def save_manifest(manifest_path: str, jobs: list) -> None:
    """Write the jobs back (atomically: a reader never sees half a file)."""
    folder = os.path.dirname(os.path.abspath(manifest_path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(manifest_path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(jobs, f, indent=2)
    os.replace(tmp, manifest_path)


def _settle(job: dict, status: str, bare: bool) -> None:
    """Act on one job that has ended and record what happened in it."""
    host, remote_log_dir = job["host"], job["remote_log_dir"]
    local_log_dir, exp_name = job["local_log_dir"], job.get("exp_name", "unknown")
    if status == "failed":
        _say(f"Job FAILED (process died): {exp_name} on {host}")
        pull_results(host, remote_log_dir, local_log_dir, bare=True)  # its logs, for debugging
        job["status"] = "failed"
        job["failed_at"] = datetime.now().isoformat()
        _say(f"Pulled logs from failed job: {local_log_dir}")
        return
    if status == "done_orphans":
        _say(f"Job completed with orphan processes: {exp_name} on {host}")
        pid = get_remote_pid(host, remote_log_dir)
        if pid:
            kill_process_tree(host, pid)
    else:
        _say(f"Job completed: {exp_name} on {host}")
    if pull_results(host, remote_log_dir, local_log_dir, bare=bare):
        pull_extra_dirs(host, job.get("extra_pull_dirs") or [], bare=bare)
        job["status"] = "pulled"
        job["pulled_at"] = datetime.now().isoformat()
        if status == "done_orphans":
            job["had_orphans"] = True
        _say(f"Successfully pulled: {local_log_dir}")
    else:
        job["status"] = "pull_failed"
        _say(f"Failed to pull: {exp_name}")


def poll_and_pull(manifest_path: str, poll_interval: int = 60, bare: bool = False,
                  once: bool = False) -> None:
    """The seed's poller: every ``poll_interval`` seconds, check each ``pending`` job of the
    manifest; pull finished ones (``pulled`` or ``pull_failed``), kill leftovers first
    (``had_orphans``), pull the logs of failed ones (``failed``), and write the manifest after
    each. Returns when no job is pending (printing each job's status), or after one pass
    with ``once``."""
    _say(f"Starting poller, manifest: {manifest_path}")
    _say(f"Poll interval: {poll_interval}s, bare mode: {bare}")
    while True:
        jobs = load_manifest(manifest_path)
        for job in jobs:
            _job_fields(job)
            if not job.get("local_log_dir"):
                raise ValueError(f"chester.auto_pull: the job {job.get('exp_name', '')!r} of "
                                 f"{manifest_path} has no 'local_log_dir'")
        if not jobs:
            if once:
                _say("No jobs in manifest, exiting")
                return
            time.sleep(poll_interval)
            continue
        pending = [j for j in jobs if j.get("status", "pending") == "pending"]
        if not pending:
            _say("All jobs resolved:")
            for j in jobs:
                print(f"  {j.get('exp_name', 'unknown')}: {j.get('status')}", flush=True)
            return
        _say(f"Checking {len(pending)} pending jobs...")
        for job in pending:
            status = check_job_status(job)
            if status != "running":
                _settle(job, status, bare)
                save_manifest(manifest_path, jobs)
        if once:
            return
        time.sleep(poll_interval)


# -- the command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chester.auto_pull",
                                description="Wait for runs to end and pull their results.")
    p.add_argument("--exp-prefix", default=None, help="only this sweep (of the job store)")
    p.add_argument("--manifest", default=None,
                   help="a seed manifest (JSON list of jobs) to poll instead of the store")
    p.add_argument("--poll-interval", type=float, default=None,
                   help="seconds between polls (a manifest: 60 by default)")
    p.add_argument("--bare", action="store_true", help="leave *.pkl, *.png, *.gif, *.pth, "
                   "*.pt on the hosts")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    a = p.parse_args(argv)
    from chester.plugin.errors import ChesterError

    if a.manifest is not None:
        if a.exp_prefix is not None:
            p.error("--manifest and --exp-prefix: give one (a seed manifest, or a sweep)")
        try:
            poll_and_pull(a.manifest, poll_interval=a.poll_interval if a.poll_interval
                          is not None else 60, bare=a.bare, once=a.once)
        except KeyboardInterrupt:
            _say("Interrupted by user")
        except (ValueError, OSError) as exc:
            print(f"chester: error: {exc}", file=sys.stderr)
            return 2
        finally:
            close()
        return 0
    from chester.launcher.monitor import monitor

    try:
        return monitor(a.exp_prefix, interval=a.poll_interval, bare=a.bare, once=a.once)
    except ChesterError as exc:
        print(f"chester: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

