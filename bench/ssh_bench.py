"""Bench of the ssh backend: a 200-run sweep to one host.

Run as root: ``.venv/bin/python bench/ssh_bench.py [N_RUNS]``. It starts one SSH host (a
network namespace with its own sshd: ``chester_testinfra.sshd``, as the tests do), and prints:

* SSH connections opened for the launch (sshd log "Accepted publickey" lines, and the
  transport's own counter), and the launch wall time against one rsync of the project plus
  one ``ssh host true``;
* round trips (commands over SSH) and connections for ONE status of every run;
* rsync invocations (and connections) to pull every run.

With ``--wait-only [--rounds R]`` it measures only the wait instead: a sweep of N runs
(default 20, 8 at a time, each sleeping 0.5 to 2 s) waited on with the default poll
settings (``Sweep.wait()``, pull included), alternately with and without the end watcher
(a backend whose ``watch_ends`` is None waits as before), R rounds of each; per wait, how
long after the last run's end record it returned, its wall time and its status polls.

Everything it starts is stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import yaml

ROOT = Path(__file__).resolve().parent.parent


def fn_sleep(variant, log_dir, exp_name):
    import os
    import time

    time.sleep(variant["sleep"])
    with open(os.path.join(log_dir, "result.txt"), "w") as f:
        f.write(str(variant["i"]))


def fn_noop(variant, log_dir, exp_name):
    import os

    with open(os.path.join(log_dir, "result.txt"), "w") as f:
        f.write(str(variant["i"]))


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", type=int, default=None,
                    help="runs in the sweep (200; 20 with --wait-only)")
    ap.add_argument("--wait-only", action="store_true",
                    help="only the wait: the last end to the wait's return, with and without "
                         "the end watcher")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each (--wait-only)")
    args = ap.parse_args()
    n = args.runs or (20 if args.wait_only else 200)
    sys.path.insert(0, str(ROOT / "testinfra" / "src"))  # chester_testinfra, if not installed
    from chester_backend_ssh.plugin import SSHBackend
    from chester_testinfra import InfraUnavailable
    from chester_testinfra.sshd import start_netns_hosts

    from chester.config import load_config
    from chester.launcher.launching import launch
    from chester.plugin.testing import dispatcher_with
    from chester.remote.ssh import Transport

    tmp = Path(tempfile.mkdtemp(prefix="chester-ssh-bench-"))
    try:
        hosts = start_netns_hosts(tmp / "sshd", 1)
    except InfraUnavailable as e:
        print(f"cannot run the bench: {e}")
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        return 1
    host = hosts[0]
    try:
        project = tmp / "project"
        project.mkdir()
        (project / ".git").mkdir()
        for i in range(20):  # a small project to sync
            (project / f"mod{i}.py").write_text(f"X = {i}\n" * 50)
        (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"box": {
            "type": "ssh", "host": host.alias, "remote_dir": "/remote/bench",
            "ssh_config": hosts.ssh_config, "max_parallel": 8}}}))
        cfg = load_config(project / "chester.yaml")
        if args.wait_only:
            print(json.dumps(wait_rounds(cfg, n, args.rounds), indent=2))
            return 0

        made: list[Transport] = []
        execs = [0]

        class CountingTransport(Transport):
            def _exec(self, *a, **kw):  # type: ignore[no-untyped-def]
                execs[0] += 1
                return super()._exec(*a, **kw)

        class CountingSSH(SSHBackend):
            """The ssh backend, counting its transports and their commands."""

            def transport(self, backend):  # type: ignore[no-untyped-def]
                tr = CountingTransport(super().transport(backend).target, backend=backend.name)
                made.append(tr)
                return tr

        def snapshot():
            return (host.accepted_connections(), sum(t.connections_opened for t in made),
                    sum(t.rsync_invocations for t in made), execs[0])

        # baseline: one rsync of the project plus one ssh command
        ssh = ["ssh", "-F", hosts.ssh_config]
        t0 = time.perf_counter()
        subprocess.run(["rsync", "-rlptz", "--mkpath", "-e", " ".join(ssh), "--exclude=.git/",
                        f"{project}/", f"{host.alias}:/remote/baseline/"], check=True)
        subprocess.run([*ssh, host.alias, "true"], check=True)
        baseline = time.perf_counter() - t0

        disp = dispatcher_with(CountingSSH(), "ssh")
        from chester.plugin.manager import hookimpl

        hook_s: dict[str, float] = {}

        class HookTimer:
            @hookimpl(wrapper=True)
            def chester_prepare(self):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                try:
                    return (yield)
                finally:
                    hook_s["prepare"] = time.perf_counter() - t

            @hookimpl(wrapper=True)
            def chester_submit(self):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                try:
                    return (yield)
                finally:
                    hook_s["submit"] = time.perf_counter() - t

        disp.manager.register(HookTimer(), name="ssh-bench-timer")
        s0 = snapshot()
        t0 = time.perf_counter()
        sweep = launch(fn_noop, [{"i": i} for i in range(n)], backend="box",
                       exp_prefix="bench", config=cfg, dispatcher=disp)
        launch_s = time.perf_counter() - t0
        s1 = snapshot()

        # wait for the runs without pulling, then ONE status call for every run
        deadline = time.monotonic() + 600
        while True:
            states = sweep.status()
            if all(s.terminal for s in states.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit("runs did not finish in time")
            time.sleep(2)
        s2 = snapshot()
        t0 = time.perf_counter()
        # the hook itself, with every run's handle (Sweep.status skips finished runs)
        answer = disp.call("chester_status", sweep.backend,
                           handles=[r.handle for r in sweep.runs])
        status_s = time.perf_counter() - t0
        states = {k: v.state for k, v in answer.items()}
        s3 = snapshot()
        t0 = time.perf_counter()
        pulled = sweep.pull()
        pull_s = time.perf_counter() - t0
        s4 = snapshot()
        again = sweep.pull()
        s5 = snapshot()
        ok = sum(1 for s in states.values() if s.value == "succeeded")
        got = sum(1 for r in sweep.runs if (r.log_dir / "result.txt").exists())
        fig = {
            "runs": n, "succeeded": ok, "pulled_with_result": got,
            "launch": {"wall_s": round(launch_s, 2),
                       "baseline_one_rsync_plus_one_ssh_s": round(baseline, 2),
                       "prepare_hook_s": round(hook_s.get("prepare", 0), 2),
                       "submit_hook_s": round(hook_s.get("submit", 0), 2),
                       "ssh_connections_sshd_log": s1[0] - s0[0],
                       "ssh_connections_counter": s1[1] - s0[1],
                       "rsync_invocations": s1[2] - s0[2], "ssh_commands": s1[3] - s0[3]},
            "status_of_all": {"wall_s": round(status_s, 2), "round_trips": s3[3] - s2[3],
                              "ssh_connections_sshd_log": s3[0] - s2[0],
                              "ssh_connections_counter": s3[1] - s2[1]},
            "pull_all": {"wall_s": round(pull_s, 2), "rsync_invocations": s4[2] - s3[2],
                         "ssh_connections_sshd_log": s4[0] - s3[0],
                         "files": sum(r.files for r in pulled),
                         "bytes": sum(r.bytes for r in pulled)},
            "second_pull": {"files": sum(r.files for r in again),
                            "rsync_invocations": s5[2] - s4[2]},
        }
        print(json.dumps(fig, indent=2))
        return 0
    finally:
        hosts.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def wait_rounds(cfg, n: int, rounds: int) -> dict:  # type: ignore[no-untyped-def]
    """R rounds each of a sweep of ``n`` runs waited on with the default poll settings,
    with the end watcher and without it, alternately."""
    from chester_backend_ssh.plugin import SSHBackend

    from chester.launcher.launching import launch
    from chester.plugin.manager import hookimpl
    from chester.plugin.testing import dispatcher_with

    polls = [0]

    class Counting(SSHBackend):
        @hookimpl
        def chester_status(self, backend, handles):  # type: ignore[no-untyped-def]
            polls[0] += 1
            return super().chester_status(backend, handles)

    class NoWatcher(Counting):
        def watch_ends(self, backend, handles, sink):  # type: ignore[no-untyped-def]
            return None

    out: dict[str, list[dict]] = {"with_watcher": [], "without": []}
    for r in range(rounds):
        order = [("with_watcher", Counting), ("without", NoWatcher)]
        if r % 2:
            order.reverse()
        for key, cls in order:
            polls[0] = 0
            sweep = launch(fn_sleep, [{"i": i, "sleep": 0.5 + 0.5 * (i % 4)} for i in range(n)],
                           backend="box", exp_prefix=f"wait{r}-{key}", config=cfg,
                           dispatcher=dispatcher_with(cls(), "ssh"))
            t0 = time.perf_counter()
            states = sweep.wait(timeout=600, progress=False)
            wall = time.perf_counter() - t0
            returned = time.time()
            rows = [sweep.store.run(x.id) for x in sweep.runs]
            last = max(row.ended_at or 0.0 for row in rows)
            out[key].append({
                "succeeded": sum(1 for s in states.values() if s.value == "succeeded"),
                "pulled": sum(1 for row in rows if row.pulled_at),
                "last_end_to_return_s": round(returned - last, 2),
                "wait_s": round(wall, 2), "status_polls": polls[0]})
    for key in list(out):
        lags = sorted(x["last_end_to_return_s"] for x in out[key])
        out[f"{key}_median_last_end_to_return_s"] = lags[len(lags) // 2]  # type: ignore[assignment]
    return out


if __name__ == "__main__":
    sys.exit(main())
