"""Containers on the local backend, and a ``python:`` that has no chester installed.

Apptainer cannot be installed here: ``chester.testing.container_stand_in`` takes its command
line, records it and runs the command on the host."""

import json
import os
import sys

import pytest
from chester_testinfra.pythons import other_python

from chester.config import load_config
from chester.errors import ConfigError
from chester.launcher import launch
from chester.remote import runtime
from chester.testing import container_calls, container_stand_in


def write_where(variant, log_dir, exp_name):
    import chester

    with open(os.path.join(log_dir, "where.json"), "w") as f:
        json.dump({"python": sys.executable, "chester": chester.__file__,
                   "value": variant["v"]}, f)


def _project(tmp_path, yaml):
    p = tmp_path / "proj"
    (p / ".git").mkdir(parents=True)
    (p / "chester.yaml").write_text(yaml)
    return load_config(p / "chester.yaml")


def test_runs_inside_the_container_from_the_shipped_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    shim, calls = container_stand_in(tmp_path / "bin")
    cfg = _project(tmp_path, f"""backends:
  box:
    type: local
    max_parallel: 2
    container: {{image: /images/train.sif, binds: [/data], options: [--cleanenv],
                 runtime: {shim}}}
""")
    hostile = "it's $(id) `x`\n\u00e9"
    sweep = launch(write_where, [{"v": hostile}, {"v": 2}], backend="box", exp_prefix="ctr",
                   config=cfg)
    states = sweep.wait(timeout=60, pull=False, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}
    rt = runtime.build()
    got = container_calls(calls)
    assert len(got) == 2
    for argv in got:
        i = argv.index("/images/train.sif")
        assert argv[0] == "exec" and argv[i - 1] == "--cleanenv" and "--nv" not in argv
        binds = [argv[k + 1] for k, a in enumerate(argv[:i]) if a == "-B"]
        assert binds == ["/data", str(cfg.project_path), str(rt.path.parent)]
        assert argv[i + 1:i + 4] == [sys.executable, str(rt.path), "worker"]
    recs = [json.loads((r.log_dir / "where.json").read_text()) for r in sweep.runs]
    # the function ran from the runtime (what a container without chester has), values exact
    assert all(r["chester"].startswith(str(rt.path)) for r in recs)
    assert recs[0]["value"] == hostile
    for r in sweep.runs:  # chester's records are on the host, in the run folder
        assert json.loads((r.log_dir / ".chester" / "status.json").read_text())["state"] == \
            "succeeded"


def test_seed_keys_map_onto_the_container(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    shim, calls = container_stand_in(tmp_path / "bin", "singularity")
    cfg = _project(tmp_path, f"""backends:
  box:
    type: local
    use_singularity: true
    simg_path: /images/old.simg
    remote_mount_option: /scratch
    singularity_command: {shim}
""")
    sweep = launch(write_where, [{"v": 1}], backend="box", exp_prefix="seed", config=cfg)
    assert {s.value for s in sweep.wait(timeout=60, pull=False, progress=False).values()} == \
        {"succeeded"}
    (argv,) = container_calls(calls)
    assert argv[:3] == ["exec", "-B", "/scratch"] and "/images/old.simg" in argv


def test_a_container_without_an_image_is_a_config_error(tmp_path):
    cfg = _project(tmp_path, "backends:\n  box:\n    type: local\n    container: {binds: [/x]}\n")
    with pytest.raises(ConfigError) as ei:
        cfg.backend("box")
    assert "container.image" in str(ei.value) and "missing" in str(ei.value)
    cfg = _project(tmp_path / "b", "backends:\n  box:\n    type: local\n"
                   "    container: {image: /i.sif, runtime: docker}\n")
    with pytest.raises(ConfigError) as ei:
        cfg.backend("box")
    assert "apptainer or singularity" in str(ei.value)


def test_another_python_without_chester_runs_from_the_runtime(tmp_path, monkeypatch):
    """``python:`` pointing at an interpreter that has no chester (nor cloudpickle)."""
    bare = other_python(same_minor=True, bare=True, why="a target Python without chester")
    import cloudpickle

    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    # that Python cannot import this test module: the function travels by value
    module = sys.modules[write_where.__module__]
    cloudpickle.register_pickle_by_value(module)
    try:
        cfg = _project(tmp_path, f"backends:\n  box:\n    type: local\n    python: {bare}\n")
        sweep = launch(write_where, [{"v": 1}], backend="box", exp_prefix="bare", config=cfg)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert {s.value for s in sweep.wait(timeout=60, pull=False, progress=False).values()} == \
        {"succeeded"}
    rec = json.loads((sweep.runs[0].log_dir / "where.json").read_text())
    assert rec["python"] == bare and rec["chester"].startswith(str(runtime.build().path))


SEED_SCRIPT = '''
import json, os, sys
from chester.run_exp import VariantGenerator, run_experiment_lite

def train(variant, log_dir, exp_name):
    with open(os.path.join(log_dir, "out.json"), "w") as f:
        json.dump({"v": variant["v"], "image": os.environ.get("CHESTER_TEST_IMAGE")}, f)

vg = VariantGenerator()
vg.add("v", ["it's $(id)", "\\u00e9\\n2"])
for v in vg.variants():
    run_experiment_lite(stub_method_call=train, variant=v, mode=sys.argv[1],
                        exp_prefix=sys.argv[2], variations=vg.variations())
'''


@pytest.mark.parametrize("mode", ["local_singularity", "singularity"])
def test_the_seeds_local_singularity_mode_runs_locally_inside_its_image(tmp_path, mode):
    """The seed's ``mode="local_singularity"`` (and its older name ``singularity``): the local
    backend inside ``simg_path[local_singularity]``, with its ``remote_mount_option`` bound,
    blocking as the seed did. Run as a script that exits, with no ``backends`` entry."""
    import subprocess

    import yaml

    bin_dir = tmp_path / "bin"
    shim, calls = container_stand_in(bin_dir, "singularity")
    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    (project / "chester.yaml").write_text(yaml.safe_dump({
        "simg_path": {"local_singularity": "/images/seed.simg"},
        "remote_mount_option": {"local_singularity": "/scratch"}}))
    (project / "launch.py").write_text(SEED_SCRIPT)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "CHESTER_CONFIG_PATH": str(project / "chester.yaml"),
           "CHESTER_SLOTS_DIR": str(tmp_path / "slots")}
    proc = subprocess.run([sys.executable, "launch.py", mode, "seed-sif"], cwd=project,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    # blocking: both runs ended before the script returned
    st = subprocess.run([sys.executable, "-m", "chester.cli", "status", "seed-sif", "--json"],
                        cwd=project, capture_output=True, text=True, timeout=60, env=env)
    assert st.returncode == 0, st.stderr
    runs = json.loads(st.stdout)["runs"]
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"], runs
    got = container_calls(calls)
    assert len(got) == 2
    for argv in got:
        assert argv[:3] == ["exec", "-B", "/scratch"] and "/images/seed.simg" in argv
    values = sorted(json.loads(p.read_text())["v"] for p in project.rglob("out.json"))
    assert values == sorted(["it's $(id)", "\u00e9\n2"])


def test_the_local_singularity_mode_without_an_image_names_the_key(tmp_path):
    cfg = _project(tmp_path, "log_dir: data\n")
    with pytest.raises(ConfigError) as ei:
        cfg.backend("local_singularity")
    msg = str(ei.value)
    assert "simg_path.local_singularity" in msg and "chester.yaml" in msg
    assert "local_singularity" not in cfg.backend_names()
    cfg = _project(tmp_path / "b", "simg_path: {singularity: /i.sif}\n")
    b = cfg.backend("singularity")
    assert b.type == "local" and b.options.simg_path == "/i.sif" and b.options.use_singularity
    assert "singularity" in cfg.backend_names()
