"""Options of the ``ec2`` backend (no boto3 here: this module is imported by ``chester plugins``)."""

from __future__ import annotations

import re
from typing import Any

import attrs

from chester.remote.options import check_package_manager

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]\Z")
_CIDR_WORLD = ("0.0.0.0/0", "::/0")
#: run_instances arguments the backend owns; ``run_instances_extra`` may not set them.
RESERVED_RUN_ARGS = frozenset({
    "UserData", "ClientToken", "MinCount", "MaxCount", "ImageId", "InstanceType",
    "MetadataOptions", "InstanceMarketOptions", "IamInstanceProfile", "TagSpecifications",
    "InstanceInitiatedShutdownBehavior",
})


def _bucket(_inst: Any, att: attrs.Attribute, value: str | None) -> None:
    if value is not None and not _BUCKET_RE.match(value):
        raise ValueError(f"{att.name}: {value!r} is not a valid S3 bucket name")


def _prefix(_inst: Any, att: attrs.Attribute, value: str) -> None:
    if value.startswith("/") or ".." in value.split("/") or "\n" in value:
        raise ValueError(f"{att.name}: {value!r} must be a relative key prefix without '..'")


def _positive(_inst: Any, att: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{att.name} must be > 0, got {value!r}")


def _optional_positive(_inst: Any, att: attrs.Attribute, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{att.name} must be > 0 (or null: no bound), got {value!r}")


PREEMPT_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")


def _signal(_inst: Any, att: attrs.Attribute, value: str | None) -> None:
    if value is not None and value not in PREEMPT_SIGNALS:
        raise ValueError(f"{att.name}: {value!r} is not one of {', '.join(PREEMPT_SIGNALS)}")


def _supervise(_inst: Any, att: attrs.Attribute, value: bool | str) -> None:
    if value not in ("auto", True, False):
        raise ValueError(f"{att.name} must be true, false or auto, got {value!r}")


ALLOCATION_STRATEGIES = ("capacity-optimized", "price-capacity-optimized",
                         "capacity-optimized-prioritized")


def _hourly_price(value: Any) -> float | dict[str, float] | None:
    """A number (USD per instance-hour, any type) or a mapping instance type -> number."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _usd(v, f"hourly_price[{k!r}]") for k, v in value.items()}
    return _usd(value, "hourly_price")


def _usd(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be USD per hour (a number, or a mapping instance type "
                         f"-> number), got {v!r}") from None
    if f < 0:
        raise ValueError(f"{what} must be >= 0, got {v!r}")
    return f


def _extra(_inst: Any, att: attrs.Attribute, value: dict) -> None:
    bad = sorted(set(value) & RESERVED_RUN_ARGS)
    if bad:
        raise ValueError(f"{att.name} may not set {', '.join(bad)} (the backend sets them; "
                         "use the matching option instead)")
    for perm in _walk_ip_ranges(value):
        if perm in _CIDR_WORLD:
            raise ValueError(f"{att.name}: refusing a rule open to the world ({perm})")


def _walk_ip_ranges(obj: Any):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("CidrIp", "CidrIpv6"):
                yield v
            else:
                yield from _walk_ip_ranges(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_ip_ranges(v)


def _tags(_inst: Any, att: attrs.Attribute, value: dict) -> None:
    for k, v in value.items():
        if str(k).lower().startswith(("aws:", "chester:")):
            raise ValueError(f"{att.name}: tag key {k!r} is reserved")
        if len(str(k)) > 128 or len(str(v)) > 256:
            raise ValueError(f"{att.name}: tag {k!r} is too long (keys 128, values 256 chars)")


@attrs.frozen(kw_only=True)
class Ec2Options:
    """Options of the ``ec2`` backend. Credentials come from boto3's own chain (environment,
    shared files, SSO, instance role), never from chester.yaml."""

    bucket: str = attrs.field(validator=_bucket, metadata={
        "help": "S3 bucket holding code snapshots, run folders and status records"})
    image_id: str | None = attrs.field(default=None, metadata={
        "help": "AMI id (needs python3; chester and your project's packages are installed by "
                "bootstrap_commands or the package manager)"})
    region: str | None = attrs.field(default=None, metadata={
        "help": "AWS region (default: boto3's configured region)"})
    instance_type: str = attrs.field(default="g5.xlarge", metadata={
        "help": "EC2 instance type"})
    key_name: str | None = attrs.field(default=None, metadata={
        "help": "EC2 key pair name for SSH (optional; no key material ever leaves AWS)"})
    subnet_id: str | None = attrs.field(default=None, metadata={"help": "subnet to launch in"})
    security_group_ids: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "security groups of the instances (chester never opens any rule)"})
    iam_instance_profile: str | None = attrs.field(default=None, metadata={
        "help": "instance profile name or ARN granting the instance its S3 prefix "
                "(see docs/backends/ec2.md for the least-privilege policy)"})
    spot: bool = attrs.field(default=True, metadata={
        "help": "launch spot instances (false: on-demand)"})
    max_price: str | float | None = attrs.field(default=None, converter=attrs.converters.optional(
        lambda v: format(v, "g") if isinstance(v, float) else str(v)), metadata={
        "help": "spot maximum price per hour in USD, e.g. \"0.90\" (default: the on-demand "
                "price)"})
    interruption_behavior: str = attrs.field(
        default="terminate",
        validator=attrs.validators.in_(("terminate", "stop", "hibernate")),
        metadata={"help": "what AWS does on a spot interruption: terminate, stop or hibernate"})
    runs_per_instance: int = attrs.field(default=1, validator=_positive, metadata={
        "help": "runs packed onto one instance, started together (gpus_per_run each); a "
                "freed slot takes the sweep's next run no instance has claimed"})
    gpus_per_run: int = attrs.field(default=1, metadata={
        "help": "GPUs given to each run on a packed instance via CUDA_VISIBLE_DEVICES (0: none)"})
    prefix: str = attrs.field(default="chester", validator=_prefix, metadata={
        "help": "key prefix inside the bucket"})
    tags: dict[str, str] = attrs.field(factory=dict, validator=_tags, metadata={
        "help": "extra tags on instances and volumes"})
    run_instances_extra: dict[str, Any] = attrs.field(factory=dict, validator=_extra, metadata={
        "help": "extra run_instances arguments (e.g. BlockDeviceMappings, Placement)"})
    endpoint_url: str | None = attrs.field(default=None, metadata={
        "help": "S3 endpoint URL for S3-compatible stores (default: AWS, or $AWS_ENDPOINT_URL)"})
    remote_dir: str = attrs.field(default="/opt/chester/project", metadata={
        "help": "where the project lives on the instance"})
    python: str = attrs.field(default="python3", metadata={
        "help": "Python interpreter on the instance (with package_manager: python; chester "
                "itself travels with the code)"})
    package_manager: str | None = attrs.field(default=None, validator=check_package_manager, metadata={
        "help": "uv, conda or python (default: the top-level package_manager)"})
    bootstrap_commands: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "shell lines run first on the instance (e.g. installing uv or CUDA); "
                "never put secrets here: user-data is readable from the instance"})
    sync_interval_s: float = attrs.field(default=60.0, validator=_positive, metadata={
        "help": "seconds between uploads of the run folders to S3 while runs go on"})
    watch_interval_s: float = attrs.field(default=5.0, validator=_positive, metadata={
        "help": "seconds between checks for a spot interruption notice and cancel markers"})
    cancel_grace_s: float = attrs.field(default=30.0, metadata={
        "help": "seconds cancel waits for a running run's instance to stop it and sync its "
                "folder before the instance is terminated"})
    max_requeues: int = attrs.field(default=2, metadata={
        "help": "times a run preempted on a terminated spot instance, or lost with its "
                "instance while it ran (terminated under it, or its agent's heartbeat "
                "stopped), starts again on a new instance; preemptions and losses count "
                "alike (done by status polls: Sweep.wait, chester monitor, or the supervisor "
                "with supervise: true); 0: never"})
    # -- supervision: requeues without the laptop ---------------------------------------------
    supervise: bool | str = attrs.field(default="auto", converter=lambda v: v if isinstance(
        v, bool) else {"true": True, "false": False}.get(str(v).lower(), str(v)),
        validator=_supervise, metadata={
        "help": "true: a small on-demand supervisor instance polls the sweep every "
                "supervise_interval_s (requeues runs preempted by spot notices or lost with "
                "their instance, enforces the lifetime and heartbeat bounds) and terminates "
                "itself when the sweep is final; auto (default) and false: no supervisor (it "
                "is a paid instance)"})
    supervise_interval_s: float = attrs.field(default=60.0, validator=_positive, metadata={
        "help": "seconds between the supervisor's cycles"})
    supervisor_instance_type: str = attrs.field(default="t3.nano", metadata={
        "help": "the supervisor's instance type (on-demand; t4g.nano is cheaper with an arm64 "
                "supervisor_image_id)"})
    supervisor_image_id: str | None = attrs.field(default=None, metadata={
        "help": "the supervisor's AMI (default: image_id); it needs python3 with "
                "chester-ml-ec2, or supervisor_bootstrap_commands that install it"})
    supervisor_instance_profile: str | None = attrs.field(default=None, metadata={
        "help": "the supervisor's instance profile (the policy in docs/backends/ec2.md); "
                "default: iam_instance_profile"})
    supervisor_bootstrap_commands: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "shell lines run first on the supervisor instance (e.g. pip install "
                "chester-ml-ec2)"})
    shutdown_when_done: bool = attrs.field(default=True, metadata={
        "help": "power the instance off (terminating it) when its runs end (false: it idles "
                "until max_lifetime_s)"})
    # -- bounds: nothing bills on ---------------------------------------------------------------
    max_lifetime_s: float | None = attrs.field(default=172800.0, validator=_optional_positive,
                                               metadata={
        "help": "hard bound on an instance's life in seconds (default 48 h): the agent stops "
                "its runs (timeout) and powers off, user-data scheduled a shutdown at that "
                "time in case the agent died, and status polls terminate it past that; "
                "null: no bound"})
    time_limit_s: float | None = attrs.field(default=None, validator=_optional_positive,
                                             metadata={
        "help": "per-run time limit in seconds (a run's resources may set time_limit_s); a "
                "run past it is stopped and reads timeout"})
    boot_timeout_s: float = attrs.field(default=1800.0, validator=_positive, metadata={
        "help": "a running instance with no agent heartbeat this long after it started is "
                "terminated by status polls and its runs read lost"})
    heartbeat_timeout_s: float = attrs.field(default=600.0, validator=_positive, metadata={
        "help": "a running instance whose agent heartbeat is older than this is terminated "
                "by status polls and its unfinished runs read lost (those that had started "
                "are requeued within max_requeues)"})
    preempt_signal: str | None = attrs.field(default=None, validator=_signal, metadata={
        "help": "an extra signal sent to a run's process group on a spot interruption "
                "notice (the worker always gets SIGUSR1: chester.preempted(); default none)"})
    # -- capacity -----------------------------------------------------------------------------
    instance_types: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "more instance types for when instance_type has no capacity "
                "(InsufficientInstanceCapacity, SpotMaxPriceTooLow, "
                "MaxSpotInstanceCountExceeded): one EC2 Fleet picks among all of them, or "
                "with launch_api: run_instances they are tried in order"})
    subnet_ids: tuple[str, ...] = attrs.field(default=(), metadata={
        "help": "more subnets (zones) besides subnet_id, used like instance_types"})
    on_demand_fallback: bool = attrs.field(default=False, metadata={
        "help": "when no spot capacity is found in any type and subnet, launch on-demand"})
    launch_api: str = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "fleet", "run_instances")),
        metadata={"help": "how instances are started: fleet (one EC2 Fleet of type instant "
                          "per instance over every type x subnet), run_instances (one call "
                          "per placement, in order), or auto: fleet when there is more than "
                          "one placement and interruption_behavior is terminate"})
    allocation_strategy: str = attrs.field(
        default="capacity-optimized", validator=attrs.validators.in_(ALLOCATION_STRATEGIES),
        metadata={"help": "the EC2 Fleet's spot allocation strategy: capacity-optimized, "
                          "price-capacity-optimized or capacity-optimized-prioritized (the "
                          "order of instance_type + instance_types)"})
    hourly_price: float | dict[str, float] | None = attrs.field(
        default=None, converter=_hourly_price, metadata={
            "help": "on-demand USD per instance-hour for cost estimates: a number, or a "
                    "mapping instance type -> number (default: chester's small table of "
                    "us-east-1 list prices; spot instances use the current spot price)"})

    def __attrs_post_init__(self) -> None:
        if self.launch_api == "fleet" and self.spot and self.interruption_behavior != "terminate":
            raise ValueError(
                f"launch_api: fleet cannot launch spot instances with interruption_behavior: "
                f"{self.interruption_behavior} (an EC2 Fleet of type instant makes one-time "
                "requests; stop/hibernate need a persistent request): use launch_api: "
                "run_instances or auto, or interruption_behavior: terminate")
