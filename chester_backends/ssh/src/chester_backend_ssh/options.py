"""Options of the ``ssh`` backend (no heavy imports here: ``chester plugins list`` loads it)."""

from __future__ import annotations

import attrs

from chester.remote.options import ContainerOptions, EnvOptions, SecretsOptions


def _positive(inst: object, attr: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attr.name} must be at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class SSHOptions(EnvOptions, SecretsOptions, ContainerOptions):
    """Options of the ``ssh`` backend. One backend is one host.

    ``python``, ``package_manager``, ``prepare_commands``, ``prepare_script``, ``env``,
    ``secrets`` and ``container`` are the remote layer's (:mod:`chester.remote.options`):
    they mean the same on every backend."""

    host: str = attrs.field(metadata={
        "help": "~/.ssh/config alias, host, user@host or user@host:port"})
    remote_dir: str = attrs.field(metadata={
        "help": "project root on the host; code is synced here and run folders live under it"})
    max_parallel: int | None = attrs.field(default=None, validator=_positive, metadata={
        "help": "runs at once on the host (default: one per GPU in `gpus`, else 1)"})
    gpus: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "GPU ids to hand out, one per slot, as CUDA_VISIBLE_DEVICES"})
    sync: bool = attrs.field(default=True, metadata={
        "help": "rsync the project to remote_dir before each launch"})
    extra_sync_dirs: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "more local folders to sync (relative to the project: same place under "
                "remote_dir; absolute: the same path on the host)"})
    ssh_config: str | None = attrs.field(default=None, metadata={
        "help": "ssh_config file to use instead of ~/.ssh/config"})
    key_filename: str | None = attrs.field(default=None, metadata={
        "help": "private key file (default: ssh_config, the agent, ~/.ssh/id_*)"})
    port: int | None = attrs.field(default=None, metadata={"help": "SSH port (default 22)"})
    user: str | None = attrs.field(default=None, metadata={"help": "login name on the host"})
    connect_timeout: float = attrs.field(default=10.0, metadata={
        "help": "seconds before a dead or blackholed host is reported"})
