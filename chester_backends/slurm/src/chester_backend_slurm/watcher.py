"""Seeing a run's end while a laptop waits, without asking the scheduler more often.

While :meth:`chester.Sweep.wait` waits, the watcher of :mod:`chester.remote.watcher` runs
where the run folders are (a process here for a direct cluster, one command over the open
SSH connection to the login host otherwise). About once a second it ``stat``\\ s each
unfinished run's status record and sends a run's records once they say it ended. What is
SLURM's here: the worker's own end record decides a succeeded or failed run
(:func:`scheduler.merge` without a scheduler line), so the wait applies it at once;
``sacct`` keeps its own polite interval for what only the scheduler knows; and a run a
submit limit held back at launch gets its job id from its stage's ``job-<i>.id``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chester.plugin.records import RunHandle, RunStatus
from chester.remote import watcher as core
from chester.remote.watcher import LIFETIME, TICK, WATCHER, command
from chester_backend_slurm import scheduler


def id_file(h: RunHandle) -> str | None:
    """The stage's ``job-<i>.id`` of a run a submit limit held back at launch (no job id in
    its handle), where its job id is written once its job is submitted."""
    if h.remote_id or h.get("deferred") is None or not h.get("stage"):
        return None
    return f"{h.get('stage')}/job-{h.get('deferred')}.id"


def remote_id_of(h: RunHandle, rec: Mapping[str, Any]) -> str | None:
    """The run's job id: its handle's, or for a run submitted after launch, the one its
    stage's id file held when its end was seen (``<job>_<task>`` for an array task)."""
    if h.remote_id:
        return h.remote_id
    job = rec.get("job") if "job" in rec else (rec.get("note") or "").split(";")[0]
    if not job:
        return None
    return f"{job}_{h.get('task')}" if h.get("kind") == "array" else str(job)


def final_status(h: RunHandle, rec: dict[str, Any]) -> RunStatus | None:
    """A run's final status from its records alone, or None when they do not decide it
    (a stop by a signal waits for the scheduler's word; a supervised run's failure may be
    retried by its supervisor). A run submitted after launch whose job id is not known yet
    is left to the next poll, which records that id with its state."""
    rid = remote_id_of(h, rec)
    if rid is None:
        return None
    st = scheduler.merge(None, rec, token=h.token, remote_id=rid, host=h.host,
                         kind=h.get("kind") or "array", source="sacct")
    if not st.state.terminal:
        return None
    if h.get("supervisor") and st.state.value != "succeeded":
        return None
    return st


class Watch(core.Watch):
    """One watcher (:class:`chester.remote.watcher.Watch`) for the runs ``handles`` of one
    SLURM backend, started with the executor ``ex``; each final status (:func:`final_status`)
    goes to ``sink(token, status)``. A run submitted after launch has its stage's id file
    read at its end (:func:`id_file`)."""

    def __init__(self, ex: Any, handles: Sequence[RunHandle], python: str,
                 sink: Callable[[str, RunStatus], None], *, lifetime: float = LIFETIME,
                 tick: float = TICK):
        super().__init__(ex, handles, python, sink, final_status, lifetime=lifetime,
                         tick=tick, note_file=id_file)


__all__ = ["LIFETIME", "TICK", "WATCHER", "Watch", "command", "final_status", "id_file",
           "remote_id_of"]
