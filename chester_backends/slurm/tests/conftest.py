"""Real servers for the SLURM tests, from chester_testinfra (its pytest plugin):
``slurm_local`` is a single-node SLURM on loopback with accounting and a small MaxArraySize
(``slurm_factory``), ``login_host`` the loopback sshd that acts as its login host
(``sshd_loopback``). Both are started for the session and stopped by pid at its end.
"""

from __future__ import annotations

import os

import attrs
import pytest
from chester_testinfra import InfraUnavailable, skip_or_fail
from chester_testinfra.slurm import SlurmFactory
from chester_testinfra.sshd import SshHost

SMALL_MAX_ARRAY_SIZE = 5


@attrs.define
class SlurmCluster:
    """The cluster the tests submit to; ``env`` is what its clients need (``SLURM_CONF``),
    ``factory`` starts clusters of another config (chester_testinfra's ``SlurmFactory``)."""

    max_array_size: int
    accounting: bool
    env: dict
    factory: SlurmFactory

    @classmethod
    def get(cls, factory: SlurmFactory, **config) -> SlurmCluster:
        """The factory's running cluster with that config (skips when SLURM is missing)."""
        try:
            c = factory.get(**config)
        except InfraUnavailable as e:
            skip_or_fail(f"slurm: {e}")
            raise  # not reached
        return cls(max_array_size=c.max_array_size, accounting=c.accounting, env=dict(c.env),
                   factory=factory)

    def environ(self) -> dict:
        return {**os.environ, **self.env}

    def without_accounting(self) -> SlurmCluster:
        """A cluster like this one without accounting: another cluster of the factory, so
        this one is left as it is."""
        return SlurmCluster.get(self.factory, max_array_size=self.max_array_size,
                                accounting=False)

    def restore(self) -> None:
        """Undo :meth:`without_accounting`: nothing to do, it changed no cluster."""


@pytest.fixture(scope="session")
def slurm_local(slurm_factory) -> SlurmCluster:
    """A running single-node SLURM with accounting and ``MaxArraySize`` 5."""
    return SlurmCluster.get(slurm_factory, max_array_size=SMALL_MAX_ARRAY_SIZE,
                            accounting=True)


@pytest.fixture(scope="session")
def login_host(sshd_loopback) -> SshHost:
    """A key-only sshd on 127.0.0.1 in front of the SLURM: the cluster's login host."""
    return sshd_loopback


@pytest.fixture
def make_config(slurm_local):
    """Build a chester.yaml mapping with one backend ``slurm`` (see :func:`slurm_config`)."""
    def make(**kw):
        kw.setdefault("scheduler_env", slurm_local.env)
        return slurm_config(**kw)
    return make


def slurm_config(*, host: SshHost | None = None, remote_dir: str | None = None,
                 **options) -> dict:
    """A chester.yaml mapping with one backend ``slurm``."""
    if not options.get("scheduler_env"):
        options.pop("scheduler_env", None)
    opts = {"type": "slurm", "poll_interval": 0.3, **options}
    if host is not None:
        opts.update(host=host.alias, ssh_config=host.ssh_config)
    if remote_dir is not None:
        opts["remote_dir"] = remote_dir
    return {"backends": {"slurm": opts}}
