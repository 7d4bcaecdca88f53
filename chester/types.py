"""Records that cross the plugin boundary.

All are ``attrs`` frozen, keyword-only classes: hashable, safe to share, extended with
``attrs.evolve``. Adding a field with a default is not a breaking change.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
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

    @property
    def terminal(self) -> bool:
        """True once the run will not change state by itself any more."""
        return self in TERMINAL_STATES


#: ``preempted`` is final: a backend that will run the run again reports ``requeued``.
TERMINAL_STATES = frozenset(
    {State.SUCCEEDED, State.FAILED, State.CANCELLED, State.TIMEOUT, State.OOM, State.PREEMPTED,
     State.LOST}
)


def _norm_name(value: str) -> str:
    return value.strip().lower()


@frozen(kw_only=True)
class Capabilities:
    """What a backend can do; the core and the CLI adapt to it."""

    remote: bool = False
    shared_fs: bool = True
    supports_arrays: bool = False
    idempotent_submit: bool = False
    needs_code_sync: bool = False
    status_poll_interval_s: float = 2.0
    #: the launcher writes one sweep spec (``RunSpec.spec_file``) instead of each run's
    #: folder; the target starts ``python -m chester.worker RUN_DIR --spec FILE``
    sweep_spec: bool = False


@frozen(kw_only=True)
class BackendSpec:
    """One backend type a plugin provides, returned by ``chester_backends``.

    ``options_cls`` is an attrs class; each field's ``metadata["help"]`` is shown by
    ``chester plugins list --verbose`` and in config errors. It may define
    ``from_mapping(cls, data, *, legacy)`` to translate the seed's per-mode keys.
    """

    name: str = field(converter=_norm_name, validator=attrs.validators.matches_re(r"[a-z][a-z0-9_-]*"))
    summary: str
    options_cls: type
    capabilities: Capabilities = field(factory=Capabilities)


@frozen(kw_only=True)
class BackendConfig:
    """A configured backend as the hooks receive it.

    ``name`` is the key under ``backends:`` (or the type itself for an unconfigured
    backend); ``type`` is the plugin's backend type; ``options`` an instance of its
    ``options_cls``.
    """

    name: str
    type: str
    options: Any
    project_path: Path
    log_dir: Path
    source: str = "<defaults>"
    rsync_include: tuple[str, ...] = ()
    rsync_exclude: tuple[str, ...] = ()
    prepare_commands: tuple[str, ...] = ()
    package_manager: str = "python"
    conda_env: str | None = None
    conda_command: str = "conda"
    sync_on_launch: bool = True


@frozen(kw_only=True)
class RunSpec:
    """One run, as the launcher asks a backend to prepare it.

    ``local_dir`` already holds ``variant.json`` and ``.chester/`` (payload and run record)
    when ``chester_prepare`` is called, unless ``spec_file`` is set (backends with the
    ``sweep_spec`` capability): then that one local file holds every run's folder of the
    launch, keyed by ``remote_dir``, and ``python -m chester.worker RUN_DIR --spec FILE``
    writes the folder on the target when the run starts (:mod:`chester.sweepspec`).
    ``remote_dir`` is where the run folder lives on the target (equal to ``local_dir`` for
    backends without ``remote``).
    """

    run_id: int
    token: str
    name: str
    exp_prefix: str
    local_dir: Path
    remote_dir: str
    attempt: int = 1
    env: Mapping[str, str] = field(factory=dict)
    resources: Mapping[str, Any] = field(factory=dict)
    order_after: tuple[str, ...] = ()
    spec_file: str | None = None


@frozen(kw_only=True)
class PreparedSweep:
    """What ``chester_prepare`` returns: everything rendered, nothing sent yet.

    ``uploads`` are local paths the submit will send; ``scripts`` maps a label to rendered
    text (shown by ``--dry-run`` and used for golden tests); ``data`` is private to the backend.
    """

    backend: str
    runs: tuple[RunSpec, ...]
    staging_dir: Path
    uploads: tuple[Path, ...] = ()
    scripts: Mapping[str, str] = field(factory=dict)
    summary: str = ""
    data: Mapping[str, Any] = field(factory=dict)


@frozen(kw_only=True)
class RunHandle:
    """How a backend finds one submitted run again, in this or another process.

    Stored as JSON in the job store; ``extra`` holds backend-specific string pairs.
    """

    run_id: int
    token: str
    backend: str
    local_dir: str
    remote_dir: str
    remote_id: str | None = None
    host: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

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

    state: State = field(converter=State)
    reason: str | None = None
    stderr_tail: str | None = None
    exit_code: int | None = None
    attempt: int | None = None
    remote_id: str | None = None
    host: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    pending_reason: str | None = None


@frozen(kw_only=True)
class PullPatterns:
    """What to bring home: rsync-style include/exclude patterns plus the seed's options.

    ``bare`` skips large artefacts (``*.pkl *.png *.gif *.pth *.pt``); ``extra_dirs`` are
    ``(local, remote)`` pairs pulled as well.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    bare: bool = False
    extra_dirs: tuple[tuple[str, str], ...] = ()


BARE_EXCLUDES = ("*.pkl", "*.png", "*.gif", "*.pth", "*.pt")


@frozen(kw_only=True)
class PullResult:
    """What one pull of one run brought home; ``complete``: all of the run's files are
    home (a run is marked pulled only then)."""

    token: str
    files: int = 0
    bytes: int = 0
    complete: bool = True
