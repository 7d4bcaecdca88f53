"""Options of the ``ssh`` backend (no heavy imports here: ``chester plugins list`` loads it)."""

from __future__ import annotations

import attrs


def _check_pm(inst: object, attr: attrs.Attribute, value: str | None) -> None:
    if value is not None and value not in ("uv", "conda", "python"):
        raise ValueError(f"package_manager must be uv, conda or python, not {value!r}")


@attrs.frozen(kw_only=True)
class SSHOptions:
    """Options of the ``ssh`` backend. One backend is one host."""

    host: str = attrs.field(metadata={
        "help": "~/.ssh/config alias, host, user@host or user@host:port"})
    remote_dir: str = attrs.field(metadata={
        "help": "project root on the host; code is synced here and run folders live under it"})
    python: str = attrs.field(default="python3", metadata={
        "help": "Python on the host (chester must be importable by it)"})
    package_manager: str | None = attrs.field(default=None, validator=_check_pm, metadata={
        "help": "uv, conda or python (default: the top-level package_manager)"})
    prepare_commands: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "shell lines run before each run on this host (after the top-level ones)"})
    prepare_script: str | None = attrs.field(default="prepare.sh", metadata={
        "help": "file under remote_dir sourced before each run when it exists"})
    env: dict[str, str] = attrs.field(factory=dict, metadata={
        "help": "environment variables for the runs on this host"})
    secrets: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "names of local environment variables, or paths of local KEY=VALUE files, "
                "whose values reach the runs through a 0600 file deleted once read"})
    max_parallel: int | None = attrs.field(default=None, metadata={
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
