"""Scripts on EC2 (moto plus the farm that plays the instances): the seed's script API run
as a script that exits, and a command run with hostile values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ec2farm import ec2_config  # type: ignore[import-not-found]

from chester.testing import ConformanceEnv

SEED_SCRIPT = textwrap.dedent('''
    import json, os
    from chester.run_exp import VariantGenerator, run_experiment_lite

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "out.json"), "w") as f:
            json.dump({"lr": variant["lr"]}, f)

    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.01])
    for v in vg.variants():
        run_experiment_lite(stub_method_call=train, variant=v, mode="ec2",
                            exp_prefix="seed-ec2", variations=vg.variations(),
                            wait_subprocess=False)
''')

SHOW_ARGV = '''
import json, os, sys
with open(os.path.join(os.environ["CHESTER_LOG_DIR"], "argv.json"), "w", encoding="utf-8") as f:
    json.dump(sys.argv[1:], f)
'''

HOSTILE = ["it's \"q\" $(touch /tmp/chester-pwned-ec2) `id`", "two\nlines ☃", "-dash"]


def test_seed_script_that_exits_runs_on_ec2(tmp_path, farm):
    import chester
    from chester import config as chester_config

    env = ConformanceEnv.create(tmp_path, backend="ec2", config=ec2_config())
    (env.project / "launch.py").write_text(SEED_SCRIPT)
    cfg_path = str(env.project / "chester.yaml")
    proc = subprocess.run([sys.executable, "launch.py"], cwd=env.project, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "CHESTER_CONFIG_PATH": cfg_path})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    old = os.environ.get("CHESTER_CONFIG_PATH")
    os.environ["CHESTER_CONFIG_PATH"] = cfg_path
    cwd = os.getcwd()
    os.chdir(env.project)
    chester_config.reload_config()
    try:
        sweep = chester.sweep("seed-ec2")
        states = sweep.wait(timeout=120, poll_interval=0.3, progress=False, pull=True)
        assert [s.value for s in states.values()] == ["succeeded"] * 2, \
            [(r.reason, r.stderr_tail) for r in sweep.runs]
        got = sorted(json.loads((r.log_dir / "out.json").read_text())["lr"] for r in sweep.runs)
        assert got == [0.01, 0.1]
    finally:
        os.chdir(cwd)
        if old is None:
            os.environ.pop("CHESTER_CONFIG_PATH", None)
        else:
            os.environ["CHESTER_CONFIG_PATH"] = old
        chester_config.reload_config()


def test_command_run_with_hostile_values_on_ec2(tmp_path, farm):
    from chester.launcher import launch

    env = ConformanceEnv.create(tmp_path, backend="ec2", config=ec2_config())
    (env.project / "show_argv.py").write_text(SHOW_ARGV)
    sweep = launch(["python", "show_argv.py"], [{"msg": m, "i": i} for i, m in
                                                enumerate(HOSTILE)],
                   backend="ec2", exp_prefix="cmd-ec2", config=env.config)
    states = sweep.wait(timeout=120, poll_interval=0.3, progress=False, pull=True)
    assert [s.value for s in states.values()] == ["succeeded"] * 3, \
        [(r.reason, r.stderr_tail) for r in sweep.runs]
    seen = set()
    for run in sweep.runs:
        argv = json.loads((run.log_dir / "argv.json").read_text(encoding="utf-8"))
        i = int(argv[argv.index("--i") + 1])
        msg = HOSTILE[i]
        head = [f"--msg={msg}"] if msg.startswith("-") else ["--msg", msg]
        assert argv[:len(head)] == head
        assert argv[-2:] == ["--exp_name", run.name]
        seen.add(i)
    assert seen == {0, 1, 2}
    assert not Path("/tmp/chester-pwned-ec2").exists()
