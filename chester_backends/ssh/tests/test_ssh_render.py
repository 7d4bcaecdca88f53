"""Rendering, option validation and the seed's keys: no SSH needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chester_backend_ssh import plugin

from chester.config import load_config
from chester.errors import ConfigError, UserError
from chester.remote import runtime
from chester.remote.ssh import SSHTarget, Transport
from chester.testing import check_golden
from chester.types import RunSpec

GOLDEN = Path(__file__).parent / "golden"


def _cfg(tmp_path: Path, data: dict):
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    (project / "chester.yaml").write_text(yaml.safe_dump(data))
    return load_config(project / "chester.yaml")


def _golden(name: str, text: str) -> None:
    check_golden(GOLDEN / name, text)


def test_parse_targets():
    assert SSHTarget.parse("gpu1") == SSHTarget(host="gpu1")
    assert SSHTarget.parse("me@box") == SSHTarget(host="box", user="me")
    assert SSHTarget.parse("me@10.0.0.2:2200") == SSHTarget(host="10.0.0.2", user="me", port=2200)
    t = SSHTarget.parse("box", user="u", port=23, key_filename="/k")
    assert (t.user, t.port, t.key_filename) == ("u", 23, "/k")
    assert SSHTarget.parse("x@box:1", user="u", port=2).user == "x"
    with pytest.raises(ValueError):
        SSHTarget.parse("a b")


def test_seed_keys_map_onto_the_ssh_backend(tmp_path):
    cfg = _cfg(tmp_path, {"ssh_hosts": ["gpu1"], "host_address": {"gpu1": "me@10.1.2.3"},
                          "remote_dir": {"gpu1": "/home/me/proj"}})
    b = cfg.backend("gpu1")
    assert b.type == "ssh"
    assert (b.options.host, b.options.remote_dir) == ("me@10.1.2.3", "/home/me/proj")


def test_bad_options_are_one_line(tmp_path):
    cfg = _cfg(tmp_path, {"backends": {"b": {"type": "ssh", "host": "h", "remote_dir": "/r",
                                              "max_paralel": 2}}})
    with pytest.raises(ConfigError) as ei:
        cfg.backend("b")
    assert "max_parallel" in str(ei.value)
    cfg = _cfg(tmp_path, {"backends": {"b": {"type": "ssh", "host": "h"}}})
    with pytest.raises(ConfigError) as ei:
        cfg.backend("b")
    assert "remote_dir" in str(ei.value)
    cfg = _cfg(tmp_path, {"backends": {"b": {"type": "ssh", "host": "h", "remote_dir": "/r",
                                              "package_manager": "pipx"}}})
    with pytest.raises(ConfigError):
        cfg.backend("b")


def test_rendered_scripts_match_golden(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "never-rendered")
    cfg = _cfg(tmp_path, {
        "package_manager": "uv", "prepare_commands": ["module load cuda"],
        "rsync_include": ["data/keep/"], "rsync_exclude": ["data/", "*.ckpt"],
        "backends": {"gpu1": {
            "type": "ssh", "host": "me@gpu1:2222", "remote_dir": "/home/me/my proj",
            "python": "/opt/py/bin/python3", "max_parallel": 2, "gpus": ["0", "3"],
            "env": {"WANDB_MODE": "offline", "ODD": "it's $(x) `y`"},
            "prepare_commands": ["ulimit -n 4096"], "secrets": ["HF_TOKEN"]}}})
    b = cfg.backend("gpu1")
    runs = [RunSpec(run_id=i, token=f"tok{i}", name=f"{i}_r", exp_prefix="exp",
                    local_dir=cfg.project_path / "data" / "train" / "exp" / f"{i}_r",
                    remote_dir=f"/home/me/my proj/data/train/exp/{i}_r") for i in (1, 2)]
    for r in runs:
        r.local_dir.mkdir(parents=True)
    prep = plugin.chester_prepare(backend=b, runs=runs, staging_dir=tmp_path / "stage")
    rt, digest = runtime.build().name, runtime.build().digest
    _golden("submit.sh", prep.scripts["submit.sh"].replace(rt, "RUNTIME.pyz"))
    _golden("probe.sh", prep.scripts["probe.sh"].replace(rt, "RUNTIME.pyz")
            .replace(digest, "DIGEST"))
    _golden("env.sh", prep.scripts["env.sh"])
    rsync = prep.scripts["rsync"].replace(str(cfg.project_path), "PROJECT")
    _golden("rsync.txt", rsync + "\n")
    assert "never-rendered" not in "".join(prep.scripts.values())
    assert "2 runs on me@gpu1:2222" in prep.summary
    assert "code: up to 1 files" in prep.summary  # chester.yaml; data/ is the log dir
    # the rendered shell is valid
    for name in ("submit.sh", "env.sh", "probe.sh"):
        subprocess.run(["bash", "-n"], input=prep.scripts[name], text=True, check=True)
    subprocess.run(["sh", "-n"], input=prep.scripts["env.sh"], text=True, check=True)


def test_missing_secret_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    cfg = _cfg(tmp_path, {"backends": {"b": {"type": "ssh", "host": "h", "remote_dir": "/r",
                                              "secrets": ["NOPE_SECRET"]}}})
    b = cfg.backend("b")
    r = RunSpec(run_id=1, token="t", name="n", exp_prefix="e", local_dir=tmp_path / "x",
                remote_dir="/r/x")
    with pytest.raises(UserError) as ei:
        plugin.chester_prepare(backend=b, runs=[r], staging_dir=tmp_path / "s")
    assert "NOPE_SECRET" in str(ei.value)


def test_commands_and_rsync_ride_the_connection_with_the_same_options():
    tr = Transport(SSHTarget(host="box", user="me", port=2200, key_filename="/k",
                             ssh_config="/cfg", connect_timeout=4), backend="b")
    argv = tr._client_argv("/ctl/m")
    assert argv[:9] == ["ssh", "-F", "/cfg", "-p", "2200", "-i", "/k", "-l", "me"]
    joined = " ".join(argv)
    for opt in ("-S /ctl/m", "ControlMaster=no", "BatchMode=yes", "ConnectTimeout=4",
                "ServerAliveInterval=2", "ClearAllForwardings=yes", "RemoteCommand=none"):
        assert opt in joined
    # nothing here may weaken the host key check the user's ssh_config asks for
    assert "StrictHostKeyChecking" not in joined and "KnownHostsFile" not in joined
    tr.close()


def test_import_is_light():
    code = ("import sys, chester_backend_ssh.plugin, chester_backend_ssh.options; "
            "print(any(m in sys.modules for m in ('fabric', 'paramiko', 'invoke')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_target_calls_use_the_package_manager(tmp_path):
    cfg = _cfg(tmp_path, {"package_manager": "conda", "conda_env": "ml",
                          "backends": {"b": {"type": "ssh", "host": "h", "remote_dir": "/r"}}})
    argv = plugin.target_argv(cfg.backend("b"), ["status", "-"])
    assert argv[:2] == ["sh", "-c"] and 'conda shell.posix activate ml' in argv[2]
    # the host needs no chester: the tool runs from the runtime shipped under remote_dir
    rt = runtime.build()
    assert argv[-5:] == ["python3", f"/r/.chester/runtime/{rt.name}", "target", "status", "-"]
