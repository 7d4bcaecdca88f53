"""The long form of ``chester_backends/slurm/tests/test_supervise.py``: 30 runs under
``MaxSubmitJobsPerUser=10``, the launcher SIGKILLed after its first submit, one worker
SIGKILLed on its first attempt (retried by the supervisor) and one run that asks for a
checkpoint requeue on its first attempt (SLURM queues it again and holds it about two
minutes; the supervisor must count it live, not retry it). About four minutes; run it with
``.venv/bin/pytest bench/long`` (root, the packages of .ci/install.sh)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from chester_testinfra.slurm import limited_cluster

HERE = Path(__file__).resolve().parents[2] / "chester_backends/slurm/tests/test_supervise.py"
_spec = importlib.util.spec_from_file_location("slurm_test_supervise", HERE)
assert _spec is not None and _spec.loader is not None
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)


@pytest.mark.timeout(900)
def test_supervised_sweep_with_a_lost_worker_and_a_checkpoint_requeue(tmp_path,
                                                                        tmp_path_factory):
    # a short folder: the daemons' sockets live under it
    with limited_cluster(tmp_path_factory.mktemp("slurm-supl"), suite.LIMIT) as cluster:
        n, die, ckpt = 30, 4, 11
        env, journal = suite._run_unattended(tmp_path, cluster, n, die, timeout=720,
                                             ckpt=ckpt)
        assert [e["why"] for e in journal if e["event"] == "requeued"] == ["lost"]
        assert journal[-1]["event"] == "done"
        st = subprocess.run([*suite.CHESTER, "status", "sup", "--json"], cwd=env.project,
                            capture_output=True, text=True, timeout=120)
        assert st.returncode == 0, st.stderr
        runs = json.loads(st.stdout)["runs"]
        assert {r["state"] for r in runs} == {"succeeded"}, runs
        assert [i for i, r in enumerate(runs) if (r.get("attempt") or 1) == 2] == [die, ckpt]
        cycles = [e for e in journal if e["event"] in ("cycle", "done")]
        print(f"supervision: {len(cycles)} cycles over "
              f"{journal[-1]['t'] - journal[0]['t']:.0f} s, "
              f"{sum(e['cpu_s'] for e in cycles):.2f} CPU-s, "
              f"{sum(e['calls'] for e in cycles)} scheduler calls", file=sys.stderr)
