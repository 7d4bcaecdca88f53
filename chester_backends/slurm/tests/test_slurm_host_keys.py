"""The login host is reached as the user's ``ssh`` reaches it: its key is checked against the
known-hosts file the user's ssh_config names. Between two launches the login host's sshd is
given another key (an impostor): the second launch is refused in one line before anything
is sent (the sshd log shows no login), and so is ``chester status`` of the first sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from chester_testinfra.sshd import new_host_key, public_key

from chester.errors import BackendError
from chester.launcher import launch
from chester.testing import ConformanceEnv

cloudpickle.register_pickle_by_value(sys.modules[__name__])
CHESTER = str(Path(sys.executable).parent / "chester")


def fn_token(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    with open(_o.path.join(log_dir, "token.txt"), "w") as f:
        f.write(_o.environ.get("MY_TOKEN", "absent"))
    _t.sleep(variant.get("sleep", 0))


@pytest.fixture
def login(login_host):
    try:
        yield login_host
    finally:
        login_host.restore_host_key()


def test_a_login_host_with_a_changed_key_is_refused_before_anything_is_sent(
        tmp_path, slurm_local, login, make_config, monkeypatch):
    token = f"tok-{time.time_ns()}"
    monkeypatch.setenv("MY_TOKEN", token)
    cfg = login.strict_config(tmp_path / "ssh", alias="cluster", policy="yes")
    remote = tmp_path / "remote"
    config = make_config(remote_dir=str(remote), secrets=["MY_TOKEN"])
    config["backends"]["slurm"].update(host="cluster", ssh_config=str(cfg))
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=config)
    first = launch(fn_token, [{"sleep": 60}], backend="slurm", exp_prefix="first",
                   config=env.config)
    token_file = Path(first.runs[0].remote_dir) / "token.txt"
    deadline = time.monotonic() + 90
    while not token_file.exists():  # the genuine cluster's job has the secret and goes on
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert token_file.read_text() == token

    login.serve_host_key(new_host_key(tmp_path / "impostor" / "host_ed25519"))
    before = login.accepted_connections()
    with pytest.raises(BackendError) as ei:
        launch(fn_token, [{"i": 1}], backend="slurm", exp_prefix="second", config=env.config)
    msg = str(ei.value)
    kh = tmp_path / "ssh" / "known_hosts"
    assert "\n" not in msg and msg.startswith("ssh backend 'slurm' (root@127.0.0.1:"), msg
    assert f"the host key of {login.known_name} has CHANGED, so nothing was sent" in msg
    assert f"key in {kh}:1" in msg and f"ssh-keygen -f {kh} -R" in msg
    assert login.accepted_connections() == before
    assert not any(p.name.startswith(("1_second", "2_second")) for p in remote.rglob("*"))
    # a fresh `chester status` (nothing cached) refuses the impostor's answers too
    st = subprocess.run([CHESTER, "status", "first", "--json"], cwd=env.project,
                        env={**os.environ, **slurm_local.env,
                             "CHESTER_CONFIG_PATH": str(env.project / "chester.yaml")},
                        capture_output=True, text=True, timeout=120)
    assert st.returncode != 0, st.stdout + st.stderr
    assert "has CHANGED" in st.stderr and login.accepted_connections() == before
    # the user accepts the new key on purpose: the cluster is reached again
    kh.write_text(f"{login.known_name} {public_key(login.host_key)}\n")
    first.cancel()
