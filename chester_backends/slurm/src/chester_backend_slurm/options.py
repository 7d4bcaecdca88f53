"""Options of the ``slurm`` backend, and option classes for cluster presets.

Imports nothing heavy: ``chester plugins list`` loads this module.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from chester.plugin.errors import UserError
from chester.remote.options import ContainerOptions, EnvOptions, SecretsOptions, str_tuple

#: How a GPU count becomes an ``#SBATCH`` line.
GPU_DIRECTIVES = {
    "gpus": "--gpus={n}",
    "gres": "--gres=gpu:{n}",
    "gpus-per-node": "--gpus-per-node={n}",
    "gpus-per-task": "--gpus-per-task={n}",
}

#: Structured resources, in the order their ``#SBATCH`` lines are written.
RESOURCE_KEYS = ("partition", "time", "nodes", "ntasks_per_node", "gpus", "cpus_per_task",
                 "cpus_per_gpu", "mem", "mem_per_gpu", "account", "qos", "constraint", "exclude",
                 "mail_user", "mail_type")
#: Per-run settings that are not ``#SBATCH`` lines (the seed's run_experiment_lite passes some).
RUN_KEYS = ("sbatch", "use_singularity", "pre_commands", "compile_script", "wait_compile",
            "sync_on_launch", "serial_group")




@attrs.frozen(kw_only=True)
class SlurmOptions(EnvOptions, SecretsOptions, ContainerOptions):
    """Options of the ``slurm`` backend (and of every cluster preset).

    ``python``, ``package_manager``, ``prepare_commands``, ``prepare_script``, ``env``,
    ``secrets`` and ``container`` (with the seed's ``use_singularity``, ``simg_path``,
    ``remote_mount_option``, ``singularity_command``) are the remote layer's
    (:mod:`chester.remote.options`): they mean the same on every backend."""

    # -- where ---------------------------------------------------------------------------
    host: str | None = attrs.field(default=None, metadata={
        "help": "login host as [user@]host[:port]; unset: sbatch runs on this machine"})
    user: str | None = attrs.field(default=None, metadata={"help": "SSH user"})
    port: int | None = attrs.field(default=None, metadata={"help": "SSH port"})
    key_filename: str | None = attrs.field(default=None, metadata={"help": "SSH private key"})
    ssh_config: str | None = attrs.field(default=None, metadata={"help": "ssh_config file"})
    remote_dir: str | None = attrs.field(default=None, metadata={
        "help": "project root on the cluster (default: the local project path)"})
    scheduler_env: Mapping[str, str] = attrs.field(factory=dict, metadata={
        "help": "environment for the SLURM commands on the submit host, e.g. SLURM_CONF "
                "(jobs inherit it through sbatch)"})
    # -- resources -------------------------------------------------------------------------
    partition: str | None = attrs.field(default=None, metadata={"help": "--partition"})
    time: str | int | None = attrs.field(default=None, metadata={
        "help": "--time (minutes, or D-HH:MM:SS)"})
    nodes: int | None = attrs.field(default=None, metadata={"help": "--nodes"})
    ntasks_per_node: int | None = attrs.field(default=None, metadata={"help": "--ntasks-per-node"})
    gpus: int | None = attrs.field(default=None, metadata={"help": "GPUs per run"})
    gpu_directive: str = attrs.field(default="gpus", metadata={
        "help": "how GPUs are asked for: gpus (--gpus=N), gres (--gres=gpu:N), "
                "gpus-per-node, gpus-per-task"})
    gpu_type: str | None = attrs.field(default=None, metadata={
        "help": "GPU type put before the count (--gres=gpu:TYPE:N, --gpus=TYPE:N)"})
    cpus_per_task: int | None = attrs.field(default=None, metadata={"help": "--cpus-per-task"})
    cpus_per_gpu: int | None = attrs.field(default=None, metadata={"help": "--cpus-per-gpu"})
    mem: str | None = attrs.field(default=None, metadata={"help": "--mem (e.g. 16G)"})
    mem_per_gpu: str | None = attrs.field(default=None, metadata={"help": "--mem-per-gpu"})
    account: str | None = attrs.field(default=None, metadata={"help": "--account"})
    qos: str | None = attrs.field(default=None, metadata={"help": "--qos"})
    constraint: str | None = attrs.field(default=None, metadata={"help": "--constraint"})
    exclude: str | None = attrs.field(default=None, metadata={"help": "--exclude (node list)"})
    mail_user: str | None = attrs.field(default=None, metadata={"help": "--mail-user"})
    mail_type: str | None = attrs.field(default=None, metadata={"help": "--mail-type"})
    sbatch: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "extra raw #SBATCH options, e.g. ['--gpu_cmode=shared']"})
    gpu_sbatch: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "extra raw #SBATCH options added only when a run asks for GPUs"})
    cpu_resources: Mapping[str, Any] = attrs.field(factory=dict, metadata={
        "help": "resources for runs that ask for no GPU, e.g. {partition: standard, "
                "cpus_per_task: 4, mem: 16G} (a run's own resources still win)"})
    remote_header: str | None = attrs.field(default=None, metadata={
        "help": "seed: raw header text (#SBATCH lines); $gpus is replaced by the run's GPUs"})
    signal_lead: int = attrs.field(default=120, metadata={
        "help": "seconds before the time limit that the run is warned (USR1 to the worker: "
                "--signal=B:USR1@N; chester.preempted() turns True); 0: no warning"})
    # -- environment -----------------------------------------------------------------------
    modules: str | tuple[str, ...] = attrs.field(default=(), converter=str_tuple,
                                                       metadata={"help": "modules to load"})
    cuda_module: str | None = attrs.field(default=None, metadata={
        "help": "module loaded when the run asks for GPUs"})
    # -- scheduling ------------------------------------------------------------------------
    array_throttle: int | None = attrs.field(default=None, metadata={
        "help": "at most this many tasks of one array at once (--array=...%K)"})
    max_array_size: int | None = attrs.field(default=None, metadata={
        "help": "array chunk size (default: the cluster's MaxArraySize)"})
    poll_interval: float = attrs.field(default=30.0, metadata={
        "help": "shortest time between two scheduler queries (grows while nothing changes); "
                "30 s spares a shared controller"})
    max_poll_interval: float = attrs.field(default=300.0, metadata={
        "help": "longest time between two scheduler queries (capped below MinJobAge)"})
    # -- supervision ---------------------------------------------------------------------
    supervise: bool | str = attrs.field(default="auto", metadata={
        "help": "a supervisor job that submits held-back runs and retries runs without the "
                "laptop: auto (when runs are held back by a submit limit or max_retries is "
                "set), true, false"})
    supervise_interval: float = attrs.field(default=60.0, metadata={
        "help": "seconds between two supervision cycles (one scheduler query each)"})
    max_retries: int = attrs.field(default=0, metadata={
        "help": "times a run is queued again after a node failure, a preemption or a worker "
                "killed before it recorded its end (lost)"})
    retry_failed: bool = attrs.field(default=False, metadata={
        "help": "max_retries also applies to runs that failed (their function raised)"})

    def __attrs_post_init__(self) -> None:
        if self.gpu_directive not in GPU_DIRECTIVES:
            raise ValueError(f"gpu_directive must be one of {', '.join(GPU_DIRECTIVES)}, "
                             f"not {self.gpu_directive!r}")
        if not 0 <= int(self.signal_lead) <= 65535:
            raise ValueError("signal_lead must be 0 (off) to 65535 seconds")
        if self.supervise not in (True, False, "auto"):
            raise ValueError(f"supervise must be auto, true or false, not {self.supervise!r}")
        if not self.supervise_interval > 0:
            raise ValueError("supervise_interval must be a positive number of seconds "
                             "(60: one scheduler query a minute)")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 (no retries) or more")
        if self.array_throttle is not None and self.array_throttle < 1:
            raise ValueError("array_throttle must be at least 1")
        bad = [k for k in self.cpu_resources if k not in RESOURCE_KEYS or k == "gpus"]
        if bad:
            raise ValueError(f"cpu_resources: {bad[0]!r} is not a resource; known: "
                             f"{', '.join(k for k in RESOURCE_KEYS if k != 'gpus')}")


#: Pairs sbatch refuses together ("--mem, --mem-per-cpu, and --mem-per-gpu are mutually
#: exclusive"; --cpus-per-task with --cpus-per-gpu): the total and its per-GPU counterpart.
EXCLUSIVE = (("mem", "mem_per_gpu"), ("cpus_per_task", "cpus_per_gpu"))


def _set_by_user(options: SlurmOptions, key: str) -> bool:
    """Whether ``key`` differs from the options class's default (a preset's, or None)."""
    field = attrs.fields_dict(type(options))[key]
    return getattr(options, key) != field.default


def _resolve_exclusive(options: SlurmOptions, res: dict[str, Any],
                       per_run: set[str], gpus: int) -> None:
    """Keep one of each :data:`EXCLUSIVE` pair: a per-run value replaces the other key's
    configured default, a configured value replaces a preset's default; two values set at
    the same level are a :class:`UserError`. Runs without GPUs never render per-GPU keys."""
    for total, per_gpu in EXCLUSIVE:
        if res.get(total) is None or res.get(per_gpu) is None or not gpus:
            continue
        both = f"{total} and {per_gpu} (sbatch refuses --{total.replace('_', '-')} with " \
               f"--{per_gpu.replace('_', '-')}); keep one"
        if total in per_run and per_gpu in per_run:
            raise UserError(f"slurm: a run's resources set both {both}")
        if total in per_run or per_gpu in per_run:
            res[per_gpu if total in per_run else total] = None
            continue
        user_total, user_gpu = _set_by_user(options, total), _set_by_user(options, per_gpu)
        if user_total == user_gpu:
            raise UserError(f"slurm: the backend's options set both {both}")
        res[per_gpu if user_total else total] = None


def resources_for(options: SlurmOptions, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The options' resources with a run's overrides on top; unknown keys are an error."""
    bad = [k for k in overrides if k not in RESOURCE_KEYS and k not in RUN_KEYS
           and k != "gpu_type"]
    if bad:
        raise UserError(f"slurm: unknown resource {bad[0]!r}; known: "
                        f"{', '.join(RESOURCE_KEYS + RUN_KEYS)}")
    res: dict[str, Any] = {k: getattr(options, k) for k in RESOURCE_KEYS}
    res["gpu_type"] = options.gpu_type
    res["sbatch"] = tuple(options.sbatch)
    res["gpu_sbatch"] = tuple(options.gpu_sbatch)
    res["_overrides"] = tuple(sorted(k for k in overrides if k in RESOURCE_KEYS))
    gpus = overrides.get("gpus", options.gpus)
    try:
        n_gpus = int(gpus or 0)
    except (TypeError, ValueError):
        raise UserError(f"slurm: gpus={gpus!r} must be a whole number") from None
    if not n_gpus:
        res.update(options.cpu_resources)  # a CPU run: the CPU partition and its sizes
    for k, v in overrides.items():
        if k == "sbatch":
            res["sbatch"] = tuple(res["sbatch"]) + str_tuple(v) if isinstance(v, (list, tuple)) \
                else tuple(res["sbatch"]) + (str(v),)
        else:
            res[k] = v
    _resolve_exclusive(options, res, set(overrides), n_gpus)
    return res


def preset_options_cls(name: str, defaults: Mapping[str, Any]) -> type:
    """An options class equal to :class:`SlurmOptions` with other defaults (a cluster preset).

    Values from ``chester.yaml`` (the seed's per-mode keys included) still override them.
    """
    attrs.resolve_types(SlurmOptions)
    unknown = set(defaults) - {f.name for f in attrs.fields(SlurmOptions)}
    if unknown:
        raise ValueError(f"unknown SlurmOptions fields in preset {name}: {sorted(unknown)}")
    fields = {f.name: f for f in attrs.fields(SlurmOptions)}
    ns: dict[str, Any] = {"__annotations__": {}, "__module__": __name__}
    for key, d in defaults.items():
        f = fields[key]
        default: Any = attrs.Factory(functools.partial(dict, d)) if isinstance(d, dict) else d
        ns["__annotations__"][key] = f.type
        ns[key] = attrs.field(default=default, converter=f.converter, metadata=f.metadata)
    cls = attrs.frozen(kw_only=True)(type(f"{name.capitalize()}Options", (SlurmOptions,), ns))
    cls.__doc__ = f"Options of the ``{name}`` backend: SLURM with {name}'s defaults."
    return cls
