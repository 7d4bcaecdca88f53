"""Helpers the core tests and the backends' tests share: a project folder, the ``chester``
command line, and the seed's example script run end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHESTER = [sys.executable, "-m", "chester.cli"]


def make_project(root: Path, config: str | None = None) -> Path:
    """A project folder (a git root) with an optional chester.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".git").mkdir(exist_ok=True)
    if config is not None:
        (root / "chester.yaml").write_text(textwrap.dedent(config))
    return root


def run_chester(args: list[str], cwd: Path, env: dict | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("CHESTER_CONFIG_PATH", None)
    e.update(env or {})
    return subprocess.run([*CHESTER, *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=timeout)


#: The seed's own "Writing Experiments" example (its CLAUDE.md, v0.2.1), verbatim but for
#: ``mode``, which :func:`run_seed_example` sets.
SEED_EXAMPLE = '''\
from chester.run_exp import run_experiment_lite, VariantGenerator

def run_task(variant, log_dir, exp_name):
    # Your training code here
    pass

vg = VariantGenerator()
vg.add('learning_rate', [0.001, 0.01])
vg.add('batch_size', [32, 64])

for v in vg.variants():
    run_experiment_lite(
        stub_method_call=run_task,
        variant=v,
        mode='local',
        exp_prefix='my_experiment',
        auto_pull=True,  # Enable auto-pull for remote modes
    )
'''


def run_seed_example(project: Path, mode: str, timeout: float = 180) -> dict:
    """Run :data:`SEED_EXAMPLE` with ``mode`` as a script in ``project``; then check what a
    researcher sees: ``chester status my_experiment --json`` lists its 4 runs, numbered
    1-4 as their folders are, all succeeded; ``chester.sweep("my_experiment").runs`` has 4;
    ``chester pull my_experiment`` covers 4. Returns the final status."""
    import json
    import time

    script = SEED_EXAMPLE.replace("mode='local'", f"mode={mode!r}")
    (project / "my_launcher.py").write_text(script)
    env = dict(os.environ)
    env.pop("CHESTER_CONFIG_PATH", None)
    r = subprocess.run([sys.executable, "my_launcher.py"], cwd=project, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    deadline = time.monotonic() + timeout
    while True:
        s = run_chester(["status", "my_experiment", "--json"], cwd=project)
        assert s.returncode == 0, s.stderr
        st = json.loads(s.stdout)
        if all(run["state"] in ("succeeded", "failed", "cancelled", "lost", "timeout")
               for run in st["runs"]):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    runs = st["runs"]
    assert [run["state"] for run in runs] == ["succeeded"] * 4, runs
    assert [run["number"] for run in runs] == [1, 2, 3, 4]
    assert [run["name"] for run in runs] == [f"{n}_my_experiment" for n in range(1, 5)]
    assert [Path(run["log_dir"]).name for run in runs] == [run["name"] for run in runs]
    assert {run["backend"] for run in runs} == {mode} and st["backends"] == [mode]
    n = subprocess.run([sys.executable, "-c", "import chester; "
                        "print(len(chester.sweep('my_experiment').runs))"],
                       cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert n.returncode == 0 and n.stdout.strip() == "4", (n.stdout, n.stderr)
    p = run_chester(["pull", "my_experiment"], cwd=project, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith(
        ("my_experiment: pulled 4 runs", "my_experiment: 4 runs already here")), \
        (p.stdout, p.stderr)
    got = set()
    for run in runs:  # every variant ran once, and its folder is home
        d = Path(run["log_dir"])
        v = json.loads((d / "variant.json").read_text())
        got.add((v["learning_rate"], v["batch_size"]))
        assert (d / ".done").exists(), d
    assert got == {(lr, b) for lr in (0.001, 0.01) for b in (32, 64)}
    return st


def stop_monitor(project: Path, exp_prefix: str = "my_experiment") -> int | None:
    """End the ``auto_pull`` monitor a script started for ``exp_prefix`` (its pid is in
    ``.chester/monitor/<exp_prefix>.pid``) and its process group; returns its pid."""
    import signal
    import time

    pid_file = project / ".chester" / "monitor" / f"{exp_prefix}.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)  # it runs in a session (and group) of its own
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return pid
