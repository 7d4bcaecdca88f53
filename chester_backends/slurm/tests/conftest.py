"""Real servers for the SLURM tests: a single-node SLURM on loopback and a loopback sshd that
acts as the login host. Started by the suite, stopped by pid at the end.

The recipes are the tested ones of ``/work/shared/reference/infra.md`` (§1, §2), copied next
to this file. A SLURM that is already running is used as it is and left running.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import attrs
import pytest

HERE = Path(__file__).parent
PY = str(Path(__import__("sys").executable))
SMALL_MAX_ARRAY_SIZE = 5


def _missing(*exes: str) -> str | None:
    for e in exes:
        if not (shutil.which(e) or Path(e).exists()):
            return e
    return None


def _skip_or_fail(msg: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _running(pidfile: str) -> bool:
    try:
        pid = int(Path(pidfile).read_text().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def scontrol_config() -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    conf = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            conf[k.strip()] = v.strip()
    return conf


@attrs.define
class SlurmCluster:
    """The cluster the tests submit to; ``env`` is what its clients need (``SLURM_CONF``)."""

    max_array_size: int
    accounting: bool
    started: bool
    env: dict = attrs.Factory(dict)
    factory: object = None  # tests/infra's SlurmFactory, when that is what started it

    def environ(self) -> dict:
        return {**os.environ, **self.env}

    def without_accounting(self) -> SlurmCluster:
        """A cluster like this one without accounting (another one, or this one restarted;
        call :meth:`restore` afterwards)."""
        if self.factory is not None:
            c = self.factory.get(max_array_size=self.max_array_size, accounting=False)
            return SlurmCluster(max_array_size=c.max_array_size, accounting=False,
                                started=True, env=dict(c.env))
        if not self.started:
            pytest.skip("the SLURM was started by someone else; not reconfiguring it")
        self._restart(accounting=False)
        return self

    def restore(self) -> None:
        if self.factory is None and not self.accounting:
            self._restart(accounting=True)

    def _restart(self, *, accounting: bool) -> None:
        """Restart slurmctld/slurmd with or without accounting (slurmdbd keeps running)."""
        for p in ("/run/slurmd.pid", "/run/slurmctld.pid"):
            if _running(p):
                os.kill(int(Path(p).read_text().strip()), 15)
        for _ in range(100):
            if not _running("/run/slurmd.pid") and not _running("/run/slurmctld.pid"):
                break
            time.sleep(0.1)
        env = {**os.environ, "SLURM_MAX_ARRAY_SIZE": str(self.max_array_size),
               "WITH_DBD": "1" if accounting else "0"}
        subprocess.run(["bash", str(HERE / "slurm-up.sh")], env=env, check=True,
                       capture_output=True)
        self.accounting = accounting


@pytest.fixture(scope="session")
def slurm_local(request):
    """A running single-node SLURM with accounting and a small MaxArraySize: the session's
    ``slurm_factory`` (tests/infra) when there is one, else the infra.md recipe."""
    try:
        factory = request.getfixturevalue("slurm_factory")
    except pytest.FixtureLookupError:
        factory = None
    if factory is not None:
        c = factory.get(max_array_size=SMALL_MAX_ARRAY_SIZE, accounting=True)
        yield SlurmCluster(max_array_size=c.max_array_size, accounting=True, started=True,
                           env=dict(c.env), factory=factory)
        return
    miss = _missing("slurmctld", "slurmd", "sbatch", "munged", "/usr/sbin/munged")
    if miss and not Path("/usr/sbin/slurmctld").exists():
        _skip_or_fail(f"SLURM is not installed ({miss}); see .ci/install.sh")
    started = False
    if not _running("/run/slurmctld.pid"):
        env = {**os.environ, "SLURM_MAX_ARRAY_SIZE": str(SMALL_MAX_ARRAY_SIZE)}
        p = subprocess.run(["bash", str(HERE / "slurm-up.sh")], env=env, capture_output=True,
                           text=True)
        if p.returncode != 0:
            _skip_or_fail(f"could not start SLURM: {p.stderr[-500:]}")
        started = True
    conf = scontrol_config()
    cluster = SlurmCluster(max_array_size=int(conf.get("MaxArraySize", "1001")),
                           accounting="none" not in conf.get("AccountingStorageType", "none"),
                           started=started)
    yield cluster
    if started:
        subprocess.run(["bash", str(HERE / "slurm-down.sh")], capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.define
class LoginHost:
    dir: Path
    alias: str
    ssh_config: str
    key: str


@pytest.fixture(scope="session")
def login_host(request, tmp_path_factory, slurm_local):
    """A key-only sshd on 127.0.0.1 in front of the SLURM: the cluster's login host
    (tests/infra's ``sshd_loopback`` when there is one)."""
    try:
        h = request.getfixturevalue("sshd_loopback")
    except pytest.FixtureLookupError:
        h = None
    if h is not None:
        yield LoginHost(dir=Path(h.ssh_config).parent, alias=h.alias, ssh_config=h.ssh_config,
                        key=h.key)
        return
    if not Path("/usr/sbin/sshd").exists():
        _skip_or_fail("openssh-server is not installed")
    d = tmp_path_factory.mktemp("login")
    p = subprocess.run(["bash", str(HERE / "sshd-up.sh"), str(d), str(_free_port())],
                       capture_output=True, text=True)
    if p.returncode != 0:
        _skip_or_fail(f"could not start sshd: {p.stderr[-500:]}")
    yield LoginHost(dir=d, alias="testhost", ssh_config=str(d / "ssh_config"),
                    key=str(d / "id_ed25519"))
    try:
        os.kill(int((d / "sshd.pid").read_text().strip()), 15)
    except (OSError, ValueError):
        pass


@pytest.fixture
def make_config(slurm_local):
    """Build a chester.yaml mapping with one backend ``slurm`` (see :func:`slurm_config`)."""
    def make(**kw):
        kw.setdefault("scheduler_env", slurm_local.env)
        return slurm_config(**kw)
    return make


def slurm_config(*, host: LoginHost | None = None, remote_dir: str | None = None,
                 **options) -> dict:
    """A chester.yaml mapping with one backend ``slurm``."""
    if not options.get("scheduler_env"):
        options.pop("scheduler_env", None)
    opts = {"type": "slurm", "python": PY, "poll_interval": 0.3, **options}
    if host is not None:
        opts.update(host=host.alias, ssh_config=host.ssh_config)
    if remote_dir is not None:
        opts["remote_dir"] = remote_dir
    return {"backends": {"slurm": opts}}
