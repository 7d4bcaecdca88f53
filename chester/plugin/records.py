"""Records that cross the plugin boundary.

All are ``attrs`` frozen, keyword-only classes: hashable, safe to share, extended with
``attrs.evolve``. Adding a field with a default is not a breaking change.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen


class State(str, enum.Enum):
    """One vocabulary of run states for every backend."""

    PENDING = "pending"  # recorded in the store, not yet handed to the backend
    QUEUED = "queued"  # the backend has it; waiting for a slot / the scheduler
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OOM = "oom"
    PREEMPTED = "preempted"
    REQUEUED = "requeued"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        # what `print(sweep.status())` shows: {'1_x': 'succeeded'} (a State equals its value)
        return repr(self.value)

    @property
    def terminal(self) -> bool:
        """True once the run will not change state by itself any more."""
        return self in TERMINAL_STATES


#: ``preempted`` is final: a backend that will run the run again reports ``requeued``.
TERMINAL_STATES = frozenset(
    {State.SUCCEEDED, State.FAILED, State.CANCELLED, State.TIMEOUT, State.OOM, State.PREEMPTED,
     State.LOST}
)


def _lines(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _norm_name(value: str) -> str:
    return value.strip().lower()


def _doc(text: str, filled: str, read: str) -> dict[str, str]:
    """A field's reference entry (docs/records.md is generated from these): what it holds,
    who fills it and who reads it."""
    return {"doc": text, "filled_by": filled, "read_by": read}


@frozen(kw_only=True)
class Capabilities:
    """What a backend can do.

    The core acts on ``idempotent_submit`` (whether a submit that may have happened is
    retried), ``status_poll_interval_s`` (how often ``Sweep.wait`` polls, unless the spec's
    ``poll_interval`` reads one from the options) and ``sweep_spec``. ``remote``,
    ``shared_fs``, ``supports_arrays`` and ``needs_code_sync`` describe the backend to people
    (``chester plugins list --verbose``); the core takes where runs live on the target from
    ``BackendSpec.remote_root``, not from ``remote``.
    """

    remote: bool = field(default=False, metadata=_doc(
        "runs go to another machine", "the plugin's chester_backends", "chester plugins list"))
    shared_fs: bool = field(default=True, metadata=_doc(
        "the target sees this machine's files", "the plugin's chester_backends", "chester plugins list"))
    supports_arrays: bool = field(default=False, metadata=_doc(
        "many runs go as one scheduler array", "the plugin's chester_backends", "chester plugins list"))
    idempotent_submit: bool = field(default=False, metadata=_doc(
        "a submit checks each run's token on the target, so a submit that may have happened "
        "can be retried", "the plugin's chester_backends", "the dispatcher (retries), the launcher (resumed launches)"))
    needs_code_sync: bool = field(default=False, metadata=_doc(
        "the project's code is copied to the target", "the plugin's chester_backends", "chester plugins list"))
    status_poll_interval_s: float = field(default=2.0, metadata=_doc(
        "how often to poll status when the options say nothing", "the plugin's chester_backends",
        "Sweep.wait, chester monitor"))
    sweep_spec: bool = field(default=False, metadata=_doc(
        "the launcher writes one sweep spec (RunSpec.spec_file) instead of each run's folder; "
        "the target starts the worker with --spec FILE", "the plugin's chester_backends", "the launcher"))


@frozen(kw_only=True)
class BackendSpec:
    """One backend type a plugin provides, returned by ``chester_backends``.

    ``options_cls`` is an attrs class; each field's ``metadata["help"]`` is shown by
    ``chester plugins list --verbose`` and in config errors. It may define
    ``from_mapping(cls, data, *, legacy)`` to translate the seed's per-mode keys.
    """

    name: str = field(converter=_norm_name,
                      validator=attrs.validators.matches_re(r"[a-z][a-z0-9_-]*"),
                      metadata=_doc("the backend type (`type:` in chester.yaml)", "the plugin's chester_backends",
                                    "config, plugin manager, CLI"))
    summary: str = field(metadata=_doc("one line for people", "the plugin's chester_backends", "chester plugins list"))
    options_cls: type = field(metadata=_doc(
        "attrs class of the options; each field's metadata['help'] is its help", "the plugin's chester_backends",
        "config (validation, errors), chester plugins list --verbose"))
    capabilities: Capabilities = field(factory=Capabilities, metadata=_doc(
        "what the backend can do", "the plugin's chester_backends", "launcher, dispatcher, Sweep, CLI"))
    remote_root: Callable[[Any], str | None] | None = field(default=None, metadata=_doc(
        "the project's root on the target from the options (remote backends); run folders map "
        "under it as under the local project. None: the same paths as here", "the plugin's chester_backends",
        "the launcher (RunSpec.remote_dir)"))
    poll_interval: Callable[[Any], float | None] | None = field(default=None, metadata=_doc(
        "the shortest time between two status polls the options ask for (None: "
        "capabilities.status_poll_interval_s)", "the plugin's chester_backends", "Sweep.wait, chester monitor"))


@frozen(kw_only=True)
class BackendConfig:
    """A configured backend as the hooks receive it.

    ``name`` is the key under ``backends:`` (or the type itself for an unconfigured
    backend); ``type`` is the plugin's backend type; ``options`` an instance of its
    ``options_cls``.
    """

    name: str = field(metadata=_doc("the key under backends: (or the type itself)", "config (chester.yaml)",
                                    "every hook (messages), the store"))
    type: str = field(metadata=_doc("the backend type", "config (chester.yaml)", "plugin manager, dispatcher"))
    options: Any = field(metadata=_doc("an instance of the spec's options_cls", "config (chester.yaml)",
                                       "the backend's hooks"))
    project_path: Path = field(metadata=_doc("the local project root", "config (chester.yaml)",
                                             "hooks (code sync, secrets files), launcher"))
    log_dir: Path = field(metadata=_doc("the local log root", "config (chester.yaml)",
                                        "launcher (run folders), code sync (excluded)"))
    source: str = field(default="<defaults>", metadata=_doc(
        "where the options came from", "config (chester.yaml)", "messages"))
    rsync_include: tuple[str, ...] = field(default=(), metadata=_doc(
        "code sync include patterns", "config (chester.yaml)", "chester.remote.codesync"))
    rsync_exclude: tuple[str, ...] = field(default=(), metadata=_doc(
        "code sync exclude patterns", "config (chester.yaml)", "chester.remote.codesync"))
    prepare_commands: tuple[str, ...] = field(default=(), metadata=_doc(
        "top-level shell lines run before each remote run", "config (chester.yaml)", "chester.remote.shell"))
    package_manager: str = field(default="python", metadata=_doc(
        "top-level uv | conda | python", "config (chester.yaml)", "chester.remote.shell"))
    conda_env: str | None = field(default=None, metadata=_doc(
        "the conda environment (package_manager: conda)", "config (chester.yaml)", "chester.remote.shell"))
    conda_command: str = field(default="conda", metadata=_doc(
        "conda or mamba", "config (chester.yaml)", "chester.remote.shell"))
    sync_on_launch: bool = field(default=True, metadata=_doc(
        "sync the environment (uv sync, conda env update) once per launch", "config (chester.yaml)",
        "remote backends' submit"))
    members: tuple[BackendConfig, ...] = field(default=(), metadata=_doc(
        "a pool's members, each validated as its own backend (empty for every other type)",
        "config (chester.yaml, type: pool)", "the launcher's placement, Sweep (routing by member)"))


@frozen(kw_only=True)
class RunSpec:
    """One run, as the launcher asks a backend to prepare it.

    ``local_dir`` already holds ``variant.json`` and ``.chester/`` (payload and run record)
    when ``chester_prepare`` is called, unless ``spec_file`` is set (backends with the
    ``sweep_spec`` capability): then that one local file holds every run's folder of the
    launch, keyed by ``remote_dir``, and the worker (``python -m chester.target.worker RUN_DIR
    --spec FILE``) writes the folder on the target when the run starts
    (:mod:`chester.target.sweepspec`).
    ``remote_dir`` is where the run folder lives on the target (equal to ``local_dir`` for
    backends without ``remote``).
    """

    run_id: int = field(metadata=_doc("the store's id of the run (an int, not a name)", "the launcher",
                                      "the backend's hooks (RunHandle.run_id)"))
    token: str = field(metadata=_doc(
        "unique to this attempt of this run; a submit checks it on the target so it never "
        "starts a run twice", "the launcher", "the backend's hooks, the worker's records"))
    name: str = field(metadata=_doc("the run folder's name, <N>_<name>", "the launcher",
                                    "the backend's hooks (job names, messages)"))
    exp_prefix: str = field(metadata=_doc("the sweep's prefix", "the launcher", "the backend's hooks"))
    local_dir: Path = field(metadata=_doc("the run folder here (results are pulled into it)",
                                          "the launcher", "the backend's hooks (uploads, pull)"))
    remote_dir: str = field(metadata=_doc(
        "the run folder on the target (equal to local_dir without remote_root)", "the launcher",
        "the backend's hooks (where the worker runs), RunHandle.remote_dir"))
    attempt: int = field(default=1, metadata=_doc("1, then 2... when a run is submitted "
                                                  "again", "the launcher", "the backend's hooks, the worker"))
    env: Mapping[str, str] = field(factory=dict, metadata=_doc(
        "environment variables for this run", "the launcher", "the backend's hooks"))
    resources: Mapping[str, Any] = field(factory=dict, metadata=_doc(
        "per-run settings (e.g. SLURM resources, pre_commands)", "the launcher (launch resources=)",
        "the backend's hooks"))
    order_after: tuple[str, ...] = field(default=(), metadata=_doc(
        "tokens this run must wait for (order='dependent')", "the launcher", "the backend's hooks (SLURM afterok)"))
    spec_file: str | None = field(default=None, metadata=_doc(
        "the launch's sweep spec (sweep_spec backends): every run's folder in one file", "the launcher",
        "the backend's hooks, the worker (--spec)"))


@frozen(kw_only=True)
class PreparedSweep:
    """What ``chester_prepare`` returns: everything rendered, nothing sent yet.

    ``uploads`` are local paths the submit will send; ``scripts`` maps a label to rendered
    text (shown by ``--dry-run`` and used for golden tests); ``data`` is private to the backend.
    """

    backend: str = field(metadata=_doc("the backend's name", "chester_prepare", "the launcher"))
    runs: tuple[RunSpec, ...] = field(metadata=_doc("the runs prepared", "chester_prepare",
                                                     "chester_submit"))
    staging_dir: Path = field(metadata=_doc(
        "a local folder for rendered files (removed after the submit; kept by a dry run)",
        "the launcher (passed to chester_prepare)", "chester_prepare, chester_submit"))
    uploads: tuple[Path, ...] = field(default=(), metadata=_doc(
        "local paths the submit will send", "chester_prepare", "--dry-run"))
    scripts: Mapping[str, str] = field(factory=dict, metadata=_doc(
        "label -> rendered text", "chester_prepare", "--dry-run, golden tests"))
    summary: str = field(default="", metadata=_doc("one line for people", "chester_prepare",
                                                    "--dry-run, logs"))
    data: Mapping[str, Any] = field(factory=dict, metadata=_doc(
        "private to the backend", "chester_prepare", "chester_submit"))
    blockers: tuple[str, ...] = field(default=(), converter=_lines, metadata=_doc(
        "what only the real submit needs and is missing (a cluster's account), one line "
        "each: a launch stops on the first before submitting; a dry run shows the scripts "
        "and warns", "chester_prepare", "the launcher (launch, relaunch, --dry-run)"))


@frozen(kw_only=True)
class RunHandle:
    """How a backend finds one submitted run again, in this or another process.

    Stored as JSON in the job store; ``extra`` holds backend-specific string pairs.
    """

    run_id: int = field(metadata=_doc("RunSpec.run_id", "chester_submit", "the store"))
    token: str = field(metadata=_doc("RunSpec.token: the key of every result dict", "chester_submit",
                                     "the store, every later hook"))
    backend: str = field(metadata=_doc("the backend's name", "chester_submit", "the dispatcher"))
    local_dir: str = field(metadata=_doc("RunSpec.local_dir", "chester_submit", "pull, the CLI"))
    remote_dir: str = field(metadata=_doc("RunSpec.remote_dir", "chester_submit",
                                          "status, cancel, pull, logs"))
    remote_id: str | None = field(default=None, metadata=_doc(
        "the target's id (a SLURM job_task id, an instance id)", "chester_submit",
        "status, cancel, chester status"))
    host: str | None = field(default=None, metadata=_doc("where the run went", "chester_submit",
                                                         "chester status"))
    extra: tuple[tuple[str, str], ...] = field(default=(), metadata=_doc(
        "backend-specific string pairs (RunHandle.get)", "chester_submit", "the backend's later hooks"))

    def get(self, key: str, default: str | None = None) -> str | None:
        """Look up one ``extra`` value."""
        for k, v in self.extra:
            if k == key:
                return v
        return default

    def to_dict(self) -> dict[str, Any]:
        # by hand: attrs.asdict costs more than the rest of recording a 1,000-run sweep
        return {"run_id": self.run_id, "token": self.token, "backend": self.backend,
                "local_dir": self.local_dir, "remote_dir": self.remote_dir,
                "remote_id": self.remote_id, "host": self.host,
                "extra": [list(p) for p in self.extra]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunHandle:
        d = dict(d)
        d["extra"] = tuple((str(k), str(v)) for k, v in d.get("extra", ()))
        return cls(**d)


@frozen(kw_only=True)
class RunStatus:
    """A run's state as a backend sees it now."""

    state: State = field(converter=State, metadata=_doc(
        "one of the State vocabulary", "chester_status", "the store, Sweep, chester status"))
    reason: str | None = field(default=None, metadata=_doc(
        "why a run failed, was cancelled, timed out or is lost (required for those)", "chester_status",
        "chester status, Run.reason"))
    stderr_tail: str | None = field(default=None, metadata=_doc(
        "the last lines of the run's stderr, for a run that did not succeed", "chester_status",
        "chester status --all, chester logs (after a failed run's output), Run.stderr_tail"))
    exit_code: int | None = field(default=None, metadata=_doc(
        "the worker's exit status once it ended", "chester_status", "chester status"))
    attempt: int | None = field(default=None, metadata=_doc(
        "the attempt the target is on (requeues)", "chester_status", "the store"))
    remote_id: str | None = field(default=None, metadata=_doc(
        "the target's id, when it changed since the submit", "chester_status", "the store"))
    host: str | None = field(default=None, metadata=_doc(
        "the machine the run is on (a node, an instance)", "chester_status", "chester status"))
    started_at: float | None = field(default=None, metadata=_doc(
        "epoch seconds the worker started", "chester_status", "the store"))
    ended_at: float | None = field(default=None, metadata=_doc(
        "epoch seconds the worker ended", "chester_status", "the store"))
    pending_reason: str | None = field(default=None, metadata=_doc(
        "why a queued run waits (e.g. the scheduler's reason)", "chester_status", "chester status"))
    history: tuple[tuple[float, str, str], ...] = field(
        default=(), converter=lambda v: tuple((float(a), str(s), str(r)) for a, s, r in v),
        metadata=_doc("what happened to the run on the target while nobody polled, from a "
                      "supervisor's journal: (epoch seconds, state, reason) each",
                      "chester_status", "the store (the run's history, at those times)"))

    @classmethod
    def from_probe(cls, d: Mapping[str, Any]) -> RunStatus:
        """A run's state as the target tool reports it (:func:`chester.target.tool.probe`,
        possibly read back from ``python -m chester.target status`` JSON on another machine).
        Shared by the backends whose runs that tool looks at."""
        return cls(state=d["state"], reason=d.get("reason"), stderr_tail=d.get("stderr_tail"),
                   exit_code=d.get("exit_code"), attempt=d.get("attempt"), host=d.get("host"),
                   started_at=d.get("started_at"), ended_at=d.get("ended_at"),
                   pending_reason=d.get("pending_reason"))


@frozen(kw_only=True)
class PullPatterns:
    """What to bring home: rsync-style include/exclude patterns plus the seed's options.

    ``bare`` skips large artefacts (``*.pkl *.png *.gif *.pth *.pt``); ``extra_dirs`` are
    ``(local, remote)`` pairs pulled as well.
    """

    include: tuple[str, ...] = field(default=(), metadata=_doc(
        "rsync-style patterns always brought home", "Sweep.pull, chester pull --include",
        "chester_pull"))
    exclude: tuple[str, ...] = field(default=(), metadata=_doc(
        "rsync-style patterns never brought home", "Sweep.pull, chester pull --exclude",
        "chester_pull"))
    bare: bool = field(default=False, metadata=_doc(
        "skip large artefacts (BARE_EXCLUDES)", "Sweep.wait (failed runs)", "chester_pull"))
    extra_dirs: tuple[tuple[str, str], ...] = field(default=(), metadata=_doc(
        "(local, remote) folders pulled as well", "launch extra_pull_dirs=", "chester_pull"))


BARE_EXCLUDES = ("*.pkl", "*.png", "*.gif", "*.pth", "*.pt")


@frozen(kw_only=True)
class PullResult:
    """What one pull of one run brought home; ``complete``: all of the run's files are
    home (a run is marked pulled only then)."""

    token: str = field(metadata=_doc("the run's token", "chester_pull", "the store"))
    files: int = field(default=0, metadata=_doc("files that arrived", "chester_pull",
                                                "chester pull (counts)"))
    bytes: int = field(default=0, metadata=_doc("bytes that arrived", "chester_pull", "chester pull"))
    complete: bool = field(default=True, metadata=_doc(
        "the run's end record is home (chester.remote.paths.arrived); only then is the run "
        "marked pulled", "chester_pull", "the store, Sweep.wait, chester monitor"))


@frozen(kw_only=True)
class Capacity:
    """How much of a sweep a backend could take now, as ``chester_capacity`` says; what a
    pool places runs by (:mod:`chester.plugin.pool`). Every field may be unknown (None)."""

    free: int = field(default=0, metadata=_doc(
        "runs that would start now (free GPUs, free slots, a start estimate of now)",
        "chester_capacity", "the pool's placement"))
    room: int | None = field(default=None, metadata=_doc(
        "runs it accepts now at all, started or queued (a QOS submit limit less what is "
        "queued); None: no limit", "chester_capacity", "the pool's placement"))
    wait_s: float | None = field(default=None, metadata=_doc(
        "seconds until a run beyond ``free`` would start (the scheduler's own estimate); "
        "None: unknown", "chester_capacity", "the pool's placement (max_wait)"))
    paid: bool = field(default=False, metadata=_doc(
        "its runs cost money (a cloud): a pool sends runs there only past max_wait and "
        "within its budget", "chester_capacity", "the pool's placement (budget)"))
    usd_per_run_hour: float | None = field(default=None, metadata=_doc(
        "the most one run costs per hour there (an instance's price, at most what may be "
        "bid, shared by the runs on it); None: not known", "chester_capacity",
        "the pool's placement (budget)"))
    run_hours: float | None = field(default=None, metadata=_doc(
        "the longest a run may last there (a time limit), in hours: the bound of its "
        "projected cost; None: no limit known", "chester_capacity", "the pool's budget"))
    charges_su: bool = field(default=False, metadata=_doc(
        "its runs use service units (a SLURM allocation): a pool's budget.su stops new "
        "runs there once used up", "chester_capacity", "the pool's placement (budget)"))
    note: str = field(default="", metadata=_doc(
        "one line for people (what was seen)", "chester_capacity", "the pool's notices"))


@frozen(kw_only=True)
class Spend:
    """What a backend's runs have cost so far (``chester_spend``), and what the ones still
    going will cost at most when they run to their limit."""

    usd: float = field(default=0.0, metadata=_doc(
        "money spent so far, in US dollars (prices x instance hours)", "chester_spend",
        "the pool's budget, chester status"))
    usd_projected: float = field(default=0.0, metadata=_doc(
        "``usd`` plus what the runs still going will cost at most (to their time limit)",
        "chester_spend", "the pool's budget, chester status"))
    su: float = field(default=0.0, metadata=_doc(
        "SLURM service units used (sacct's billing TRES x hours)", "chester_spend",
        "the pool's budget, chester status"))
    gpu_hours: float = field(default=0.0, metadata=_doc(
        "GPU-hours used (shown, never capped)", "chester_spend", "chester status"))

    def __add__(self, other: Spend) -> Spend:
        return Spend(usd=self.usd + other.usd,
                     usd_projected=self.usd_projected + other.usd_projected,
                     su=self.su + other.su, gpu_hours=self.gpu_hours + other.gpu_hours)
