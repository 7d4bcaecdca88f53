"""The slurm backend against chester's conformance suite, submitting through the loopback
sshd acting as the cluster's login host (run folders live in a separate remote folder)."""

import pytest

from chester.testing import BackendConformance, ConformanceEnv


class TestSlurmOverSSH(BackendConformance):
    @pytest.fixture
    def chester_env(self, tmp_path, slurm_local, login_host, make_config):
        remote = tmp_path / "remote"
        return ConformanceEnv.create(
            tmp_path, backend="slurm",
            config=make_config(host=login_host, remote_dir=str(remote)),
            timeout=120, poll_interval=0.3,
            broken_options={"python": "/nonexistent/python3"})


def test_login_host_and_nodes_have_no_chester(tmp_path, slurm_local, login_host, make_config):
    """What the suite above runs against: no `python:` option, and the login host's (and so
    the jobs') python3 has neither chester nor cloudpickle; chester's runtime, shipped under
    remote_dir once, runs every task."""
    from chester.remote import runtime
    from chester.remote.ssh import SSHTarget, Transport

    cfg = make_config(host=login_host, remote_dir=str(tmp_path / "remote"))
    assert "python" not in cfg["backends"]["slurm"]
    target = SSHTarget.parse(login_host.alias, ssh_config=login_host.ssh_config)
    with Transport(target, backend="slurm") as tr:
        for module in ("chester", "cloudpickle"):
            res = tr.run(["python3", "-c", f"import {module}"], check=False)
            assert res.exit_code != 0 and f"No module named '{module}'" in res.stderr
    env = ConformanceEnv.create(tmp_path, backend="slurm", config=cfg, timeout=120,
                                poll_interval=0.3)
    from chester.launcher import launch
    from chester.testing import fn_write_result

    sweep = launch(fn_write_result, [{"i": 1}, {"i": 2}], backend="slurm", exp_prefix="bare",
                   config=env.config)
    states = sweep.wait(timeout=120, poll_interval=0.3, progress=False)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    on_cluster = tmp_path / "remote" / ".chester" / "runtime" / runtime.build().name
    assert on_cluster.read_bytes() == runtime.build().path.read_bytes()
