"""pytest fixtures that start real servers for the session and stop them (by pid) at its end.

Loaded through the package's ``pytest11`` entry point (and by the repo-root ``conftest.py``).
Each fixture skips when what it needs is missing (binaries, root) — or fails when ``CI=true``,
so CI never skips silently.

``sshd_hosts``           :class:`chester_testinfra.sshd.SshHosts` — 2 hosts in network namespaces
``sshd_loopback``        :class:`chester_testinfra.sshd.SshHost` — sshd on 127.0.0.1:<free port>
``slurm_factory``        :class:`chester_testinfra.slurm.SlurmFactory` — ``.get(max_array_size=,
                         accounting=, cpus=)`` → a running cluster with that config
``slurm_cluster``        :class:`chester_testinfra.slurm.SlurmCluster` — with accounting (slurmdbd),
                         ``MaxArraySize=11``
``slurm_cluster_noacct`` the same without accounting (``accounting_storage/none``)
``aws_endpoint``         :class:`chester_testinfra.aws.AwsEndpoint` — moto server on 127.0.0.1
``gpu_lab``              :class:`chester_testinfra.gpulab.GpuLab` — the loopback login host plus the
                         ``sshd_hosts`` as GPU nodes with a stand-in ``nvidia-smi``
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from . import InfraUnavailable, skip_or_fail, stopped_at_end
from .aws import AwsEndpoint, start_aws
from .gpulab import GpuLab, write_nvidia_smi
from .slurm import DEFAULT_MAX_ARRAY_SIZE, SlurmCluster, SlurmFactory
from .sshd import SshHost, SshHosts, make_keys, start_loopback_host, start_netns_hosts

# markers, the xdist group of the SLURM tests, the CI skip check (see suite.py)
pytest_plugins = ["chester_testinfra.suite"]

# start-up times of this session's servers, in seconds (printed at the end with -v)
TIMINGS: dict[str, float] = {}


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (a CI timeout, a killed run) would end the process without the fixtures'
    # teardown; turn it into KeyboardInterrupt so the servers are stopped and the
    # namespaces removed. Left alone when someone else installed a handler.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        try:
            signal.signal(signal.SIGTERM, _interrupt)
        except ValueError:  # not in the main thread
            pass


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if TIMINGS and config.getoption("verbose") > 0:
        terminalreporter.write_line(
            "test servers started in: " +
            ", ".join(f"{k} {v:.2f}s" for k, v in TIMINGS.items()))


def _start(what: str, fn, *args, **kw):
    """Call a start function; missing pieces skip (or fail under CI), timing recorded."""
    t0 = time.monotonic()
    try:
        out = fn(*args, **kw)
    except InfraUnavailable as e:
        skip_or_fail(f"{what}: {e}")
        raise  # not reached
    TIMINGS[what] = time.monotonic() - t0
    return out


@pytest.fixture(scope="session")
def _ssh_keys(tmp_path_factory):
    if os.geteuid() != 0:
        skip_or_fail("ssh hosts need root")
    return make_keys(tmp_path_factory.mktemp("sshkeys"))


@pytest.fixture(scope="session")
def sshd_hosts(tmp_path_factory, _ssh_keys) -> Iterator[SshHosts]:
    """Two SSH hosts ``chost1``/``chost2``, each a network namespace with its own address
    (10.253.K.2, port 22), hostname and private ``/remote``; key-only root login.

    Tests that inject faults should undo them (``sshd_hosts.heal()``).
    """
    hosts = _start("sshd_hosts", start_netns_hosts, tmp_path_factory.mktemp("sshd_hosts"),
                   2, keys=_ssh_keys)
    with stopped_at_end(hosts.stop):
        yield hosts


@pytest.fixture(scope="session")
def sshd_loopback(tmp_path_factory, _ssh_keys) -> Iterator[SshHost]:
    """A key-only sshd on 127.0.0.1:<free port>, alias ``loopback``; its ``remote_dir`` is a
    temp folder (the filesystem is this machine's)."""
    host = _start("sshd_loopback", start_loopback_host,
                  tmp_path_factory.mktemp("sshd_loopback"), keys=_ssh_keys)
    with stopped_at_end(host.stop):
        yield host


@pytest.fixture(scope="session")
def slurm_factory(tmp_path_factory) -> Iterator[SlurmFactory]:
    """Starts single-node SLURM clusters on demand: ``slurm_factory.get(max_array_size=5)``.
    Each config is started once and kept until the end of the session."""
    factory = SlurmFactory(tmp_path_factory.mktemp("slurm"))
    try:
        with stopped_at_end(factory.stop):
            yield factory
    finally:  # with the stop's own timings
        TIMINGS.update({f"slurm {k}": v for k, v in factory.timings.items()})


def _cluster(factory: SlurmFactory, what: str, **kw) -> SlurmCluster:
    return _start(what, factory.get, **kw)


@pytest.fixture(scope="session")
def slurm_cluster(slurm_factory) -> SlurmCluster:
    """SLURM with slurmdbd accounting (real ``sacct``), ``MaxArraySize=11``, ``CPUs=8``."""
    return _cluster(slurm_factory, "slurm_cluster", max_array_size=DEFAULT_MAX_ARRAY_SIZE,
                    accounting=True)


@pytest.fixture(scope="session")
def slurm_cluster_noacct(slurm_factory) -> SlurmCluster:
    """SLURM without accounting (``accounting_storage/none``), ``MaxArraySize=11``."""
    return _cluster(slurm_factory, "slurm_cluster_noacct",
                    max_array_size=DEFAULT_MAX_ARRAY_SIZE, accounting=False)


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[AwsEndpoint]:
    """moto's server on 127.0.0.1:<free port>. Merge ``aws_endpoint.env`` into the
    environment of the code under test; ``aws_endpoint.reset()`` wipes its state."""
    try:
        import moto.server  # noqa: F401
    except ImportError as e:
        skip_or_fail(f"moto[server] is not installed: {e}")
    ep = _start("aws_endpoint", start_aws)
    with stopped_at_end(ep.stop):
        yield ep


@pytest.fixture
def gpu_lab(tmp_path, sshd_loopback, sshd_hosts) -> Iterator[GpuLab]:
    """A login host (``sshd_loopback``) and GPU nodes (``sshd_hosts``) sharing ``tmp_path``;
    each node starts with 4 free stand-in GPUs."""
    state = tmp_path / "gpu-state"
    smi = write_nvidia_smi(tmp_path / "bin", state)
    lab = GpuLab(login=sshd_loopback, hosts=sshd_hosts, nvidia_smi=smi, state_dir=state,
                 shared=tmp_path)
    for node in lab.nodes:
        lab.free_gpus(node, 4)
    yield lab
    sshd_hosts.heal()


@pytest.fixture
def local_env(tmp_path, monkeypatch):
    """A project in ``tmp_path`` whose one backend is ``local`` with 2 slots
    (a ``chester.plugin.testing.ConformanceEnv``), and a slots folder of its own."""
    from chester.plugin.testing import ConformanceEnv

    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    return ConformanceEnv.create(tmp_path, backend="local",
                                 config={"backends": {"local": {"type": "local",
                                                                "max_parallel": 2}}})
