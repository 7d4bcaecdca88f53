"""Options of the ``autobot`` backend (no heavy imports here: ``chester plugins list`` loads it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from chester.remote.options import ContainerOptions, EnvOptions, SecretsOptions, str_tuple


def _positive(inst: object, attr: attrs.Attribute, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attr.name} must be positive, not {value!r}")


def node_name(item: str) -> str:
    """The earlier chester's node ids (``1-1``) are ``autobot-1-1``; names stay as they are."""
    item = str(item).strip()
    return f"autobot-{item}" if item[:1].isdigit() else item


def _nodes(value: object) -> tuple[str, ...]:
    return tuple(node_name(n) for n in str_tuple(value))


def _caps(inst: object, attr: attrs.Attribute, value: Mapping[str, int]) -> None:
    for k, v in value.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"max_gpus.{k} must be a whole number >= 0, not {v!r}")


@attrs.frozen(kw_only=True)
class AutobotOptions(EnvOptions, SecretsOptions, ContainerOptions):
    """Options of the ``autobot`` backend: GPU nodes behind one login host, with a filesystem
    the login host and the nodes share and no SLURM.

    ``python``, ``package_manager``, ``prepare_commands``, ``prepare_script``, ``env``,
    ``secrets`` and ``container`` are the remote layer's (:mod:`chester.remote.options`)."""

    host: str = attrs.field(metadata={
        "help": "the login host: ~/.ssh/config alias, host, user@host or user@host:port"})
    remote_dir: str = attrs.field(metadata={
        "help": "project root on the shared filesystem (the same path on the login host and "
                "every node); code is synced here and run folders live under it"})
    nodes: tuple[str, ...] = attrs.field(converter=_nodes, metadata={
        "help": "GPU nodes, as the login host reaches them with ssh (the earlier chester's "
                "ids such as 1-1 mean autobot-1-1); runs go to the first with free GPUs"})
    max_gpus: Mapping[str, int] = attrs.field(factory=dict, validator=_caps, metadata={
        "help": "per node: at most this many GPUs handed out at once, e.g. {autobot-1-1: 4}"})
    max_gpus_per_node: int | None = attrs.field(default=None, metadata={
        "help": "cap for nodes not in max_gpus (default: every GPU of the node)"})
    gpus_per_run: int = attrs.field(default=1, validator=_positive, metadata={
        "help": "GPUs each run gets, all on one node (a run's `gpus` resource overrides)"})
    free_memory_mib: int | None = attrs.field(default=1024, metadata={
        "help": "a GPU counts as free only with at most this much memory used (MiB; null: "
                "any)"})
    free_needs_no_process: bool = attrs.field(default=True, metadata={
        "help": "a GPU counts as free only with no compute process on it (anyone's)"})
    nvidia_smi: str = attrs.field(default="nvidia-smi", metadata={
        "help": "the nvidia-smi command on the nodes"})
    node_ssh_options: tuple[str, ...] = attrs.field(default=(), converter=str_tuple, metadata={
        "help": "extra ssh arguments the login host uses to reach the nodes, e.g. "
                "['-F', '/home/me/.ssh/lab_config']"})
    node_timeout: float = attrs.field(default=10.0, validator=_positive, metadata={
        "help": "seconds a node has to answer one query before it counts as unreachable"})
    lost_after: float = attrs.field(default=120.0, validator=_positive, metadata={
        "help": "seconds a node may stay unreachable before its runs are reported lost"})
    cycle: float = attrs.field(default=0.5, validator=_positive, metadata={
        "help": "seconds between two looks at the nodes while runs wait"})
    lease_dir: str | None = attrs.field(default=None, metadata={
        "help": "folder on the shared filesystem for GPU leases (default: "
                "<remote_dir>/.chester/autobot/leases); share it between projects so they "
                "never hand out one GPU twice"})
    sync: bool = attrs.field(default=True, metadata={
        "help": "rsync the project to remote_dir before each launch"})
    extra_sync_dirs: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "more local folders to sync (relative: same place under remote_dir)"})
    ssh_config: str | None = attrs.field(default=None, metadata={
        "help": "ssh_config file (on this machine) for the login host"})
    key_filename: str | None = attrs.field(default=None, metadata={
        "help": "private key file for the login host"})
    port: int | None = attrs.field(default=None, metadata={"help": "SSH port of the login host"})
    user: str | None = attrs.field(default=None, metadata={"help": "login name on the login host"})
    connect_timeout: float = attrs.field(default=10.0, metadata={
        "help": "seconds before a dead or blackholed login host is reported"})


def scheduler_config(backend: Any) -> dict[str, Any]:
    """The node settings of an autobot backend (its ``BackendConfig``) that the scheduler
    loop reads (``config.json``; the last submit's)."""
    o: AutobotOptions = backend.options
    return {"ssh_options": list(o.node_ssh_options), "nvidia_smi": o.nvidia_smi,
            "max_gpus": dict(o.max_gpus), "max_gpus_per_node": o.max_gpus_per_node,
            "free_memory_mib": o.free_memory_mib,
            "free_needs_no_process": o.free_needs_no_process,
            "node_timeout": o.node_timeout, "lost_after": o.lost_after, "cycle": o.cycle,
            "lease_dir": o.lease_dir}
