"""The lab's login host is reached as the user's ``ssh`` reaches it: its key is checked
against the known-hosts file the user's ssh_config names. Between two launches the login
host's sshd is given another key (an impostor): the second launch, and the status of the
first, are refused in one line before anything is sent (the sshd log shows no login)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import yaml
from chester_testinfra.gpulab import make_project
from chester_testinfra.sshd import new_host_key, public_key

from chester.config import load_config
from chester.errors import BackendError
from chester.launcher import launch

cloudpickle.register_pickle_by_value(sys.modules[__name__])
CHESTER = str(Path(sys.executable).parent / "chester")


def fn_token(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    with open(_o.path.join(log_dir, "token.txt"), "w") as f:
        f.write(_o.environ.get("MY_TOKEN", "absent"))
    _t.sleep(variant.get("sleep", 0))


def test_a_login_host_with_a_changed_key_is_refused_before_anything_is_sent(
        tmp_path, gpu_lab, monkeypatch):
    lab = gpu_lab
    login = lab.login
    token = f"tok-{time.time_ns()}"
    monkeypatch.setenv("MY_TOKEN", token)
    cfg = login.strict_config(tmp_path / "ssh", alias="lab-login", policy="yes")
    project, _, remote = make_project(tmp_path, lab, secrets=["MY_TOKEN"])
    conf = yaml.safe_load((project / "chester.yaml").read_text())
    conf["backends"]["lab"].update(host="lab-login", ssh_config=str(cfg))
    (project / "chester.yaml").write_text(yaml.safe_dump(conf))
    config = load_config(project / "chester.yaml")
    try:
        first = launch(fn_token, [{"sleep": 60}], backend="lab", exp_prefix="first",
                       config=config)
        token_file = Path(first.runs[0].remote_dir) / "token.txt"
        deadline = time.monotonic() + 60
        # the genuine lab's run has the secret and goes on (the file is there as the run
        # opens it, its text once the run closes it)
        while not (token_file.exists() and token_file.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert token_file.read_text() == token

        login.serve_host_key(new_host_key(tmp_path / "impostor" / "host_ed25519"))
        before = login.accepted_connections()
        with pytest.raises(BackendError) as ei:
            launch(fn_token, [{"i": 1}], backend="lab", exp_prefix="second", config=config)
        msg = str(ei.value)
        kh = tmp_path / "ssh" / "known_hosts"
        assert "\n" not in msg and msg.startswith("ssh backend 'lab' (root@127.0.0.1:"), msg
        assert f"the host key of {login.known_name} has CHANGED, so nothing was sent" in msg
        assert f"key in {kh}:1" in msg and f"ssh-keygen -f {kh} -R" in msg
        assert login.accepted_connections() == before
        assert not any("second" in p.name for p in remote.rglob("*"))
        st = subprocess.run([CHESTER, "status", "first", "--json"], cwd=project,
                            env={**os.environ,
                                 "CHESTER_CONFIG_PATH": str(project / "chester.yaml")},
                            capture_output=True, text=True, timeout=120)
        assert st.returncode != 0, st.stdout + st.stderr
        assert "has CHANGED" in st.stderr and login.accepted_connections() == before
        # the user accepts the new key on purpose: the lab is reached again
        kh.write_text(f"{login.known_name} {public_key(login.host_key)}\n")
        assert first.status()[first.runs[0].name].value == "running"
        first.cancel()
    finally:
        login.restore_host_key()
