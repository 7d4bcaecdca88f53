"""Core and local-backend figures (DESIGN §9): `python bench/core_bench.py [--runs 200]`.

(a) `chester plugins list`, cold (a new process each time): median wall time, and which
    heavy modules `import chester` (and the plugin listing) load.
(b) 200 no-op runs on the local backend, 2 at a time, launch to last run ended, against
    200 processes that each load and call a small cloudpickled function, 2 at a time, and
    against 200 bare `python -c pass`, 2 at a time.
(c) The project-code digest a launch compares with its sweep's latest launch
    (:mod:`chester.launcher.identity`) on a project of 10,000 files: cold (every file read),
    warm (the stat memo: no file read), and a 1-run dry launch with and without those files.
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


def bench_plugins_list(n: int) -> None:
    exe = [sys.executable, "-m", "chester.cli", "plugins", "list"]
    with tempfile.TemporaryDirectory() as d:
        for _ in range(2):
            subprocess.run(exe, cwd=d, capture_output=True, check=True)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(exe, cwd=d, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        floor = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True)
            floor.append(time.perf_counter() - t)
        probe = ("import sys, json, chester; a = set(sys.modules); "
                 "from chester.cli import main; import io, contextlib; "
                 "f = io.StringIO()\n"
                 "with contextlib.redirect_stdout(f): main(['plugins', 'list', '--json'])\n"
                 "print(json.dumps({'import chester': sorted(m for m in a if m.split('.')[0] in "
                 f"{HEAVY!r}), 'plugins list': sorted({{m.split('.')[0] for m in sys.modules}} & "
                 f"set({HEAVY!r}))}}))")
        mods = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=d, check=True,
                                         capture_output=True, text=True).stdout)
    print(f"(a) chester plugins list, cold: {_median(times)}")
    print(f"    python -c pass floor:        {_median(floor)}")
    print(f"    heavy modules after `import chester`: {mods['import chester'] or 'none'}")
    print(f"    heavy modules after `plugins list`:   {mods['plugins list'] or 'none'}")


def _pool(argvs: list[list[str]], width: int) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(width) as ex:
        list(ex.map(lambda a: subprocess.run(a, check=True, capture_output=True), argvs))
    return time.perf_counter() - t


def noop(variant, log_dir, exp_name):
    """The run: nothing at all."""


def bench_local(runs: int, width: int) -> None:
    import cloudpickle

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
        # baseline 1: each process loads and calls a small cloudpickled function
        payload = root / "fn.pkl"
        payload.write_bytes(cloudpickle.dumps(lambda v, d_, n: None))
        code = ("import cloudpickle; f = cloudpickle.load(open(%r, 'rb')); f({}, '.', 'x')"
                % str(payload))
        base_pickle = _pool([[sys.executable, "-c", code]] * runs, width)
        base_pass = _pool([[sys.executable, "-c", "pass"]] * runs, width)
        t = time.perf_counter()
        sweep = chester.launch(noop, [{"i": i} for i in range(runs)], exp_prefix="bench",
                               config=cfg)
        t_launch = time.perf_counter() - t
        status = [Path(r.local_dir) / ".chester" / "status.json" for r in sweep.rows()]
        while True:
            ended = 0
            for p in status:
                try:
                    if '"ended_at": null' not in p.read_text():
                        ended += 1
                except FileNotFoundError:
                    pass
            if ended == runs:
                break
            time.sleep(0.2)
        total = time.perf_counter() - t
        states = sweep.status()
        assert all(s == State.SUCCEEDED for s in states.values()), states
    print(f"(b) {runs} no-op runs, {width} at a time, local backend: {total:.2f} s "
          f"(launch call {t_launch:.2f} s)")
    print(f"    {runs} cloudpickle load+call processes, {width} at a time: {base_pickle:.2f} s "
          f"-> ratio {total / base_pickle:.2f} (target <= 1.3)")
    print(f"    {runs} bare `python -c pass`, {width} at a time:            {base_pass:.2f} s "
          f"-> ratio {total / base_pass:.2f}")


def bench_code_digest(files: int, repeat: int) -> None:
    import chester
    from chester.config import load_config
    from chester.launcher.identity import project_digest

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / ".git").mkdir()
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
    a = p.parse_args()
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    bench_plugins_list(a.repeat)
    bench_local(a.runs, a.width)
    bench_code_digest(a.files, 10)


if __name__ == "__main__":
    main()
