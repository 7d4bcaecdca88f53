"""The seed's script API, kept working on top of :func:`chester.launch`.

::

    from chester.run_exp import run_experiment_lite, VariantGenerator

    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.01])
    for v in vg.variants():
        run_experiment_lite(stub_method_call=train, variant=v, variations=vg.variations(),
                            exp_prefix="lr-sweep", mode="local", wait_subprocess=False)

Calls are collected and submitted together as one launch (one code sync, one submit) when
a variant carries the seed's ``chester_last_variant`` marker, when the settings change, or
when the script ends. All launches under one ``exp_prefix`` are one sweep (``chester status
PREFIX``, ``chester.sweep(PREFIX)``). ``mode`` names a backend (``local``, a ``backends:``
entry, an SSH host from ``ssh_hosts``, or an installed backend type such as ``gl``). With the local
backend and the seed's default ``wait_subprocess=True`` each call runs its variant and
waits for it, as before (a launch per call). ``auto_pull=True`` with a remote backend
starts one detached ``python -m chester.auto_pull`` per prefix.

Parameters that no longer apply (``script``, ``python_command``, Hydra options, ...) warn
once and are never passed to the worker.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

from chester.variants import AttrDict, VariantDict, VariantGenerator, variant

__all__ = [
    "AttrDict",
    "VariantDict",
    "VariantGenerator",
    "flush",
    "run_experiment_lite",
    "variant",
]

#: Parameters the seed had that no longer do anything, with their defaults.
_OBSOLETE = {
    "script": None,
    "python_command": "python",
    "use_cloudpickle": True,
    "print_command": True,
    "launch_with_subprocess": True,
    "hydra_enabled": False,
    "hydra_flags": None,
}
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


class _Batch:
    def __init__(self, key: tuple, fn: Callable, settings: dict):
        self.key = key
        self.fn = fn
        self.settings = settings
        self.variants: list[dict] = []
        self.names: list[str | None] = []
        self.dirs: list[str | None] = []


_pending: _Batch | None = None
_sweeps: list[Any] = []


def flush() -> Any:
    """Submit the runs collected so far (done automatically; see the module docstring)."""
    global _pending
    batch, _pending = _pending, None
    if batch is None or not batch.variants:
        return None
    from chester.launcher import launch

    s = batch.settings
    names = ([n or f"run-{i}" for i, n in enumerate(batch.names)]
             if any(batch.names) else None)
    dirs = [d for d in batch.dirs if d] if all(batch.dirs) else None
    sweep = launch(batch.fn, batch.variants, backend=s["mode"], exp_prefix=s["exp_prefix"],
                   sub_dir=s["sub_dir"], variations=s["variations"], exp_names=names,
                   run_dirs=dirs,
                   env=s["env"], resources=s["resources"], dry_run=s["dry"],
                   extra_pull_dirs=s["extra_pull_dirs"], resume="incomplete")
    _sweeps.append(sweep)
    if s["dry"]:
        prepared = getattr(sweep, "prepared", None)
        if prepared is not None:
            print(prepared.summary)
            for label, text in prepared.scripts.items():
                print(f"--- {label} ---\n{text}")
        return sweep
    if s["auto_pull"] and _remote(sweep):
        _spawn_auto_pull(s["exp_prefix"], s["auto_pull_interval"])
    return sweep


def _remote(sweep: Any) -> bool:
    """Do the sweep's runs live elsewhere (so that there is something to pull)?"""
    manager = sweep.dispatcher.manager
    return bool(manager.get_backend(sweep.backend.type).spec.capabilities.remote)


_monitors: dict[str, subprocess.Popen] = {}


def _spawn_auto_pull(exp_prefix: str, interval: float) -> None:
    """A detached ``python -m chester.auto_pull`` for the sweep ``exp_prefix``: every run of
    every launch under it, read from the store on each poll, so one monitor per prefix
    (started again only if it has already ended) covers all of this script's launches. Its
    output goes to ``.chester/monitor/<exp_prefix>.log``, its pid to ``<exp_prefix>.pid``."""
    from chester.config import get_config

    running = _monitors.get(exp_prefix)
    if running is not None and running.poll() is None:
        return
    cfg = get_config()
    logs = cfg.project_path / ".chester" / "monitor"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{exp_prefix}.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chester.auto_pull", "--exp-prefix", exp_prefix,
             "--poll-interval", str(interval)], stdin=subprocess.DEVNULL, stdout=out,
            stderr=out, start_new_session=True, cwd=str(cfg.project_path))
    _monitors[exp_prefix] = proc
    (logs / f"{exp_prefix}.pid").write_text(f"{proc.pid}\n")


def _register_flush_at_exit() -> None:
    """Submit what is still collected when the script ends.

    Backends submit through thread pools, and by the time ``atexit`` handlers run,
    ``concurrent.futures`` refuses new work ("cannot schedule new futures after interpreter
    shutdown", or "can't register atexit after shutdown" when first imported then). So the
    flush runs among ``threading``'s exit hooks, which run first, after the thread pools'
    own hook has been registered (they run last-in first-out). ``atexit`` stays as the
    fallback (a flush with nothing left to submit does nothing).
    """
    import concurrent.futures.thread  # noqa: F401  (registers its exit hook now)
    import threading

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_flush_at_exit)
    atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    """:func:`flush`, reporting a failure on stderr instead of raising (an exception here
    would skip the exit hooks after it, such as the thread pools' joins)."""
    from chester.errors import ChesterError

    try:
        flush()
    except ChesterError as exc:
        print(f"chester: error: {exc}", file=sys.stderr)
    except Exception:
        import traceback

        print("chester: the runs collected by run_experiment_lite were not submitted:",
              file=sys.stderr)
        traceback.print_exc()


_register_flush_at_exit()


def run_experiment_lite(
    stub_method_call: Callable | None = None,
    batch_tasks: list[dict] | None = None,
    exp_prefix: str = "experiment",
    exp_name: str | None = None,
    log_dir: str | None = None,
    sub_dir: str = "train",
    script: str | None = None,
    python_command: str = "python",
    mode: str = "local",
    use_gpu: bool = False,
    dry: bool = False,
    env: dict | None = None,
    variant: dict | None = None,
    variations: list | None = None,
    use_cloudpickle: bool = True,
    pre_commands: list | None = None,
    print_command: bool = True,
    launch_with_subprocess: bool = True,
    wait_subprocess: bool = True,
    max_num_processes: int = 10,
    compile_script: str | None = None,
    wait_compile: int | None = None,
    use_singularity: bool = False,
    hydra_enabled: bool = False,
    hydra_flags: dict | None = None,
    auto_pull: bool = False,
    auto_pull_interval: int = 60,
    sync_env: bool | None = None,
    extra_pull_dirs: list | None = None,
    **kwargs: Any,
) -> Any:
    """Launch one variant (or ``batch_tasks``) the way the seed did; see the module docstring.

    Returns the :class:`chester.Sweep` once the runs were submitted (else ``None``).
    """
    global _pending
    given = {"script": script, "python_command": python_command,
             "use_cloudpickle": use_cloudpickle, "print_command": print_command,
             "launch_with_subprocess": launch_with_subprocess, "hydra_enabled": hydra_enabled,
             "hydra_flags": hydra_flags}
    for name, default in _OBSOLETE.items():
        if given[name] != default:
            _warn_once(name, f"run_experiment_lite: {name}= no longer applies and is ignored "
                            "(runs always go through python -m chester.worker)")
    for extra in kwargs:
        _warn_once(extra, f"run_experiment_lite: unknown parameter {extra}= is ignored")
    if max_num_processes != 10 and mode == "local":
        _warn_once("max_num_processes", "run_experiment_lite: max_num_processes= is replaced by "
                   "`backends: {local: {type: local, max_parallel: N}}` in chester.yaml")
    if batch_tasks is not None:
        result = None
        for task in batch_tasks:
            task = dict(task)
            fn = task.pop("stub_method_call", stub_method_call)
            v = task.pop("variant", variant)
            result = run_experiment_lite(
                stub_method_call=fn, exp_prefix=task.pop("exp_prefix", exp_prefix),
                exp_name=task.pop("exp_name", None), log_dir=task.pop("log_dir", None),
                sub_dir=sub_dir, mode=mode, use_gpu=use_gpu, dry=dry,
                env=task.pop("env", env), variant=v, variations=variations,
                pre_commands=pre_commands, wait_subprocess=wait_subprocess,
                compile_script=compile_script, wait_compile=wait_compile,
                use_singularity=use_singularity, auto_pull=auto_pull,
                auto_pull_interval=auto_pull_interval, sync_env=sync_env,
                extra_pull_dirs=extra_pull_dirs)
        return result
    if stub_method_call is None:
        raise TypeError("run_experiment_lite needs stub_method_call (the function to run)")
    v = dict(variant or {})
    last = bool(v.pop("chester_last_variant", False))
    v.pop("chester_first_variant", None)
    resources: dict[str, Any] = {}
    if use_gpu:
        resources["gpus"] = v.get("gpus", 1)
    for rkey, val in (("pre_commands", pre_commands), ("compile_script", compile_script),
                     ("wait_compile", wait_compile), ("sync_on_launch", sync_env)):
        if val is not None:
            resources[rkey] = val
    if use_singularity:
        resources["use_singularity"] = True
    settings = {"mode": mode, "exp_prefix": exp_prefix, "sub_dir": sub_dir,
                "variations": list(variations) if variations is not None else [],
                "env": {str(k): str(val) for k, val in (env or {}).items()},
                "resources": resources, "dry": dry, "auto_pull": auto_pull,
                "auto_pull_interval": auto_pull_interval,
                "extra_pull_dirs": list(extra_pull_dirs or [])}
    key = (id(stub_method_call), repr(sorted((k, repr(val)) for k, val in settings.items())))
    if _pending is not None and _pending.key != key:
        flush()
    if _pending is None:
        _pending = _Batch(key, stub_method_call, settings)
    _pending.variants.append(v)
    _pending.names.append(exp_name)
    _pending.dirs.append(os.fspath(log_dir) if log_dir else None)
    local_blocking = wait_subprocess and not dry and _is_local(mode)
    if last or local_blocking:
        sweep = flush()
        if local_blocking and sweep is not None:
            sweep.wait(pull=False, progress=False)
        return sweep
    return None


def _is_local(mode: str) -> bool:
    from chester.config import get_config

    try:
        btype, _raw, _src = get_config().backend_raw(mode)
    except Exception:
        return False
    return btype == "local"
