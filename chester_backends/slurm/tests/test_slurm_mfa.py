"""A login host that only an OpenSSH ControlMaster can reach (a cluster with MFA): the test
logs in once with a key, opens the master, then removes the key. Every later command and
rsync of a launch — submit, status polls, logs, pull — rides that master: the sshd log
shows the one login, and nothing else could have authenticated."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from chester.errors import BackendError
from chester.launcher import launch
from chester.testing import ConformanceEnv, fn_write_result
from chester.types import State

WAIT = 150


def _mfa_config(tmp_path, host) -> tuple[str, str, str]:
    """An ssh_config whose alias rides a ControlMaster; returns (config, alias, key copy)."""
    key = tmp_path / "onetime_key"
    shutil.copy(host.key, key)
    key.chmod(0o600)
    ctl = tmp_path / "cm"
    ctl.symlink_to(tempfile.mkdtemp(prefix="cm", dir="/tmp"))  # a socket path must be short
    alias = "mfa-login"
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"""Host {alias}
  HostName {host.address}
  Port {host.port}
  User {host.user}
  IdentityFile {key}
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  ControlMaster auto
  ControlPath {ctl.resolve()}/%C
  ControlPersist yes
""")
    return str(cfg), alias, str(key)


def test_a_launch_rides_the_users_control_master(tmp_path, slurm_local, login_host,
                                                 make_config, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent to fall back on
    cfg, alias, key = _mfa_config(tmp_path, login_host)
    before = login_host.accepted_connections()
    subprocess.run(["ssh", "-F", cfg, "-fN", alias], check=True, timeout=30,
                   stdin=subprocess.DEVNULL)
    try:
        assert login_host.accepted_connections() == before + 1
        os.remove(key)  # from now on only the master can get in
        from chester.remote.ssh import SSHTarget, Transport

        probe = Transport(SSHTarget.parse(alias, ssh_config=cfg), backend="slurm")
        assert probe.user_master() is not None
        probe.close()
        remote = tmp_path / "remote"
        config = make_config(remote_dir=str(remote))
        config["backends"]["slurm"].update(host=alias, ssh_config=cfg)
        env = ConformanceEnv.create(tmp_path, backend="slurm", config=config)
        sweep = launch(fn_write_result, [{"i": 1}, {"i": 2}], backend="slurm",
                       exp_prefix="mfa", config=env.config)
        states = sweep.wait(timeout=WAIT, poll_interval=0.3, progress=False)
        assert set(states.values()) == {State.SUCCEEDED}, [r.reason for r in sweep.runs]
        sweep.pull()
        for r in sweep.runs:
            assert (r.log_dir / "result.json").exists()  # pulled home through the master
        assert login_host.accepted_connections() == before + 1  # one login: the master's
    finally:
        subprocess.run(["ssh", "-F", cfg, "-O", "exit", alias], timeout=30,
                       stdin=subprocess.DEVNULL, capture_output=True)
    # the master gone, nothing can log in: one line that says how to get back in
    from chester.remote.ssh import SSHTarget, Transport

    t = Transport(SSHTarget.parse(alias, ssh_config=cfg), backend="slurm")
    with pytest.raises(BackendError) as exc:
        t.run(["true"])
    t.close()
    assert "\n" not in str(exc.value) and "ssh -fN mfa-login" in str(exc.value)
    assert login_host.accepted_connections() == before + 1


def test_without_a_master_the_transport_opens_its_own(tmp_path, login_host):
    """An ssh_config with a ControlPath but no master up: the transport logs in itself."""
    from chester.remote.ssh import SSHTarget, Transport

    cfg, alias, _key = _mfa_config(tmp_path, login_host)
    t = Transport(SSHTarget.parse(alias, ssh_config=cfg), backend="slurm")
    try:
        assert t.user_master() is None
        assert t.run(["echo", "hi"]).stdout.strip() == "hi"
        assert t.connections_opened == 1
    finally:
        t.close()
