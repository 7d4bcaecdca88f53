"""The ``seuss`` preset: registered, SLURM with seuss's defaults, overridable by seed keys."""


from chester_backend_seuss.plugin import DEFAULTS, SeussOptions

from chester.config import load_config
from chester.plugins import build_plugin_manager
from chester.types import RunSpec


def test_registered_with_its_defaults():
    mgr = build_plugin_manager()
    entry = mgr.get_backend("seuss")
    assert entry.spec.options_cls is SeussOptions
    assert entry.spec.capabilities.supports_arrays
    opts = SeussOptions()
    for key, value in DEFAULTS.items():
        assert getattr(opts, key) == value


def test_seed_keys_override_the_preset(tmp_path):
    (tmp_path / ".git").mkdir()
    cfg_path = tmp_path / "chester.yaml"
    cfg_path.write_text(
        "host_address: {seuss: me@login.example.edu}\n"
        "remote_dir: {seuss: /home/me/proj}\n"
        "modules: {seuss: [apptainer]}\n"
        "cuda_module: {seuss: cuda/99}\n"
        "simg_path: {seuss: /images/x.sif}\n"
        "remote_mount_option: {seuss: /data}\n"
        "remote_header: {seuss: \"#!/bin/bash\\n#SBATCH --partition=mine\\n\"}\n")
    backend = load_config(cfg_path).backend("seuss", build_plugin_manager())
    o = backend.options
    assert (o.host, o.remote_dir) == ("me@login.example.edu", "/home/me/proj")
    assert o.modules == ("apptainer",) and o.cuda_module == "cuda/99"
    assert o.simg_path == "/images/x.sif" and o.remote_mount_option == ("/data",)
    from chester_backend_slurm.plugin import chester_prepare

    run = RunSpec(run_id=1, token="t1", name="1_x", exp_prefix="x", local_dir=tmp_path / "r",
                  remote_dir="/home/me/proj/data/train/x/1_x", resources={"gpus": 1})
    script = chester_prepare(backend, [run], tmp_path / "stage").scripts["job-0.sbatch"]
    assert "#SBATCH --partition=mine" in script
    assert "--partition={}".format(DEFAULTS.get("partition")) not in script
    assert "module load apptainer" in script and "module load cuda/99" in script
