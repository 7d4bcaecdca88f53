"""Bench of the autobot backend: 200 short runs on 2 nodes x 4 (stand-in) GPUs.

Run as root: ``.venv/bin/python bench/autobot_bench.py [N_RUNS] [SECONDS_PER_RUN] [PYTHON]``
(``PYTHON``: the nodes' interpreter, default ``python3``; on this machine that is a pyenv
shim costing ~0.3 s per start, ``/usr/bin/python3`` is the same Python without it). It starts
the test lab of ``testinfra`` (the loopback sshd as login host, two network-namespace sshd
hosts as nodes with a stand-in ``nvidia-smi``, one shared filesystem) and prints:

* the time from a GPU freeing (a run's worker recorded its end) to the next run starting on
  that GPU (the next worker recorded its start), median and worst, from the runs' own records;
* ssh commands the scheduler ran per cycle (its own counter) and nvidia-smi calls per cycle;
* the sweep's wall time (first start to last end) against the ideal runs x duration / GPUs,
  and the launch to last end.

Everything it starts is stopped at the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle

ROOT = Path(__file__).resolve().parent.parent


def fn_sleep(variant, log_dir, exp_name):
    import time as _t

    _t.sleep(variant["seconds"])


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", type=int, default=200, help="runs in the sweep")
    ap.add_argument("seconds", nargs="?", type=float, default=1.0, help="each run's length")
    ap.add_argument("python", nargs="?", default="python3",
                    help="the nodes' interpreter (/usr/bin/python3 skips the pyenv shim)")
    args = ap.parse_args()
    n, seconds, python = args.runs, args.seconds, args.python
    sys.path.insert(0, str(ROOT / "testinfra" / "src"))  # chester_testinfra, if not installed
    from chester_testinfra import InfraUnavailable
    from chester_testinfra.gpulab import GpuLab, gpu_intervals, make_project, write_nvidia_smi
    from chester_testinfra.sshd import make_keys, start_loopback_host, start_netns_hosts

    from chester.launcher.launching import launch
    from chester.plugin.dispatch import Dispatcher

    tmp = Path(tempfile.mkdtemp(prefix="chester-autobot-bench-"))
    login = hosts = None
    try:
        try:
            keys = make_keys(tmp / "keys")
            hosts = start_netns_hosts(tmp / "sshd", 2, keys=keys)
            login = start_loopback_host(tmp / "login", keys=keys)
        except InfraUnavailable as e:
            print(f"cannot run the bench: {e}")
            return 1
        state = tmp / "gpu-state"
        lab = GpuLab(login=login, hosts=hosts, nvidia_smi=write_nvidia_smi(tmp / "bin", state),
                     state_dir=state, shared=tmp)
        for node in lab.nodes:
            lab.free_gpus(node, 4)
        project, cfg, remote = make_project(tmp / "b", lab, python=python)
        t0 = time.time()
        sweep = launch(fn_sleep, [{"i": i, "seconds": seconds} for i in range(n)],
                       backend="lab", exp_prefix="bench", config=cfg,
                       dispatcher=Dispatcher(sleep=lambda s: time.sleep(min(s, 1.0))))
        t_submit = time.time() - t0
        states = sweep.wait(timeout=600 + n * seconds, poll_interval=1.0, progress=False)
        t_all = time.time() - t0
        bad = [k for k, s in states.items() if s.value != "succeeded"]
        ivs = gpu_intervals(remote)
        by: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for host, g, a, b in ivs:
            by.setdefault((host, g), []).append((a, b))
        gaps = []
        for seq in by.values():
            seq.sort()
            gaps += [b2[0] - a1[1] for a1, b2 in zip(seq, seq[1:], strict=False)]
        # the hand-over in two parts: the scheduler seeing the end and placing the next run
        # (end record -> placement record), and the worker starting on the node (placement
        # -> the worker's start record: ssh command, python, runtime import)
        placed, startup, forked = [], [], 0
        ends = sorted(b for _h, _g, _a, b in ivs)
        for p in remote.rglob(".chester/autobot.json"):
            pl = json.loads(p.read_text())
            st = json.loads((p.parent / "status.json").read_text())
            startup.append(st["started_at"] - pl["placed_at"])
            forked += bool(st.get("forked"))
            before = [e for e in ends if e <= pl["placed_at"]]
            if before and pl["placed_at"] - before[-1] < 5:
                placed.append(pl["placed_at"] - before[-1])
        first = min(a for _h, _g, a, _b in ivs)
        last = max(b for _h, _g, _a, b in ivs)
        root = remote / ".chester" / "autobot"
        st = json.loads((root / "state.json").read_text())
        smi_calls = len(lab.smi_calls())
        gpus = 8
        ideal = n * seconds / gpus
        print(f"runs: {n} x {seconds:g} s on 2 nodes x 4 GPUs (python: {python}); "
              f"failed: {len(bad)}")
        print(f"launch (sync + probe + upload + enqueue): {t_submit:.2f} s")
        print(f"GPU free -> next run started (worker end record -> next worker start record): "
              f"median {statistics.median(gaps):.2f} s, worst {max(gaps):.2f} s "
              f"({len(gaps)} hand-overs)")
        print(f"  of which: last end -> placement median {statistics.median(placed):.2f} s; "
              f"placement -> worker started median {statistics.median(startup):.2f} s, "
              f"worst {max(startup):.2f} s; workers forked by the node's pre-started "
              f"worker: {forked} of {len(startup)}")
        print(f"scheduler cycles: {st['cycles']}, ssh commands: {st['ssh_commands']} "
              f"({st['ssh_commands'] / max(1, st['cycles']):.2f} per cycle: one query per "
              f"node plus one start per node that got runs), nvidia-smi calls: {smi_calls} "
              f"({smi_calls / max(1, st['cycles']):.2f} per cycle)")
        print(f"first start to last end: {last - first:.1f} s; ideal (runs x duration / "
              f"GPUs): {ideal:.1f} s; ratio {(last - first) / ideal:.2f}")
        print(f"launch to every run seen ended: {t_all:.1f} s")
        return 0 if not bad else 2
    finally:
        for h in (login, hosts):
            if h is not None:
                h.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
