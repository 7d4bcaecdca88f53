"""The seed's script API, kept working on top of :func:`chester.launch`.

::

    from chester.compat.run_exp import run_experiment_lite, VariantGenerator

    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.01])
    for v in vg.variants():
        run_experiment_lite(stub_method_call=train, variant=v, variations=vg.variations(),
                            exp_prefix="lr-sweep", mode="local", wait_subprocess=False)

Calls are collected per sweep and submitted together (one code sync, one submit) when a
variant carries the seed's ``chester_last_variant`` marker, when the sweep's settings change,
or when the script ends; all launches under one ``exp_prefix`` are one sweep (``chester
status PREFIX``, ``chester.sweep(PREFIX)``). The end-of-script submit runs among the
interpreter's thread-shutdown callbacks, with what the submit needs imported beforehand, so
backends may use threads. ``mode`` names a backend (``local``, a ``backends:`` entry, an SSH
host from ``ssh_hosts``, or an installed backend type such as ``gl``). With the local
backend and the seed's default ``wait_subprocess=True`` each call runs its variant and
waits for it, as before (a launch per call). ``auto_pull=True`` with a remote backend
starts one detached ``python -m chester.auto_pull`` per prefix.

``script`` makes each call a command run (:mod:`chester.command`): ``python_command``
followed by ``script`` (``"train.py"``, ``"-m pkg.train"``, or with fixed arguments), the
variant as ``--key value`` then ``--log_dir DIR --exp_name NAME``; with ``hydra_enabled``
as Hydra overrides ``key=value`` after the ``hydra_flags`` then ``hydra.run.dir=DIR``.
Extra keyword arguments are extra arguments of the script, after the variant's (as the
seed passed them). ``launch_with_subprocess=False`` with ``hydra_enabled`` on the local
backend composes the Hydra config in this process and calls ``stub_method_call(cfg)``.
Parameters that no longer apply (``use_cloudpickle``, ``print_command``; ``python_command``
without ``script``) warn once and are never passed to the worker.
"""

from __future__ import annotations

import atexit
import os
import shlex
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
    "use_cloudpickle": True,
    "print_command": True,
}
_warned: set[str] = set()


def _warn_once(key: str, message: str, stacklevel: int = 3) -> None:
    """Warn about ``key`` once per process, pointing at the script's call (``stacklevel``
    counts from here)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=stacklevel)


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
    from chester.launcher.launching import LaunchRequest, run_request
    from chester.store import RunFolderActive

    s = batch.settings
    names = ([n or f"run-{i}" for i, n in enumerate(batch.names)]
             if any(batch.names) else None)
    dirs = [d for d in batch.dirs if d] if all(batch.dirs) else None
    request = LaunchRequest.of(
        batch.fn, batch.variants, backend=s["mode"], exp_prefix=s["exp_prefix"],
        sub_dir=s["sub_dir"], variations=s["variations"], exp_names=names, run_dirs=dirs,
        env=s["env"], resources=s["resources"], dry_run=s["dry"],
        extra_pull_dirs=s["extra_pull_dirs"], resume="incomplete",
        # named runs have fixed folders: running the script again takes them over
        take_over=bool(names or dirs), surface="seed")
    try:
        sweep = run_request(request)
    except RunFolderActive as exc:  # one line, never a traceback: the seed's loop stops here
        print(f"chester: error: {exc}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(1) from None
    _say_once(sweep)
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


_said: set[str] = set()


def _say_once(sweep: Any) -> None:
    """A launch's line (a new launch of variants that ran before, folders taken over), once
    per prefix and script: a seed loop makes a launch per call. Warnings, every time."""
    from chester.launcher.launching import say

    lines = [(level, text) for level, text in sweep.notices
             if level == "warning" or sweep.exp_prefix not in _said]
    if any(level == "note" for level, _ in lines):
        _said.add(sweep.exp_prefix)
    say(lines)


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
            [sys.executable, "-m", "chester.compat.auto_pull", "--exp-prefix", exp_prefix,
             "--poll-interval", str(interval)], stdin=subprocess.DEVNULL, stdout=out,
            stderr=out, start_new_session=True, cwd=str(cfg.project_path))
    _monitors[exp_prefix] = proc
    (logs / f"{exp_prefix}.pid").write_text(f"{proc.pid}\n")


_exit_hook = False


def _flush_at_exit() -> None:
    """Submit what is still collected as the script ends; a failure exits with status 1."""
    if _pending is None or not _pending.variants:
        return
    try:
        _flush_or_exit()
    except SystemExit:  # said why in one line
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    except BaseException as exc:  # not a known problem: the traceback, then the line
        import traceback

        traceback.print_exc()
        print(f"chester: the runs collected by run_experiment_lite were not submitted: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _flush_or_exit() -> Any:
    """:func:`flush` where the script asks for it (its last variant, a local run it waits
    for, its end): a known problem ends the script in one line with status 1 rather than
    in a traceback through chester's code."""
    from chester.plugin.errors import ChesterError

    try:
        return flush()
    except ChesterError as exc:
        print(f"chester: error: the runs collected by run_experiment_lite were not "
              f"submitted: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _register_exit_flush() -> None:
    """Arrange for :func:`_flush_at_exit` to run when the interpreter ends.

    It runs among the ``threading`` module's exit callbacks, before
    ``concurrent.futures`` refuses new work and before threads are joined, so a backend may
    use thread pools and start threads while it submits. ``concurrent.futures.thread`` is
    imported here, now, because importing it during shutdown fails ("can't register atexit
    after shutdown"). The plain ``atexit`` hook stays as a fallback for calls collected
    after that point.
    """
    global _exit_hook
    if _exit_hook:
        return
    _exit_hook = True
    import concurrent.futures.thread  # noqa: F401  (see the docstring)
    import threading

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_flush_at_exit)
        except RuntimeError:  # already shutting down: the atexit hook below runs it
            pass
    atexit.register(_flush_at_exit)


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
    _check_arguments(script=script, python_command=python_command, kwargs=kwargs,
                     use_cloudpickle=use_cloudpickle, print_command=print_command,
                     hydra_enabled=hydra_enabled, hydra_flags=hydra_flags,
                     launch_with_subprocess=launch_with_subprocess)
    if not launch_with_subprocess:
        if batch_tasks is not None:
            raise TypeError("run_experiment_lite: launch_with_subprocess=False takes one "
                            "variant, not batch_tasks")
        return _run_in_process(stub_method_call, script, variant, exp_prefix, exp_name,
                               log_dir, sub_dir, mode, dry, hydra_flags, kwargs)
    if max_num_processes != 10 and mode == "local":
        _warn_once("max_num_processes", "run_experiment_lite: max_num_processes= is replaced by "
                   "`backends: {local: {type: local, max_parallel: N}}` in chester.yaml")
    shared: dict[str, Any] = {"hydra_enabled": hydra_enabled, "hydra_flags": hydra_flags, "sub_dir": sub_dir,
              "mode": mode, "use_gpu": use_gpu, "dry": dry, "variations": variations,
              "pre_commands": pre_commands, "wait_subprocess": wait_subprocess,
              "compile_script": compile_script, "wait_compile": wait_compile,
              "use_singularity": use_singularity, "auto_pull": auto_pull,
              "auto_pull_interval": auto_pull_interval, "sync_env": sync_env,
              "extra_pull_dirs": extra_pull_dirs}
    if batch_tasks is not None:
        result = None
        for task in batch_tasks:
            task = dict(task)
            result = run_experiment_lite(
                stub_method_call=task.pop("stub_method_call", stub_method_call),
                script=task.pop("script", script),
                python_command=task.pop("python_command", python_command),
                exp_prefix=task.pop("exp_prefix", exp_prefix),
                exp_name=task.pop("exp_name", None), log_dir=task.pop("log_dir", None),
                env=task.pop("env", env), variant=task.pop("variant", variant),
                **shared, **kwargs)
        return result
    target, target_key = _target(stub_method_call, script, python_command, hydra_enabled,
                                 hydra_flags)
    return _collect(target, target_key, variant=variant, script=script, kwargs=kwargs,
                    exp_prefix=exp_prefix, exp_name=exp_name, log_dir=log_dir, env=env,
                    **{k: shared[k] for k in _COLLECTED})


_COLLECTED = ("sub_dir", "mode", "use_gpu", "dry", "variations", "pre_commands",
              "wait_subprocess", "compile_script", "wait_compile", "use_singularity",
              "auto_pull", "auto_pull_interval", "sync_env", "extra_pull_dirs")


def _check_arguments(*, script: str | None, python_command: str, kwargs: dict,
                     use_cloudpickle: bool, print_command: bool, hydra_enabled: bool,
                     hydra_flags: dict | None, launch_with_subprocess: bool) -> None:
    """Warn once about what no longer applies; refuse combinations that cannot work."""
    given = {"use_cloudpickle": use_cloudpickle, "print_command": print_command}
    for name, default in _OBSOLETE.items():
        if given[name] != default:
            _warn_once(name, f"run_experiment_lite: {name}= no longer applies and is ignored "
                            "(runs always go through python -m chester.worker)", 4)
    if script is None:
        if python_command != "python":
            _warn_once("python_command", "run_experiment_lite: python_command= applies only "
                       "with script=; a function runs with the backend's configured Python", 4)
        for extra in kwargs:
            _warn_once(extra, f"run_experiment_lite: {extra}= is ignored (extra parameters "
                       "are arguments of a script=, and there is none)", 4)
    if hydra_flags and not hydra_enabled:
        raise TypeError("run_experiment_lite: hydra_flags= needs hydra_enabled=True")
    if not launch_with_subprocess and not hydra_enabled:
        raise TypeError("run_experiment_lite: launch_with_subprocess=False runs a Hydra app "
                        "in this process and needs hydra_enabled=True")


def _target(stub_method_call: Callable | None, script: str | None, python_command: str,
            hydra_enabled: bool, hydra_flags: dict | None) -> tuple[Callable, Any]:
    """What each run runs (the function, or a command for ``script=``), and the key under
    which calls with the same target collect into one launch."""
    if script is not None:
        from chester.target.command import Command, CommandError

        try:
            command = Command(shlex.split(python_command) + shlex.split(script),
                              "hydra" if hydra_enabled else "argparse",
                              hydra_flags=hydra_flags)
        except CommandError as exc:
            raise TypeError(f"run_experiment_lite: {exc}") from None
        return command, ("command", tuple(command.argv), command.args_style,
                         repr(sorted(command.hydra_flags.items())))
    if hydra_enabled:
        raise TypeError("run_experiment_lite: hydra_enabled=True runs a Hydra app: give its "
                        "file as script= (e.g. script='train.py')")
    if stub_method_call is None:
        raise TypeError("run_experiment_lite needs stub_method_call (the function to run) "
                        "or script= (a script to run)")
    return stub_method_call, id(stub_method_call)


def _collect(target: Callable, target_key: Any, *, variant: dict | None, script: str | None,
             kwargs: dict, exp_prefix: str, exp_name: str | None, log_dir: str | None,
             env: dict | None, sub_dir: str, mode: str, use_gpu: bool, dry: bool,
             variations: list | None, pre_commands: list | None, wait_subprocess: bool,
             compile_script: str | None, wait_compile: int | None, use_singularity: bool,
             auto_pull: bool, auto_pull_interval: int, sync_env: bool | None,
             extra_pull_dirs: list | None) -> Any:
    """Add one variant to the launch being collected (submitting the one before when its
    settings differ); submit now on the seed's last-variant marker, or on the local
    backend when the call waits for its run."""
    global _pending
    v = dict(variant or {})
    if script is not None:
        for k, val in kwargs.items():  # the seed passed them after the variant's arguments
            v.setdefault(k, val)
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
    key = (target_key, repr(sorted((k, repr(val)) for k, val in settings.items())))
    if _pending is not None and _pending.key != key:
        flush()
    if _pending is None:
        _register_exit_flush()
        _pending = _Batch(key, target, settings)
    _pending.variants.append(v)
    _pending.names.append(exp_name)
    _pending.dirs.append(os.fspath(log_dir) if log_dir else None)
    local_blocking = wait_subprocess and not dry and _is_local(mode)
    if last or local_blocking:
        sweep = _flush_or_exit()
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


def _run_in_process(fn: Callable | None, script: str | None, variant: dict | None,
                    exp_prefix: str, exp_name: str | None, log_dir: str | None, sub_dir: str,
                    mode: str, dry: bool, hydra_flags: dict | None, extra: dict) -> Any:
    """The seed's ``launch_with_subprocess=False``: compose the Hydra config of the variant
    here and call ``fn(cfg)`` (a debugging path: local only, not a tracked run).

    The config is ``config_name`` (default ``config``) in ``config_path`` (default the
    ``configs`` folder beside ``script``, else in the project root); both may be given as
    keyword arguments. Other keyword arguments are extra overrides.
    """
    from pathlib import Path

    from chester.config import get_config
    from chester.target.command import Command, CommandError
    from chester.variants.naming import auto_suffix, safe_component

    if fn is None:
        raise TypeError("run_experiment_lite: launch_with_subprocess=False calls "
                        "stub_method_call(cfg) in this process; give stub_method_call")
    if not _is_local(mode):
        raise TypeError("run_experiment_lite: launch_with_subprocess=False runs in this "
                        f"process and needs a local mode, not mode={mode!r}")
    if hydra_flags:
        _warn_once("hydra_flags_in_process", "run_experiment_lite: hydra_flags= do not apply "
                   "to an in-process compose and are ignored")
    extra = dict(extra)
    cfg_root = get_config().project_path
    config_name = str(extra.pop("config_name", "config"))
    config_path = extra.pop("config_path", None)
    if config_path is None:
        script_dir = Path(script).parent if script and script.endswith(".py") else Path()
        config_path = cfg_root / script_dir / "configs"
    config_dir = Path(config_path).expanduser()
    if not config_dir.is_absolute():
        config_dir = cfg_root / config_dir
    if not config_dir.is_dir():
        raise TypeError(f"run_experiment_lite: no Hydra config folder {config_dir}; give "
                        "config_path= (the folder holding config_name.yaml)")
    v = {k: val for k, val in dict(variant or {}).items()
         if k not in ("chester_first_variant", "chester_last_variant")}
    v.update(extra)
    name = safe_component(exp_name or auto_suffix(exp_prefix, v, []))
    out = Path(log_dir).expanduser() if log_dir else \
        get_config().log_dir / sub_dir / exp_prefix / name
    if not out.is_absolute():
        out = cfg_root / out
    try:
        overrides = Command(["app"], "hydra").build(v, str(out), name)[1:]
    except CommandError as exc:
        raise TypeError(f"run_experiment_lite: {exc}") from None
    if dry:
        print(f"compose {config_dir / config_name} with {overrides}")
        return None
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict
    except ImportError:
        raise TypeError("run_experiment_lite: launch_with_subprocess=False needs hydra-core "
                        "(pip install hydra-core)") from None
    from hydra.core.singleton import Singleton

    state = Singleton.get_state()  # Hydra's process-wide state (version base, config)
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose(config_name=config_name, overrides=overrides,
                          return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.name = name
        out.mkdir(parents=True, exist_ok=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):  # the app sees its own config, as under @hydra.main
            del cfg["hydra"]
        return fn(cfg)
    finally:  # as the app's own run ends: Hydra's state in this process as it was
        Singleton.set_state(state)
