"""The ``local`` backend plugin: runs on this machine, detached, N at a time."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from chester.plugin.manager import hookimpl
from chester.plugin.records import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    Capacity,
    PreparedSweep,
    PullPatterns,
    PullResult,
    RunHandle,
    RunSpec,
    RunStatus,
)
from chester.remote.backend import Backend, hook_function
from chester.remote.options import ContainerOptions
from chester.target import rundir as rd

NAME = "local"


@attrs.frozen(kw_only=True)
class LocalOptions(ContainerOptions):
    """Options of the ``local`` backend (``container`` and the seed's ``use_singularity``/
    ``simg_path`` are the remote layer's, as on every shell backend)."""

    max_parallel: int | None = attrs.field(default=None, metadata={
        "help": "runs at once (default: GPUs if any, else cores)"})
    gpus: tuple[str, ...] | None = attrs.field(default=None, metadata={
        "help": "GPU ids to hand out, one per slot (default: what nvidia-smi lists)"})
    python: str | None = attrs.field(default=None, metadata={
        "help": "Python interpreter for the runs (default: the launcher's)"})


def detect_gpus() -> list[str]:
    """GPU indices from ``nvidia-smi``; none when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def _handle(r: RunSpec, runner_record: str | None, spec: str | None) -> RunHandle:
    return RunHandle(run_id=r.run_id, token=r.token, backend=NAME, local_dir=str(r.local_dir),
                     remote_dir=str(r.local_dir), host=rd.hostname(),
                     extra=(("runner", runner_record), ("spec", spec)) if runner_record and spec
                     else ())


def _plan(options: LocalOptions) -> tuple[int, list[str]]:
    gpus = list(options.gpus) if options.gpus is not None else detect_gpus()
    cap = options.max_parallel or (len(gpus) if gpus else (os.cpu_count() or 1))
    return max(1, cap), gpus


def _place(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` in one step (a runner still reading an earlier file of that
    name never finds none): a hard link, or a copy across file systems."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _unwritten(h: RunHandle) -> bool:
    """A run of a sweep spec whose folder the queue runner has not written yet (no run
    record, or an earlier run's: a run submitted again)."""
    if not h.get("runner"):
        return False
    meta = rd.read_json(Path(h.remote_dir) / rd.RUN_JSON)
    return meta is None or meta.get("token") != h.token


def _probe(h: RunHandle) -> dict[str, Any]:
    """The run's state from its folder (:func:`chester.target.tool.probe`). A run the queue
    has not reached yet (no folder): cancelled once marked so; else waiting while its
    runner lives, lost once the runner is gone without starting it."""
    from chester.target import states
    from chester.target.tool import probe

    if not _unwritten(h):
        return probe(Path(h.remote_dir))
    unstarted = {"state": states.QUEUED, "reason": None, "exit_code": None, "attempt": None}
    if rd.cancelled(h.remote_dir, h.token):
        marker = rd.read_cancel(h.remote_dir)
        return {**unstarted, "state": states.CANCELLED,
                "reason": rd.cancel_reason(marker, started=False), **rd.cancel_fields(marker)}
    runner = rd.read_json(str(h.get("runner")))
    if runner is None:
        return {**unstarted, "pending_reason": "not yet picked up"}
    if rd.pid_alive(runner.get("runner_pid"), runner.get("runner_ticks")):
        return {**unstarted, "pending_reason": "waiting for a free slot"}
    if not _unwritten(h):  # the runner wrote it just before it ended
        return probe(Path(h.remote_dir))
    return {**unstarted, **states.runner_stopped()}


class LocalBackend(Backend):
    """The ``local`` backend: a detached queue runner on this machine, the run folders
    where they already are."""

    name = NAME

    def spec(self) -> BackendSpec:
        return BackendSpec(name=NAME, summary="runs on this machine, detached, N at a time",
                           options_cls=LocalOptions,
                           capabilities=Capabilities(remote=False, shared_fs=True,
                                                     idempotent_submit=True, sweep_spec=True,
                                                     status_poll_interval_s=0.5))

    @hookimpl
    def chester_prepare(self, backend: BackendConfig, runs: Sequence[RunSpec],
                        staging_dir: Path) -> PreparedSweep:
        from chester.remote import container as ctr

        o: LocalOptions = backend.options
        cap, gpus = _plan(o)
        python = o.python or sys.executable
        queue_dir = backend.project_path / ".chester" / "queues"
        queue_file = queue_dir / f"{runs[0].token}.txt"
        c = ctr.resolve(o, backend=f"local backend {backend.name!r}")
        if c is None and python == sys.executable:
            runner = [sys.executable, "-m", "chester.target.runner"]
        else:
            # another Python (a container's, another environment's) may not have chester:
            # the queue and each worker run from chester's runtime
            from chester.remote import runtime

            rt = runtime.build()
            runner = [sys.executable, str(rt.path), "runner"]
        argv = [*runner, "--max-parallel", str(cap),
                "--python", python, "--cwd", str(backend.project_path),
                "--from-file", str(queue_file)]
        data: dict[str, Any] = {}
        if runs[0].spec_file:  # a launch: one sweep spec, each folder written as its run starts
            spec = queue_file.with_suffix(".spec")
            record = queue_file.with_suffix(".runner.json")
            argv += ["--spec", str(spec), "--runner-record", str(record)]
            data.update(spec_from=runs[0].spec_file, spec=str(spec), runner=str(record))
        if c is not None:
            binds = [str(backend.project_path), str(rt.path.parent)]
            outside = [str(Path(r.local_dir).parent) for r in runs
                       if not str(r.local_dir).startswith(str(backend.project_path) + "/")]
            if outside:  # run folders outside the project are bound too
                binds.append(os.path.commonpath(outside))
            argv += ["--worker-prefix",
                     shlex.join(ctr.wrap([], c, binds=binds, gpus=bool(gpus)))]
        if gpus:
            argv += ["--gpus", ",".join(gpus)]
        gpu_note = f", GPUs {','.join(gpus)}" if gpus else ""
        return PreparedSweep(
            backend=backend.name, runs=tuple(runs), staging_dir=staging_dir,
            scripts={"runner": shlex.join(argv),
                     "queue": "\n".join(str(r.local_dir) for r in runs)},
            summary=f"{len(runs)} runs on this machine, {cap} at a time{gpu_note}",
            data={"argv": argv, "queue_file": str(queue_file), **data},
        )

    @hookimpl
    def chester_submit(self, backend: BackendConfig, prepared: PreparedSweep
                       ) -> list[RunHandle]:
        queue_file = Path(prepared.data["queue_file"])
        queue_file.parent.mkdir(parents=True, exist_ok=True)
        fresh = []
        for r in prepared.runs:
            st = rd.read_json(Path(r.local_dir) / rd.STATUS)
            if st and st.get("token") == r.token:
                continue  # already started by an earlier, interrupted submit
            fresh.append(r)
        if fresh:
            if prepared.data.get("spec"):  # kept beside the queue while its runs start
                _place(Path(prepared.data["spec_from"]), Path(prepared.data["spec"]))
            tmp = queue_file.with_suffix(".tmp")
            tmp.write_text("".join(f"{r.local_dir}\n" for r in fresh))
            os.replace(tmp, queue_file)
            log_path = queue_file.with_suffix(".log")
            with open(log_path, "ab") as log:
                subprocess.Popen(prepared.data["argv"], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=log, start_new_session=True, close_fds=True,
                                 cwd=str(backend.project_path))
        return [_handle(r, prepared.data.get("runner"), prepared.data.get("spec"))
                for r in prepared.runs]

    @hookimpl
    def chester_capacity(self, backend: BackendConfig, runs: Sequence[RunSpec]) -> Capacity:
        """The slots of this machine that no run holds now (free ones start a run at once);
        no limit on what waits."""
        from chester.target.runner import default_slots_dir, free_slots

        cap, _gpus = _plan(backend.options)
        free = free_slots(default_slots_dir(), cap)
        return Capacity(free=free, note=f"{free} of {cap} slots free")

    @hookimpl
    def chester_status(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, RunStatus]:
        return {h.token: RunStatus.from_probe(_probe(h)) for h in handles}

    @hookimpl
    def chester_cancel(self, backend: BackendConfig, handles: Sequence[RunHandle]
                       ) -> dict[str, bool]:
        from chester.target.tool import cancel_many

        for h in handles:
            if _unwritten(h) and _probe(h)["state"] == "queued":
                # the queue has not reached it (no folder yet): the marker, with its token,
                # makes the runner end it unstarted when it does
                rd.write_cancel(h.remote_dir, token=h.token)
        res = cancel_many([Path(h.remote_dir) for h in handles])
        return {h.token: res[str(Path(h.remote_dir))]
                or rd.cancelled(h.remote_dir, h.token) and _unwritten(h) for h in handles}

    @hookimpl
    def chester_pull(self, backend: BackendConfig, handles: Sequence[RunHandle], dest: Path,
                     patterns: PullPatterns) -> list[PullResult]:
        # the run folders are already where they belong: complete while they are there
        return [PullResult(token=h.token, files=0, bytes=0,
                           complete=(Path(h.local_dir) / rd.RUN_JSON).is_file())
                for h in handles]

    @hookimpl
    def chester_logs(self, backend: BackendConfig, handle: RunHandle, follow: bool,
                     stream: str, out: TextIO) -> bool:
        from chester.target.tool import follow as follow_output

        # the target tool's follower, writing through this call's cursor: a retried call
        # goes on from the byte already written
        cursor = self.log_cursor(handle, stream, out)
        follow_output(Path(handle.remote_dir), stream, cursor.output(), follow=follow,
                      start=cursor.offset,  # (a run the queue has not reached: waited for)
                      active=lambda: _probe(handle)["state"] in ("queued", "running"))
        cursor.close()
        return True


def __getattr__(name: str) -> Any:  # the hooks' earlier module-level names
    return hook_function(LocalBackend, name, __name__)
