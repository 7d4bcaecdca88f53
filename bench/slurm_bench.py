"""SLURM backend bench: a 1,000-run sweep on a real single-node SLURM (MaxArraySize 1001).

    .venv/bin/python bench/slurm_bench.py [--runs 1000]

Measures, in one run on the same slurmctld:
  * ``chester launch -b slurm -- python -c pass i=0,1,...`` from a shell against submitit's
    whole ``map_array`` script and against its floor, a bare ``sbatch --array=0-N --wrap
    true`` from the same shell (with ``python -c pass`` beside it): interpreter start to
    submitted, alternately, ``--rounds`` times, every launch in one project as a researcher launches sweep after sweep (its
    first launch there, which also places the runtime on the cluster, is reported apart;
    ``--cli-only`` stops after this), with the CPU time (user + system) the launch's
    processes took;
  * chester, submitting through a loopback sshd acting as the login host: sbatch calls
    (distinct job ids), launch wall time (the sweep spec written + one submit), and the time
    of the submit hook alone;
  * chester submitting directly (no SSH) against submitit's ``map_array`` of the same number
    of trivial calls (submitit lives only in a throw-away venv made here with uv, never in
    the project's dependencies). Both are measured the same way, alternately, ``--rounds``
    times: a fresh Python process imports the library and sets up its executor (submitit's
    ``SlurmExecutor``; chester's backend discovery and ``chester.yaml``), then times the one
    call that writes what the runs need and submits them (``chester.launch`` of a new sweep
    in one project, after its first launch there; ``map_array``). The wall time of each
    whole script (interpreter start to exit) is reported too;
  * scheduler queries per status poll, counted on the server side: slurmdbd's
    DBD_GET_JOBS_COND (sacct) and slurmctld's REQUEST_JOB_INFO (squeue) RPC counters;
  * end-to-end time from launch to every result pulled home, and the drain time of a bare
    ``sbatch --array=0-N --wrap true`` for scale (``--e2e-only``: only these, with the
    backend's default poll settings, the wait with and without its end watcher, and the
    scheduler queries each wait made; with ``--baseline DIR``, this code's sweep alternates
    with the same sweep launched by an earlier checkout in DIR, both with the watcher).

Both libraries run from venvs made here the way users install them (bytecode compiled):
submitit's from PyPI, chester's from the repository's wheels (``chester-backend-slurm``
alone), so the development venv's size and uncompiled packages count for neither.

The SLURM and the login host are started for the bench and stopped at the end, with the
tests' own machinery: chester_testinfra's SlurmFactory (its own daemons on free loopback ports,
found through SLURM_CONF) and chester_testinfra.sshd's loopback sshd. Run it as root from the
repo root (it needs the packages of .ci/install.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trivial(variant, log_dir, exp_name):
    """The benched function: trivial work, one small result file."""
    with open(os.path.join(log_dir, "result.txt"), "w") as f:
        f.write(str(variant["i"] * 2))


def _sh(*argv: str, **kw) -> str:
    p = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if p.returncode:
        raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p.stdout


def _rpc_count(text: str, name: str) -> int:
    m = re.search(rf"{name}\s+\(\s*\d+\)\s+count:(\d+)", text)
    return int(m.group(1)) if m else 0


def scheduler_counters() -> dict[str, int]:
    return {"sacct (DBD_GET_JOBS_COND)": _rpc_count(_sh("sacctmgr", "show", "stats"),
                                                    "DBD_GET_JOBS_COND"),
            "squeue (REQUEST_JOB_INFO)": _rpc_count(_sh("sdiag"), "REQUEST_JOB_INFO")}


def wait_queue_empty(job_id: str, timeout: float = 1800) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                             text=True).stdout
        if not any(s in out for s in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")):
            return
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still in the queue")


def start_cluster(factory):
    """A SLURM with MaxArraySize 1001 and accounting from chester_testinfra's SlurmFactory; its
    ``SLURM_CONF`` goes into this process's environment (for sbatch/squeue/sdiag here).
    Returns the cluster's client environment."""
    cluster = factory.get(max_array_size=1001, accounting=True)
    os.environ.update(cluster.env)
    return dict(cluster.env)


UV = shutil.which("uv") or str(ROOT / ".venv" / "bin" / "uv")


def _venv(venv: Path, *install: str) -> Path:
    """A fresh venv with ``install`` (``uv pip install`` arguments), bytecode compiled, as
    pip does by default; returns its Python."""
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([UV, "pip", "install", "-q", "--compile-bytecode", "--python",
                    str(venv / "bin" / "python"), *install], check=True)
    return venv / "bin" / "python"


def submitit_venv(d: Path) -> Path:
    return _venv(d / "submitit-venv", "submitit")


def chester_venv(d: Path) -> Path:
    """chester as a user installs it: the wheels of chester-ml, chester-backend-local and
    chester-backend-slurm built here, ``chester-backend-slurm`` installed alone into a fresh
    venv (made as submitit's is), so neither side pays for compiling its imports or for
    scanning a development environment's packages."""
    wheels = d / "wheels"
    for src in (ROOT, ROOT / "chester_backends" / "local", ROOT / "chester_backends" / "slurm"):
        subprocess.run([UV, "build", "--wheel", "-q", "-o", str(wheels), str(src)], check=True)
    return _venv(d / "chester-venv", "--find-links", str(wheels), "chester-backend-slurm")


SUBMITIT_SCRIPT = r"""
import json, sys, time
import submitit

def trivial(i):
    return i * 2

n = int(sys.argv[2])
ex = submitit.SlurmExecutor(folder=sys.argv[1])
ex.update_parameters(time=10, partition="debug", array_parallelism=n)
t = time.perf_counter()
jobs = ex.map_array(trivial, range(n))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "job_ids": sorted({j.job_id.split("_")[0] for j in jobs})}))
"""


CHESTER_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from chester.config import load_config
from chester.launcher.launching import launch
from chester.plugin.manager import get_plugin_manager

def trivial(variant, log_dir, exp_name):
    return variant["i"] * 2

n = int(sys.argv[2])
cfg = load_config(Path(sys.argv[1]))
get_plugin_manager()  # finding the backends: what SlurmExecutor(...) is to submitit
t = time.perf_counter()
sweep = launch(trivial, [{"i": i} for i in range(n)], backend="slurm", exp_prefix="bench",
               config=cfg, resume=False)  # the same sweep again each round: a new one
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt,
                  "job_ids": sorted({r.handle.remote_id.split("_")[0] for r in sweep.runs})}))
"""


def _submit_in_process(argv: list[str]) -> dict:
    """Run one submitting script; cancel what it submitted and wait for the queue to drain."""
    t = time.perf_counter()
    out = _sh(*argv, cwd=str(ROOT))
    res = json.loads(out.strip().splitlines()[-1])
    res["process"] = time.perf_counter() - t  # the whole script: start, imports, submit
    for jid in res["job_ids"]:
        subprocess.run(["scancel", jid], check=False)
    for jid in res["job_ids"]:
        wait_queue_empty(jid)
    return res


def bench_submitit(py: Path, d: Path, n: int, k: int) -> dict:
    script = d / "submitit_bench.py"
    script.write_text(SUBMITIT_SCRIPT)
    return _submit_in_process([str(py), str(script), str(d / f"submitit-logs-{k}"), str(n)])


def _round_project(d: Path, name: str, slurm_env: dict) -> Path:
    """The one project every round launches in, as a researcher launches sweep after sweep
    from one (made on first use): its first launch also places the runtime on the cluster
    and asks the jobs' Python whether it can run it; later ones find both done."""
    if not (d / name).exists():
        make_project(d, name, {"scheduler_env": slurm_env})
    return d / name


def bench_chester_direct(py: Path, d: Path, n: int, slurm_env: dict) -> dict:
    script = d / "chester_bench.py"
    script.write_text(CHESTER_SCRIPT)
    project = _round_project(d, "direct-project", slurm_env)
    return _submit_in_process([str(py), str(script), str(project / "chester.yaml"), str(n)])


def bench_chester_cli(py: Path, d: Path, n: int, slurm_env: dict) -> dict:
    """``chester launch -b slurm -- python -c pass i=0,1,...`` from a shell: the whole
    process, interpreter start to submitted (job ids read from squeue afterwards), in the
    rounds' one project."""
    project = _round_project(d, "cli-project", slurm_env)
    exe = str(py.parent / "chester")
    argv = [exe, "launch", "--new", "-b", "slurm", "-p", "bench", "--", "python", "-c", "pass",
            "i=" + ",".join(str(i) for i in range(n))]
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    cpu = _children_cpu()
    t = time.perf_counter()
    out = _sh(*argv, cwd=str(project), env=env)
    dt = time.perf_counter() - t
    cpu = _children_cpu() - cpu
    assert f"{n} runs on backend 'slurm'" in out, out
    jobs = sorted({line.split("_")[0] for line in
                   _sh("squeue", "-h", "-o", "%i").split() if line.strip()})
    for jid in jobs:
        subprocess.run(["scancel", jid], check=False)
    for jid in jobs:
        wait_queue_empty(jid)
    return {"process": dt, "cpu": cpu, "job_ids": jobs}


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended children and theirs: what a
    whole process cost, less moved by other work on the machine than its wall time."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_bare_sbatch(n: int) -> float:
    """The floor of a launch from a shell: ``sbatch --array=0-N --wrap true``, the whole
    process, then cancelled and drained as the others are."""
    t = time.perf_counter()
    out = subprocess.run(["sbatch", "--parsable", f"--array=0-{n - 1}", "-o", "/dev/null",
                          "--wrap", "true"], check=True, capture_output=True, text=True).stdout
    dt = time.perf_counter() - t
    jid = out.strip().split(";")[0]
    subprocess.run(["scancel", jid], check=False)
    wait_queue_empty(jid)
    return dt


def make_project(d: Path, name: str, options: dict) -> object:
    import yaml

    from chester.config import load_config

    project = d / name
    project.mkdir(parents=True)
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump(
        {"backends": {"slurm": {"type": "slurm", "python": sys.executable, **options}}}))
    return load_config(project / "chester.yaml")


class SubmitTimer:
    """An observer plugin timing the submit hook and counting status hook calls."""

    def __init__(self) -> None:
        self.submit_s = 0.0
        self.status_calls = 0

    def _wrap(self):
        from chester.plugin.manager import hookimpl

        timer = self

        class Obs:
            @hookimpl(wrapper=True)
            def chester_submit(self):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                try:
                    return (yield)
                finally:
                    timer.submit_s += time.perf_counter() - t

            @hookimpl(wrapper=True)
            def chester_status(self):  # type: ignore[no-untyped-def]
                timer.status_calls += 1
                return (yield)

        return Obs()


def dispatcher_with(timer: SubmitTimer):
    from chester.plugin.dispatch import Dispatcher
    from chester.plugin.manager import build_plugin_manager

    mgr = build_plugin_manager()
    mgr.register(timer._wrap(), name="bench-timer")
    return Dispatcher(manager=mgr)


def bench_e2e(work: Path, name: str, n: int, options: dict, *, watch: bool = True) -> dict:
    """Launch ``n`` trivial runs through the login host and wait for every result pulled
    home: the seconds from launch to the end of the wait, the status hook calls and the
    scheduler queries (server-side counters) during the wait. ``watch=False``: the wait
    without the end watcher (it sees ends at its polls only, as before the watcher)."""
    from chester_backend_slurm.plugin import SlurmBackend

    from chester.launcher.launching import launch
    from chester.plugin.records import State

    cfg = make_project(work, name, options)
    timer = SubmitTimer()
    disp = dispatcher_with(timer)
    saved = SlurmBackend.watch_ends
    if not watch:
        SlurmBackend.watch_ends = lambda self, *a, **kw: None  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        sweep = launch(trivial, [{"i": i} for i in range(n)], backend="slurm",
                       exp_prefix="bench", config=cfg, dispatcher=disp)
        t_launch = time.perf_counter() - t0
        before = scheduler_counters()
        calls0 = timer.status_calls
        states = sweep.wait(timeout=3600, pull=True, progress=False)
        t_e2e = time.perf_counter() - t0
        returned_at = time.time()
        after = scheduler_counters()
    finally:
        SlurmBackend.watch_ends = saved  # type: ignore[method-assign]
    return {"launch s": round(t_launch, 3), "end-to-end s": round(t_e2e, 2),
            "succeeded": sum(1 for s in states.values() if s == State.SUCCEEDED),
            "pulled": sum(1 for r in sweep.runs if (r.log_dir / "result.txt").exists()),
            "status hook calls during wait": timer.status_calls - calls0,
            # the last run's own end record to the wait's return (its pull included)
            "last end record to wait returned s": round(
                returned_at - max(sweep.store.run(r.id).ended_at or 0 for r in sweep.runs), 2),
            **{f"during wait: {k}": after[k] - before[k] for k in before},
            "jobs": len({r.handle.remote_id.split("_")[0] for r in sweep.runs})}


def _e2e_in(src: str, work: Path, name: str, n: int, options: dict) -> dict:
    """:func:`bench_e2e` (with the end watcher) in a new process that imports chester from
    ``src`` (an earlier checkout: its root and each backend's ``src``), on the same cluster
    and login host."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *(str(p) for p in sorted(Path(src).glob("chester_backends/*/src")))])}
    arg = json.dumps({"work": str(work), "name": name, "n": n, "options": options})
    out = _sh(sys.executable, __file__, "--e2e-child", arg, env=env, cwd=str(ROOT))
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating submitit / chester direct submissions to compare")
    ap.add_argument("--cli-only", action="store_true",
                    help="only compare `chester launch` from a shell with submitit's script")
    ap.add_argument("--e2e-only", action="store_true",
                    help="only the end-to-end rows, with the backend's default poll settings: "
                    "the wait with the end watcher, without it, and a bare array's drain")
    ap.add_argument("--baseline", default=None, metavar="DIR",
                    help="with --e2e-only: alternate this code's sweep (with the end watcher) "
                    "with the same sweep launched by an earlier checkout in DIR (e.g. from "
                    "`git archive`), instead of the sweep without the end watcher")
    ap.add_argument("--e2e-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.e2e_child:  # one sweep of --baseline's, in a process importing its chester
        sys.path.insert(0, str(ROOT / "testinfra" / "src"))
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        a = json.loads(args.e2e_child)
        print(json.dumps(bench_e2e(Path(a["work"]), a["name"], a["n"], a["options"])))
        return
    n = args.runs
    # both sides run from compiled bytecode, as after a pip install: submitit's venv is
    # installed with --compile-bytecode, and chester's modules get their .pyc files written
    # (the first round writes whatever is missing)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.path.insert(0, str(ROOT / "testinfra" / "src"))  # chester_testinfra, if not installed
    import cloudpickle
    from chester_testinfra import InfraUnavailable
    from chester_testinfra.slurm import SlurmFactory
    from chester_testinfra.sshd import start_loopback_host

    from chester.launcher.launching import launch
    from chester.plugin.records import State

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    work = Path(tempfile.mkdtemp(prefix="chester-slurm-bench-"))
    factory = SlurmFactory(work / "slurm")
    login = None
    figures: dict[str, object] = {"runs": n}
    try:
        try:
            slurm_env = start_cluster(factory)
            login = start_loopback_host(work / "login")
        except InfraUnavailable as e:
            sys.exit(f"cannot run the bench: {e}")
        size = int(re.search(r"MaxArraySize\s*=\s*(\d+)",
                             _sh("scontrol", "show", "config")).group(1))
        figures["MaxArraySize"] = size
        if args.e2e_only:
            # default settings: no poll_interval (30 s at the least, growing while nothing
            # changes); the same sweep with the end watcher and without it, then the floor
            opts = {"host": login.alias, "ssh_config": login.ssh_config,
                    "scheduler_env": slurm_env}
            for k in range(2 * args.rounds):  # alternately, starting with the watcher
                watch = k % 2 == 0 or bool(args.baseline)
                label = "with the end watcher" if watch else "without the end watcher"
                options = {**opts, "remote_dir": str(work / f"remote-{k}")}
                if args.baseline and k % 2:
                    label = "with the end watcher, baseline"
                    got = _e2e_in(args.baseline, work, f"e2e-{k}", n, options)
                else:
                    got = bench_e2e(work, f"e2e-{k}", n, options, watch=watch)
                figures.setdefault(f"chester (ssh, default poll) {label}", []).append(got)
                print(f"[bench] end to end {label}: {got}", flush=True)
            t0 = time.perf_counter()
            jid = _sh("sbatch", "--parsable", f"--array=0-{n - 1}", "-o", "/dev/null",
                      "--wrap", "true").strip().split(";")[0]
            wait_queue_empty(jid)
            figures["bare array drain s"] = round(time.perf_counter() - t0, 2)
            for label in ("with the end watcher", "without the end watcher",
                          "with the end watcher, baseline"):
                if f"chester (ssh, default poll) {label}" in figures:
                    figures[f"ratio to the bare drain, {label}"] = [
                        round(got["end-to-end s"] / figures["bare array drain s"], 3)
                        for got in figures[f"chester (ssh, default poll) {label}"]]
            print(json.dumps(figures, indent=2))
            return
        print(f"[bench] SLURM up (MaxArraySize {size}); making the submitit and chester venvs", flush=True)
        py = submitit_venv(work)
        chester_py = chester_venv(work)

        # 1. `chester launch` from a shell against submitit's whole script, alternately,
        # after the first launch in the project (not counted: it places the runtime)
        first = bench_chester_cli(chester_py, work, n, slurm_env)
        figures["chester launch (cli) first launch in a new project s"] = round(
            first["process"], 3)
        print(f"[bench] first `chester launch` in a new project: {first['process']:.3f} s",
              flush=True)
        cli_p, sub_p, bare_p, pass_p, cli_cpu = [], [], [], [], []
        for k in range(args.rounds):
            sub = bench_submitit(py, work, n, k + 100)
            cli = bench_chester_cli(chester_py, work, n, slurm_env)
            bare = bench_bare_sbatch(n)
            t = time.perf_counter()
            subprocess.run([str(chester_py), "-c", "pass"], check=True)
            pass_p.append(round(time.perf_counter() - t, 4))
            sub_p.append(round(sub["process"], 3))
            cli_p.append(round(cli["process"], 3))
            cli_cpu.append(round(cli["cpu"], 3))
            bare_p.append(round(bare, 4))
            figures["chester launch (cli) sbatch calls"] = len(cli["job_ids"])
            print(f"[bench] round {k + 1}: submitit whole script {sub['process']:.3f} s, "
                  f"`chester launch` whole process {cli['process']:.3f} s "
                  f"(CPU {cli['cpu']:.3f} s), bare sbatch "
                  f"{bare:.4f} s, python -c pass {pass_p[-1]:.4f} s", flush=True)
        figures["bare `sbatch --array` from the shell s (each round)"] = bare_p
        figures["bare `sbatch --array` from the shell s (median)"] = statistics.median(bare_p)
        figures["python -c pass s (median)"] = statistics.median(pass_p)
        figures["submitit whole script s (each round, vs cli)"] = sub_p
        figures["chester launch (cli) whole process s (each round)"] = cli_p
        figures["submitit whole script s (median, vs cli)"] = statistics.median(sub_p)
        figures["chester launch (cli) whole process s (median)"] = statistics.median(cli_p)
        figures["chester launch (cli) CPU s, user + system (each round)"] = cli_cpu
        figures["chester launch (cli) CPU s, user + system (median)"] = statistics.median(cli_cpu)
        figures["submitit / chester launch (cli), whole process, median"] = round(
            statistics.median(sub_p) / statistics.median(cli_p), 2)
        if args.cli_only:
            print(json.dumps(figures, indent=2))
            return

        # 2. chester through the login host: launch, status polls, everything pulled
        # polled every 2 s at the least, as a test cluster may be: the default floor of a
        # real cluster (30 s, cluster etiquette) would add up to one interval to the end
        cfg = make_project(work, "ssh-project", {
            "host": login.alias, "ssh_config": login.ssh_config, "poll_interval": 2,
            "remote_dir": str(work / "remote"), "scheduler_env": slurm_env})
        timer = SubmitTimer()
        disp = dispatcher_with(timer)
        t0 = time.perf_counter()
        sweep = launch(trivial, [{"i": i} for i in range(n)], backend="slurm",
                       exp_prefix="bench", config=cfg, dispatcher=disp)
        t_launch = time.perf_counter() - t0
        jobs = {r.handle.remote_id.split("_")[0] for r in sweep.runs}
        figures["chester (ssh) sbatch calls"] = len(jobs)
        figures["ceil(runs / MaxArraySize)"] = math.ceil(n / size)
        figures["chester (ssh) launch s"] = round(t_launch, 3)
        figures["chester (ssh) submit hook s"] = round(timer.submit_s, 3)
        print(f"[bench] chester launch over SSH: {t_launch:.2f} s "
              f"(submit hook {timer.submit_s:.2f} s), {len(jobs)} sbatch call(s)", flush=True)

        polls = 3
        before = scheduler_counters()
        calls0 = timer.status_calls
        for _ in range(polls):
            st = sweep.status()
            assert len(st) == n
            time.sleep(2.1)  # past the backend's shortest poll interval: every call queries
        after = scheduler_counters()
        calls = timer.status_calls - calls0
        figures["status polls (Sweep.status of all runs)"] = polls
        figures["status hook calls"] = calls
        for k in before:
            figures[f"per status call: {k}"] = round((after[k] - before[k]) / max(calls, 1), 2)
        calls0 = timer.status_calls
        states = sweep.wait(timeout=3600, pull=True, progress=False)
        t_e2e = time.perf_counter() - t0
        ok = sum(1 for s in states.values() if s == State.SUCCEEDED)
        pulled = sum(1 for r in sweep.runs if (r.log_dir / "result.txt").exists())
        figures["chester (ssh) succeeded"] = ok
        figures["chester (ssh) results pulled"] = pulled
        figures["chester (ssh) end-to-end s (launch to all pulled)"] = round(t_e2e, 2)
        figures["status hook calls during wait"] = timer.status_calls - calls0
        print(f"[bench] end to end: {t_e2e:.1f} s, {ok} succeeded, {pulled} pulled", flush=True)

        # 3. chester directly (no SSH) against submitit's map_array, alternately, each in a
        #    fresh process that has imported its library; submission only (the tasks are
        #    cancelled right away)
        chester_s, submitit_s, chester_p, submitit_p = [], [], [], []
        bench_chester_direct(chester_py, work, n, slurm_env)  # the project's first launch
        for k in range(args.rounds):
            sub = bench_submitit(py, work, n, k)
            submitit_s.append(round(sub["seconds"], 3))
            figures["submitit sbatch calls"] = len(sub["job_ids"])
            mine = bench_chester_direct(chester_py, work, n, slurm_env)
            chester_s.append(round(mine["seconds"], 3))
            submitit_p.append(round(sub["process"], 3))
            chester_p.append(round(mine["process"], 3))
            figures["chester (direct) sbatch calls"] = len(mine["job_ids"])
            print(f"[bench] round {k + 1}: submitit map_array {sub['seconds']:.3f} s "
                  f"(script {sub['process']:.2f} s), chester.launch {mine['seconds']:.3f} s "
                  f"(script {mine['process']:.2f} s)", flush=True)
        figures["submitit map_array submit s (each round)"] = submitit_s
        figures["chester (direct) launch s (each round)"] = chester_s
        figures["submitit map_array submit s (median)"] = statistics.median(submitit_s)
        figures["chester (direct) launch s (median)"] = statistics.median(chester_s)
        figures["submitit whole script s (each round)"] = submitit_p
        figures["chester (direct) whole script s (each round)"] = chester_p

        # 4. a bare array of `true`, for scale
        t0 = time.perf_counter()
        jid = _sh("sbatch", "--parsable", f"--array=0-{n - 1}", "-o", "/dev/null",
                  "--wrap", "true").strip().split(";")[0]
        wait_queue_empty(jid)
        figures["bare array drain s"] = round(time.perf_counter() - t0, 2)

        figures["submitit / chester (direct), median"] = round(
            figures["submitit map_array submit s (median)"]
            / figures["chester (direct) launch s (median)"], 2)
        figures["submitit (median) / chester (ssh)"] = round(
            figures["submitit map_array submit s (median)"] / figures["chester (ssh) launch s"], 2)
        print(json.dumps(figures, indent=2))
    finally:
        if login is not None:
            login.stop()
        factory.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
