"""Ten fault-injected sweeps: sshd killed and restarted during submit, status and pull, and a
blackholed link during status. Each must end with every run done exactly once and pulled.

The faults are real (the host's sshd and its sessions are SIGKILLed, or nft drops port 22
inside the host's namespace); the tests only choose the moment, through a backend instance
whose transport wraps one method. One case ("lost-reply") also makes the submit report a dropped link after the queue
started, the worst case for a retried submit.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
import yaml
from chester_backend_ssh.plugin import SSHBackend

from chester.config import load_config
from chester.errors import TransientBackendError
from chester.launcher import launch
from chester.plugin.testing import dispatcher_with
from chester.remote.ssh import Transport

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_work(variant, log_dir, exp_name):
    import os as _o
    import time as _t

    with open(_o.path.join(log_dir, "invocations.txt"), "a") as f:
        f.write(f"{_o.getpid()}\n")
    _t.sleep(float(variant.get("sleep", 0.3)))
    with open(_o.path.join(log_dir, "weights.bin"), "wb") as f:
        f.write(_o.urandom(int(variant.get("mb", 0) * 1_000_000)))
    with open(_o.path.join(log_dir, "result.txt"), "w") as f:
        f.write(str(variant["i"]))


CASES = [
    "submit-refused", "submit-lost-reply", "submit-during-script",
    "status-refused", "status-mid-command", "status-mid-command-late",
    "pull-refused", "pull-mid-transfer",
    "blackhole-status", "blackhole-status-mid-session",
]


@pytest.fixture
def host(sshd_hosts):
    try:
        yield sshd_hosts[1]
    finally:
        sshd_hosts.heal()


def _later(seconds: float, fn) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(seconds), fn()), daemon=True)
    t.start()
    return t


class _FaultySSH(SSHBackend):
    """The ssh backend, its transports of class ``transport_cls``."""

    def __init__(self, transport_cls: type[Transport]):
        super().__init__()
        self.transport_cls = transport_cls

    def transport(self, backend):
        return self.transport_cls(super().transport(backend).target, backend=backend.name)


@pytest.mark.parametrize("case", CASES)
def test_fault_injected_sweep(case, tmp_path, sshd_hosts, host):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump({"backends": {"flaky": {
        "type": "ssh", "host": host.alias, "remote_dir": f"/remote/{tmp_path.name}",
        "ssh_config": sshd_hosts.ssh_config, "connect_timeout": 2,
        "max_parallel": 3}}}))
    cfg = load_config(project / "chester.yaml")
    fired = []
    threads = []

    def restart_later(seconds=1.5):
        threads.append(_later(seconds, host.start_sshd))

    def once(name):
        if name in fired:
            return False
        fired.append(name)
        return True

    class Faulty(Transport):
        """Chooses the moment of the case's fault."""

        def put_tree(self, *a, **kw):
            if case == "submit-refused" and once(case):
                host.kill_sshd()
                restart_later()
            return super().put_tree(*a, **kw)

        def run_script(self, *a, **kw):
            if case == "submit-during-script" and once(case):
                threads.append(_later(0.02, host.kill_sshd))
                restart_later(1.5)
            res = super().run_script(*a, **kw)
            if case == "submit-lost-reply" and once(case):
                # the queue started; the reply never arrives
                host.kill_sshd()
                restart_later()
                raise TransientBackendError("ssh backend 'flaky': connection dropped")
            return res

        def run(self, argv, **kw):
            if case in ("status-mid-command", "status-mid-command-late",
                        "blackhole-status-mid-session") and "status" in argv and once(case):
                if case == "blackhole-status-mid-session":
                    self.connect()  # the connection is up; then the link goes dark
                    host.blackhole()
                    threads.append(_later(5, host.unblackhole))
                else:
                    threads.append(_later(0.03 if case == "status-mid-command" else 0.12,
                                          host.kill_sshd))
                    restart_later(1.5)
            return super().run(argv, **kw)

        def rsync_pull(self, *a, **kw):
            if case in ("pull-refused", "pull-mid-transfer") and once(case):
                if case == "pull-refused":
                    host.kill_sshd()
                else:
                    threads.append(_later(0.15, host.kill_sshd))
                restart_later(1.5 if case == "pull-refused" else 2.0)
            return super().rsync_pull(*a, **kw)

    disp = dispatcher_with(_FaultySSH(Faulty), "ssh",
                           sleep=lambda s: time.sleep(min(s, 1.0)), attempts=8)

    n = 3
    mb = 8 if case == "pull-mid-transfer" else 0
    sw = launch(fn_work, [{"i": i, "mb": mb} for i in range(n)], backend="flaky",
                exp_prefix=f"fault-{case}", config=cfg, dispatcher=disp)
    if case == "status-refused":
        host.kill_sshd()
        restart_later(2.0)
    elif case == "blackhole-status":
        host.blackhole()
        threads.append(_later(5, host.unblackhole))
    states = sw.wait(timeout=120, poll_interval=0.3, progress=False, pull=True)
    for t in threads:
        t.join(10)
    assert case in fired or case in ("status-refused", "blackhole-status"), "fault not injected"
    assert [s.value for s in states.values()] == ["succeeded"] * n, states
    lost = dup = unpulled = 0
    for run in sw.runs:
        remote = host.local_dir / run.remote_dir[len("/remote/"):]
        inv = remote / "invocations.txt"
        count = inv.read_text().count("\n") if inv.exists() else 0
        lost += count == 0
        dup += count > 1
        local = Path(run.log_dir)
        unpulled += not ((local / "result.txt").exists() and (local / ".done").exists()
                         and (local / "invocations.txt").read_text().count("\n") == 1)
        if mb:
            assert (local / "weights.bin").stat().st_size == mb * 1_000_000
    assert (lost, dup, unpulled) == (0, 0, 0)
    # and a second pull transfers nothing
    assert sum(r.files for r in sw.pull()) == 0
    print(json.dumps({"case": case, "lost": lost, "duplicated": dup, "unpulled": unpulled}))


def test_blackhole_during_a_long_command_fails_in_seconds(sshd_hosts, host):
    from chester.remote.ssh import SSHTarget

    tr = Transport(SSHTarget(host=host.alias, ssh_config=sshd_hosts.ssh_config,
                             connect_timeout=2), backend="flaky")
    with tr:
        assert tr.run(["echo", "up"]).stdout == "up\n"
        _later(0.5, host.blackhole)
        t0 = time.monotonic()
        with pytest.raises(TransientBackendError) as ei:
            tr.run(["sleep", "60"])
        took = time.monotonic() - t0
        host.unblackhole()
        assert took < 15, took
        assert "stopped answering" in str(ei.value) and "\n" not in str(ei.value)
        # the same transport reconnects once the link is back
        assert tr.run(["echo", "back"]).stdout == "back\n"
        assert tr.connections_opened == 2
