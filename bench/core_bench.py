"""Core and local-backend figures (DESIGN §9): `python bench/core_bench.py [--runs 200]`.

(a) `chester plugins list`, cold (a new process each time): median wall time, and which
    heavy modules `import chester` (and the plugin listing) load.
(b) 200 no-op runs on the local backend, 2 at a time, launch to last run ended, against
    200 processes that each load and call a small cloudpickled function, 2 at a time, and
    against 200 bare `python -c pass`, 2 at a time.
(c) The project-code digest a launch compares with its sweep's latest launch
    (:mod:`chester.launcher.identity`) on a project of 10,000 files: cold (every file read),
    warm (the stat memo: no file read), and a 1-run dry launch with and without those files.
(d) A dry launch of 10,000 runs on the local backend: its time, and what it wrote.

``--baseline DIR`` (an earlier checkout, e.g. from ``git archive``) measures (a) and (b)
for it too, alternating with this checkout in the same minutes. Bytecode is written
first (``PYTHONDONTWRITEBYTECODE`` is dropped), as an installed package has it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HEAVY = ("fabric", "paramiko", "invoke", "boto3", "botocore", "rich", "structlog", "yaml",
         "cloudpickle", "tenacity")


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms (min {min(xs) * 1000:.0f}, max {max(xs) * 1000:.0f}, n={len(xs)})"


def _cold(argv: list[str], n: int, cwd: str, env: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - t)
    return times


def _env_from(src: str | None) -> dict[str, str] | None:
    """The environment that imports chester from ``src`` (an earlier checkout)."""
    if not src:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *(str(p) for p in sorted(Path(src).glob("chester_backends/*/src")))])}


def bench_plugins_list(n: int, baseline: str | None = None) -> None:
    exe = [sys.executable, "-m", "chester.cli", "plugins", "list"]
    with tempfile.TemporaryDirectory() as d:
        for _ in range(2):
            subprocess.run(exe, cwd=d, capture_output=True, check=True)
            if baseline:
                subprocess.run(exe, cwd=d, capture_output=True, check=True,
                               env=_env_from(baseline))
        times, before, floor = [], [], []
        for _ in range(n):  # alternating, one of each at a time
            times += _cold(exe, 1, d)
            floor += _cold([sys.executable, "-c", "pass"], 1, d)
            if baseline:
                before += _cold(exe, 1, d, _env_from(baseline))
        probe = ("import sys, json, chester; a = set(sys.modules); "
                 "from chester.cli import main; import io, contextlib; "
                 "f = io.StringIO()\n"
                 "with contextlib.redirect_stdout(f): main(['plugins', 'list', '--json'])\n"
                 "print(json.dumps({'import chester': sorted(m for m in a if m.split('.')[0] in "
                 f"{HEAVY!r}), 'plugins list': sorted({{m.split('.')[0] for m in sys.modules}} & "
                 f"set({HEAVY!r}))}}))")
        mods = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=d, check=True,
                                         capture_output=True, text=True).stdout)
    f = statistics.median(floor)
    print(f"(a) chester plugins list, cold: {_median(times)} -> "
          f"{statistics.median(times) / f:.1f} x the floor (target < 6)")
    if before:
        print(f"    the baseline's:              {_median(before)} -> "
              f"{statistics.median(before) / f:.1f} x the floor")
    print(f"    python -c pass floor:        {_median(floor)}")
    print(f"    heavy modules after `import chester`: {mods['import chester'] or 'none'}")
    print(f"    heavy modules after `plugins list`:   {mods['plugins list'] or 'none'}")


def _compiled(*roots: str) -> None:
    """Bytecode written for chester (and a baseline) as an installed package has it, and
    kept: a bench that compiled every module at each start would measure the compiler."""
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for root in roots:
        compileall.compile_dir(root, quiet=1, workers=1)


def _pool(argvs: list[list[str]], width: int) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(width) as ex:
        list(ex.map(lambda a: subprocess.run(a, check=True, capture_output=True), argvs))
    return time.perf_counter() - t


def noop(variant, log_dir, exp_name):
    """The run: nothing at all."""


def local_once(runs: int, width: int) -> dict[str, float]:
    """One launch of ``runs`` no-op runs on the local backend, ``width`` at a time, in a
    new project: seconds to the last run's end record, and of the launch call."""
    import chester
    from chester.config import load_config
    from chester.plugin.records import State

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / ".git").mkdir()
        (root / "chester.yaml").write_text(
            f"backends:\n  local:\n    type: local\n    max_parallel: {width}\n")
        os.environ["CHESTER_SLOTS_DIR"] = str(root / "slots")
        cfg = load_config(root / "chester.yaml")
        t = time.perf_counter()
        sweep = chester.launch(noop, [{"i": i} for i in range(runs)], exp_prefix="bench",
                               config=cfg)
        t_launch = time.perf_counter() - t
        status = [Path(r.local_dir) / ".chester" / "status.json" for r in sweep.rows()]
        while status:  # the runs end about in order: look at those not seen ended, in order
            try:
                if '"ended_at": null' in status[0].read_text():
                    time.sleep(0.01)
                    continue
            except FileNotFoundError:
                time.sleep(0.01)
                continue
            status.pop(0)
        total = time.perf_counter() - t
        states = sweep.status()
        assert all(s == State.SUCCEEDED for s in states.values()), states
    return {"total": total, "launch": t_launch}


def _local_in(src: str | None, runs: int, width: int) -> dict[str, float]:
    """:func:`local_once` in a new process, importing chester from ``src`` (an earlier
    checkout: its root and each backend's ``src``) when given."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(
            [src, *(str(p) for p in sorted(Path(src).glob("chester_backends/*/src")))])
    out = subprocess.run([sys.executable, __file__, "--local-once", "--runs", str(runs),
                          "--width", str(width)], env=env, cwd=tempfile.gettempdir(),
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def bench_local(runs: int, width: int, rounds: int, baseline: str | None) -> None:
    import cloudpickle

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        # the floor: each process loads and calls a small cloudpickled function
        payload = root / "fn.pkl"
        payload.write_bytes(cloudpickle.dumps(lambda v, d_, n: None))
        code = ("import cloudpickle; f = cloudpickle.load(open(%r, 'rb')); f({}, '.', 'x')"
                % str(payload))
        floor, bare, now, before = [], [], [], []
        for _ in range(rounds):  # alternating, so that the machine's load falls on each alike
            floor.append(_pool([[sys.executable, "-c", code]] * runs, width))
            bare.append(_pool([[sys.executable, "-c", "pass"]] * runs, width))
            now.append(_local_in(None, runs, width))
            if baseline:
                before.append(_local_in(baseline, runs, width))
    med = statistics.median
    f = med(floor)
    print(f"(b) {runs} no-op runs, {width} at a time, {rounds} rounds (medians), load "
          f"{os.getloadavg()[0]:.1f}:")
    print(f"    floor, {runs} cloudpickle load+call processes: {f:.2f} s "
          f"({', '.join(f'{x:.2f}' for x in floor)})")
    print(f"    {runs} bare `python -c pass`:                  {med(bare):.2f} s")
    for label, xs in (("local backend", now), ("local backend, baseline", before)):
        if xs:
            tot = [x["total"] for x in xs]
            print(f"    {label}: {med(tot):.2f} s (launch call {med(x['launch'] for x in xs):.2f}"
                  f" s) -> ratio {med(tot) / f:.2f} (rounds: "
                  f"{', '.join(f'{t / fl:.2f}' for t, fl in zip(tot, floor, strict=True))}; target <= 1.1)")


def bench_dry_run(runs: int) -> None:
    """A dry launch of ``runs`` runs on the local backend: its time, and what it wrote in
    the project (nothing per run is written before a run starts)."""
    import chester
    from chester.config import load_config

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        # a git work tree, as most projects are: the digest asks git what it ignores
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        (root / ".gitignore").write_text("wandb/\n*.ckpt\n")
        (root / "chester.yaml").write_text("backends:\n  local:\n    type: local\n")
        cfg = load_config(root / "chester.yaml")
        chester.launch(noop, [{"i": 0}], exp_prefix="warm", config=cfg, dry_run=True)
        before = {p for p in root.rglob("*")}
        times = []
        for _ in range(3):
            t = time.perf_counter()
            sweep = chester.launch(noop, [{"i": i} for i in range(runs)], exp_prefix="bench",
                                   config=cfg, dry_run=True)
            times.append(time.perf_counter() - t)
            del sweep
        made = [p for p in root.rglob("*") if p not in before]
        size = sum(p.stat().st_size for p in made if p.is_file())
    print(f"(d) dry run of {runs} runs, local backend: {_median(times)}; wrote "
          f"{len(made)} files and folders, {size} bytes in the project")


def bench_code_digest(files: int, repeat: int) -> None:
    import chester
    from chester.config import load_config
    from chester.launcher.identity import project_digest

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        # a git work tree, as most projects are: the digest asks git what it ignores
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        (root / ".gitignore").write_text("wandb/\n*.ckpt\n")
        (root / "chester.yaml").write_text("backends:\n  local:\n    type: local\n")
        cfg = load_config(root / "chester.yaml")

        def dry() -> float:
            t = time.perf_counter()
            chester.launch(noop, [{"i": 0}], exp_prefix="bench", config=cfg, dry_run=True)
            return time.perf_counter() - t

        dry()  # imports and plugin discovery out of the way
        empty = [dry() for _ in range(repeat)]
        for i in range(files):  # 100 packages of 100 modules of about 2 kB each
            pkg = root / f"pkg{i // 100:03d}"
            pkg.mkdir(exist_ok=True)
            (pkg / f"mod{i % 100:03d}.py").write_text(f"X = {i}\n" + "# pad\n" * 300)
        past = time.time() - 60  # (files changed in the last 2 s are hashed again each time)
        for path in root.rglob("*.py"):
            os.utime(path, (past, past))
        backend = cfg.backend("local")
        t = time.perf_counter()
        project_digest(backend)
        cold = time.perf_counter() - t
        warm = []
        for _ in range(repeat):
            t = time.perf_counter()
            project_digest(backend)
            warm.append(time.perf_counter() - t)
        full = [dry() for _ in range(repeat)]
    print(f"(c) code digest of a {files}-file project: cold {cold * 1000:.0f} ms, "
          f"warm (stat memo) {_median(warm)}")
    print(f"    1-run dry launch: empty project {_median(empty)}; "
          f"{files}-file project {_median(full)}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--width", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20, help="cold starts of plugins list")
    p.add_argument("--files", type=int, default=10_000, help="files of the digest's project")
    p.add_argument("--rounds", type=int, default=5, help="rounds of (b), alternating")
    p.add_argument("--baseline", default=None,
                   help="an earlier checkout (e.g. `git worktree add` or `git archive`): (b) "
                        "and (a) also measure it, alternating with this one")
    p.add_argument("--dry-runs", type=int, default=10_000, help="runs of (d)'s dry launch")
    p.add_argument("--only", default="abcd", help="which parts to run (letters)")
    p.add_argument("--local-once", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.local_once:
        print(json.dumps(local_once(a.runs, a.width)))
        return
    here = str(Path(__file__).resolve().parent.parent)
    _compiled(*(r for r in (here, a.baseline) if r))
    print(f"python {sys.version.split()[0]} at {sys.executable}, load {os.getloadavg()}")
    if "a" in a.only:
        bench_plugins_list(a.repeat, a.baseline)
    if "b" in a.only:
        bench_local(a.runs, a.width, a.rounds, a.baseline)
    if "c" in a.only:
        bench_code_digest(a.files, 10)
    if "d" in a.only:
        bench_dry_run(a.dry_runs)


if __name__ == "__main__":
    main()
