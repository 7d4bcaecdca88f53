"""``chester.yaml``: finding it, validating it, and turning it into backend configs.

Search order: ``$CHESTER_CONFIG_PATH``, then ``chester.yaml`` in the current directory and
its parents up to the git root, then built-in defaults (the local backend only).

The seed's keys keep working, and so does the seed's module interface::

    from chester import config
    config.PROJECT_PATH, config.LOG_DIR, config.REMOTE_DIR["gl"], config.RSYNC_INCLUDE, ...

``python -m chester.config`` (or ``chester config``) prints the resolved configuration and
where each value came from.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from chester.plugin.errors import ConfigError, UnknownBackendError
from chester.plugin.records import BackendConfig

POOL_TYPE = "pool"  # chester.plugin.pool.POOL_TYPE (not imported: config loads first)

CONFIG_ENV = "CHESTER_CONFIG_PATH"
CONFIG_NAME = "chester.yaml"
#: The earlier chester 2.0's place for the same file (its project is the folder holding
#: ``.chester``): found when a folder has no chester.yaml.
LEGACY_CONFIG = (".chester", "config.yaml")

#: Top-level keys with their expected type, default and help.
GLOBAL_KEYS: dict[str, tuple[Any, Any, str]] = {
    "project_path": (str, None, "local project root (default: the folder holding chester.yaml)"),
    "log_dir": (str, "data", "local log root, relative to project_path"),
    "package_manager": (str, "python", "how runs get their Python: uv, conda or python"),
    "conda_env": (str, None, "conda environment, with package_manager: conda"),
    "conda_command": (str, "conda", "conda or mamba"),
    "sync_on_launch": (bool, True, "run `uv sync` / `conda env update` before remote runs"),
    "prepare_commands": (list, [], "shell lines run before each remote run"),
    "rsync_include": (list, [], "rsync --include patterns for code sync"),
    "rsync_exclude": (list, [], "rsync --exclude patterns for code sync"),
    "host_address": (dict, {}, "seed: mode -> SSH destination"),
    "ssh_hosts": (list, [], "seed: modes that are plain SSH hosts"),
    "remote_dir": (dict, {}, "seed: mode -> project root on the target"),
    "remote_log_dir": (dict, {}, "seed: mode -> log root on the target; must be remote_dir "
                                 "+ log_dir, where chester puts run folders"),
    "remote_header": (dict, {}, "seed: mode -> raw SLURM header text"),
    "modules": (dict, {}, "seed: mode -> modules to load"),
    "cuda_module": (dict, {}, "seed: mode -> CUDA module to load with GPUs"),
    "simg_path": (dict, {}, "seed: mode -> Singularity image"),
    "remote_mount_option": (dict, {}, "seed: mode -> Singularity bind"),
    "autobot_nodelist": (list, [], "seed: autobot nodes (ids 1-1 mean autobot-1-1): the "
                                   "autobot backend's `nodes` unless it sets them"),
    "gpu_state_dir": (str, "", "seed: autobot GPU state folder"),
    "chester_queue_dir": (str, "", "seed: autobot queue folder"),
    "chester_scheduler_log_dir": (str, "", "seed: autobot scheduler logs"),
    "scheduler_username": (str, "", "seed: the user whose processes the autobot scheduler "
                                    "counted"),
    "hydra_config_path": (str, "configs", "Hydra config folder"),
    "backends": (dict, {}, "named backends: {name: {type: ..., options...}}"),
}
#: The earlier chester's keys that nothing here implements: set, they are an error that says
#: what to do instead (an empty value is accepted, as seed configs often carry them).
NOT_SUPPORTED = {
    "gpu_state_dir": "the autobot backend reads each node's nvidia-smi itself and keeps GPU "
                     "leases under remote_dir (or its lease_dir option); remove the key",
    "chester_queue_dir": "the autobot backend keeps its queue under <remote_dir>/.chester/"
                         "autobot; remove the key",
    "chester_scheduler_log_dir": "the autobot scheduler logs to <remote_dir>/.chester/autobot/"
                                 "scheduler.log; remove the key",
    "scheduler_username": "the autobot scheduler runs as the SSH user and tells its own runs "
                          "by their records, not by a user name; remove the key",
}
PER_MODE_KEYS = ("host_address", "remote_dir", "remote_log_dir", "remote_header", "modules",
                 "cuda_module", "simg_path", "remote_mount_option")
LEGACY_OPTION_NAMES = {"host_address": "host"}
SEED_SLURM_MODES = ("gl", "seuss", "psc", "satori")
#: The earlier chester's local Singularity modes: the local backend inside the image
#: ``simg_path[local_singularity]`` (``singularity`` was its older name).
LOCAL_SINGULARITY_MODES = ("local_singularity", "singularity")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping", tuple: "a list"}


@attrs.frozen(kw_only=True)
class ChesterConfig:
    """The resolved configuration."""

    path: Path | None
    project_path: Path
    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def log_dir(self) -> Path:
        p = Path(os.path.expanduser(self.values["log_dir"]))
        return p if p.is_absolute() else self.project_path / p

    @property
    def store_path(self) -> Path:
        return self.project_path / ".chester" / "jobs.db"

    def where(self) -> str:
        return str(self.path) if self.path else "<built-in defaults>"

    # -- backends ----------------------------------------------------------------------
    def backend_names(self) -> list[str]:
        names = set(self.values["backends"]) | set(self.values["ssh_hosts"])
        names |= set(self.values["host_address"])
        names |= set(LOCAL_SINGULARITY_MODES) & set(self.values["simg_path"])
        return sorted(names | {"local"})

    def backend_raw(self, name: str) -> tuple[str, dict[str, Any], str]:
        """(type, options mapping, source) for backend ``name``, before validation."""
        v = self.values
        explicit = v["backends"].get(name)
        legacy: dict[str, Any] = {}
        for key in PER_MODE_KEYS:
            table = v.get(key) or {}
            if name in table:
                legacy[LEGACY_OPTION_NAMES.get(key, key)] = table[name]
        if explicit is not None:
            if not isinstance(explicit, Mapping):
                raise ConfigError(self.where(), f"backends.{name}", "must be a mapping",
                                  "write `type: <backend type>` and its options under it")
            opts = dict(explicit)
            btype = opts.pop("type", None) or name
            merged = {**legacy, **opts}
            if btype == "autobot" and v.get("autobot_nodelist") and "nodes" not in merged:
                merged["nodes"] = list(v["autobot_nodelist"])
            return str(btype), merged, f"{self.where()} backends.{name}"
        if name in v["ssh_hosts"]:
            return "ssh", legacy, f"{self.where()} ssh_hosts"
        if name == "autobot" and v.get("autobot_nodelist"):
            legacy["nodes"] = list(v["autobot_nodelist"])
        if name in LOCAL_SINGULARITY_MODES:
            opts = _local_singularity(v)
            if "simg_path" not in opts:
                raise ConfigError(self.where(), f"simg_path.{name}", "missing: mode "
                                  f"{name!r} runs locally inside that image",
                                  f"set `simg_path: {{{name}: /path/to/image.sif}}`")
            return "local", opts, f"{self.where()} simg_path"
        return name, legacy, (self.where() if legacy else "<implicit>")

    def backend(self, name: str, manager: Any = None) -> BackendConfig:
        """Validate and return backend ``name``'s configuration."""
        from chester.plugin.manager import get_plugin_manager, unknown_backend_message

        manager = manager or get_plugin_manager()
        btype, raw, source = self.backend_raw(name)
        installed = manager.backends()
        if btype not in installed:
            names = list(self.backend_names())
            if name == btype and name not in self.values["backends"]:
                raise UnknownBackendError(_unknown_name(self, name, sorted(installed), manager))
            raise UnknownBackendError(
                f"{self.where()}: backends.{name}.type: "
                + unknown_backend_message(btype, sorted(installed), manager.records.get(btype),
                                          names))
        spec = manager.get_backend(btype).spec
        raw = from_chester_2(spec.options_cls, raw, path=self.where(), key=f"backends.{name}")
        options = build_options(spec.options_cls, raw, path=self.where(),
                                key=f"backends.{name}" if name in self.values["backends"] else name,
                                legacy_ok=True)
        if spec.remote_root is not None and name in self.values["remote_log_dir"]:
            self._check_remote_log_dir(name, spec.remote_root(options))
        v = self.values
        members: tuple[BackendConfig, ...] = ()
        if btype == POOL_TYPE:
            members = tuple(self._pool_members(name, options, manager))
        return BackendConfig(
            members=members,
            name=name, type=btype, options=options, project_path=self.project_path,
            log_dir=self.log_dir, source=source,
            rsync_include=tuple(v["rsync_include"]), rsync_exclude=tuple(v["rsync_exclude"]),
            prepare_commands=tuple(v["prepare_commands"]),
            package_manager=v["package_manager"], conda_env=v["conda_env"],
            conda_command=v["conda_command"], sync_on_launch=v["sync_on_launch"],
        )

    def _pool_members(self, name: str, options: Any, manager: Any) -> list[BackendConfig]:
        """A pool's members, each validated as its own backend; a member that is itself a
        pool is refused before it is read (so two pools naming each other end too)."""
        from chester.plugin.pool import check_members

        return check_members(name, options, lambda m: self.backend(m, manager),
                             lambda m: self.backend_raw(m)[0], self.where())

    def _check_remote_log_dir(self, name: str, remote_root: str | None) -> None:
        """Backend ``name``'s ``remote_log_dir`` against where its runs really go: under its
        remote root, or, with none (a cluster that shares this file system), here."""
        from chester.remote.paths import remote_path

        given = self.values["remote_log_dir"].get(name)
        if not isinstance(given, str) or not given:
            return
        if remote_root:
            want = os.path.normpath(remote_path(self.log_dir, self.project_path, remote_root))
        elif _remote_dir_of(self.values, name) is None:
            want = os.path.normpath(self.log_dir)
        else:  # compared with the configured remote_dir when the file was loaded
            return
        _refuse_other_log_dir(self, name, given, want)


def _unknown_name(cfg: ChesterConfig, name: str, installed: list[str], manager: Any) -> str:
    """One line for a backend name that is neither configured nor an installed type:
    the nearest name, the package when it is one of chester's backends, else how to
    configure it."""
    from chester.plugin.manager import KNOWN_BACKENDS, unknown_backend_message

    rec = manager.records.get(name)
    if rec is not None and rec.status in ("error", "blocked"):
        return unknown_backend_message(name, installed, rec)
    configured = list(cfg.backend_names())
    where = f"configured in {cfg.where()}: {', '.join(configured) or 'none'}; " \
        f"types installed: {', '.join(installed) or 'none'}"
    close = _close(name, list(dict.fromkeys([*configured, *installed, *KNOWN_BACKENDS])))
    if close:
        return f"unknown backend {name!r}; did you mean {close[0]!r}? ({where})"
    if name in KNOWN_BACKENDS:
        return (f"unknown backend {name!r}: its plugin is not installed; install it "
                f"with: pip install chester-backend-{name}")
    return (f"unknown backend {name!r} ({where}); name a configured backend, or add "
            f"this one to chester.yaml: backends: {{{name}: {{type: slurm, ...}}}}")


def _local_singularity(v: Mapping[str, Any]) -> dict[str, Any]:
    """The local backend's options for the seed's ``local_singularity`` mode: the image and
    binds under either mode name (the seed read ``simg_path['local_singularity']``)."""
    opts: dict[str, Any] = {"use_singularity": True}
    for key in ("simg_path", "remote_mount_option"):
        table = v.get(key) or {}
        for mode in LOCAL_SINGULARITY_MODES:
            if mode in table:
                opts[key] = table[mode]
                break
    return opts


def _yaml_scalar(value: Any) -> str:
    """``value`` as it would be written in chester.yaml (for the fix of an error)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value and ":" not in value else \
            json.dumps(value)
    return json.dumps(value, default=str)


# -- typed option building --------------------------------------------------------------------
def _check_type(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, converted value) for a YAML value against a field annotation."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return True, None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            ok, conv = _check_type(value, arg)
            if ok:
                return True, conv
        return False, value
    if origin is typing.Literal:
        return (value in typing.get_args(tp)), value
    if origin in (tuple, list, typing.Sequence) or tp in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return False, value
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        out: list[Any] = []
        for item in value:
            if args:
                ok, conv = _check_type(item, args[0])
                if not ok:
                    return False, value
                out.append(conv)
            else:
                out.append(item)
        return True, tuple(out)
    if origin in (dict, typing.Mapping) or tp in (dict,):
        if not isinstance(value, Mapping):
            return False, value
        kv_args = typing.get_args(tp)
        if kv_args:
            out_d = {}
            for k, item in value.items():
                ok, conv = _check_type(item, kv_args[1])
                if not ok:
                    return False, value
                out_d[str(k)] = conv
            return True, out_d
        return True, dict(value)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)), value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        return _TYPE_NAMES.get(origin, str(tp))
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _close(word: str, known: Any) -> list[str]:
    """The nearest known name, for "did you mean" (difflib is loaded only for errors)."""
    import difflib

    return difflib.get_close_matches(word, list(known), n=1)


def _attrs_class_of(tp: Any) -> type | None:
    """The attrs class a field holds (``X`` or ``X | None``), if any."""
    if isinstance(tp, type) and attrs.has(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if isinstance(a, type) and attrs.has(a)]
        return found[0] if len(found) == 1 else None
    return None


#: chester 2.0's ``slurm:`` block fields that are options of the same name here
CHESTER_2_SLURM = ("partition", "time", "nodes", "gpus", "cpus_per_gpu", "mem_per_gpu",
                   "ntasks_per_node")


def from_chester_2(cls: type, raw: dict[str, Any], *, path: str, key: str) -> dict[str, Any]:
    """A backend written in chester 2.0's ``.chester/config.yaml`` shape, as this chester's
    options (only where ``cls`` has no option of that name):

    - ``prepare: FILE`` is ``prepare_script``;
    - ``slurm: {partition, time, nodes, gpus, cpus_per_gpu, mem_per_gpu, ntasks_per_node}``
      are the options of those names (an option given beside the block wins);
      ``email_begin``/``email_end`` are ``mail_user`` and ``mail_type``; any other key is an
      ``#SBATCH --key=value`` line (``--key`` for ``true``), as 2.0 wrote it;
    - ``singularity: {image, mounts, gpu, enabled, writable_tmpfs, overlay, fakeroot,
      pid_namespace}`` is ``container`` (2.0's default ``fakeroot: true`` included); a key
      this chester cannot honour (``build_script``, ``workdir``, ``prepare``) is one line."""
    if not isinstance(raw, Mapping):
        return raw
    names = {f.name for f in attrs.fields(cls)}
    out = dict(raw)
    if "prepare" in out and "prepare" not in names and "prepare_script" in names:
        out.setdefault("prepare_script", out.pop("prepare"))
    block = out.get("slurm")
    if isinstance(block, Mapping) and "slurm" not in names and "sbatch" in names:
        del out["slurm"]
        lines = list(_str_list(out.get("sbatch")))
        mail_types: list[str] = []
        for k, v in block.items():
            k = str(k)
            if k in CHESTER_2_SLURM:
                out.setdefault(k, v)
            elif k in ("email_begin", "email_end"):
                if v:
                    out.setdefault("mail_user", v)
                    mail_types += ["BEGIN"] if k == "email_begin" else ["END", "FAIL"]
            elif k == "extras" and isinstance(v, Mapping):
                lines += [_sbatch_line(str(a), b) for a, b in v.items() if b is not False]
            elif v is not False and v is not None:
                lines.append(_sbatch_line(k, v))
        if mail_types:
            out.setdefault("mail_type", ",".join(mail_types))
        if lines:
            out["sbatch"] = lines
    sing = out.get("singularity")
    if isinstance(sing, Mapping) and "singularity" not in names and "container" in names:
        del out["singularity"]
        unsupported = sorted(k for k in sing if k in ("build_script", "workdir", "prepare"))
        if unsupported:
            raise ConfigError(path, f"{key}.singularity.{unsupported[0]}",
                              "chester 2.0's singularity option is not supported here",
                              "build the image beforehand, and put the prepare lines in "
                              "prepare_commands (they run inside the container)")
        if "image" not in sing:
            raise ConfigError(path, f"{key}.singularity.image", "missing required option",
                              "give the image file (.sif) on the target")
        if sing.get("enabled", True):
            opts = [*(["--fakeroot"] if sing.get("fakeroot", True) else []),
                    *(["--writable-tmpfs"] if sing.get("writable_tmpfs") else []),
                    *(["--pid"] if sing.get("pid_namespace") else []),
                    *(["--overlay", str(sing["overlay"])] if sing.get("overlay") else [])]
            out.setdefault("container", {"image": sing["image"],
                                         "binds": list(_str_list(sing.get("mounts"))),
                                         **({"nv": bool(sing["gpu"])} if "gpu" in sing else {}),
                                         "options": opts})
    return out


def _sbatch_line(k: str, v: Any) -> str:
    k = k if k.startswith("--") else f"--{k}"
    return k if v is True else f"{k}={v}"


def _str_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


#: Options that take counts of at least 1 whatever backend declares them (a field's
#: ``metadata={"min": N}`` sets another floor).
MIN_ONE_OPTIONS = frozenset({"max_parallel"})


def build_options(cls: type, raw: Mapping[str, Any], *, path: str, key: str,
                  legacy_ok: bool = False) -> Any:
    """Build an attrs options object from YAML, with one-line errors naming file and key.

    ``legacy_ok`` lets the seed's per-mode keys through when the class has no such field.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(path, key, "must be a mapping of options")
    attrs.resolve_types(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    legacy_names = {LEGACY_OPTION_NAMES.get(k, k) for k in PER_MODE_KEYS}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        name = str(name)
        if name not in fields:
            if legacy_ok and name in legacy_names:
                continue
            close = _close(name, fields)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"valid options: {', '.join(sorted(fields)) or 'none'}"
            raise ConfigError(path, f"{key}.{name}", "unknown option", hint)
        f = fields[name]
        nested = _attrs_class_of(f.type)
        if nested is not None and isinstance(value, (Mapping, str)):
            # a group of options of its own (e.g. ``container: {image: ...}``); a string is
            # the group's first required field (``container: /images/x.sif``)
            if isinstance(value, str):
                first = next(a.name for a in attrs.fields(nested) if a.default is attrs.NOTHING)
                value = {first: value}
            kwargs[name] = build_options(nested, value, path=path, key=f"{key}.{name}")
            continue
        ok, conv = _check_type(value, f.type)
        if not ok and value is None:
            default: Any = f.default
            factory = getattr(default, "factory", None)
            if factory is not None:  # attrs.Factory
                default = factory()
            fix = f"give {_type_name(f.type)}" + (
                f" ({f.metadata['help']})" if f.metadata.get("help") else "")
            if f.default is not attrs.NOTHING:
                fix += f", or remove the line for the default {_yaml_scalar(default)}"
            raise ConfigError(path, f"{key}.{name}", "is empty (null)", fix)
        if not ok:
            raise ConfigError(path, f"{key}.{name}",
                              f"expected {_type_name(f.type)}, got {type(value).__name__} {value!r}"[:200],
                              f.metadata.get("help"))
        low = f.metadata.get("min", 1 if name in MIN_ONE_OPTIONS else None)
        if low is not None and isinstance(conv, (int, float)) and not isinstance(conv, bool) \
                and conv < low:
            raise ConfigError(path, f"{key}.{name}", f"must be at least {low}, got {value!r}",
                              f.metadata.get("help"))
        kwargs[name] = conv
    for name, f in fields.items():
        if f.default is attrs.NOTHING and name not in kwargs:
            raise ConfigError(path, f"{key}.{name}", "missing required option",
                              f"add `{name}: ...` ({f.metadata.get('help', _type_name(f.type))})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, key, str(exc)) from None


# -- finding and loading ------------------------------------------------------------------------
def find_config_path(start: Path | None = None) -> tuple[Path | None, str]:
    """Where chester.yaml is, and why."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p.resolve(), f"${CONFIG_ENV}"
        raise ConfigError(p, None, f"${CONFIG_ENV} points at a file that does not exist",
                          f"create it or unset {CONFIG_ENV}")
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        cand = d / CONFIG_NAME
        if cand.is_file():
            return cand, "found in a parent of the current directory"
        cand = d.joinpath(*LEGACY_CONFIG)
        if cand.is_file():
            return cand, "found in a parent of the current directory (.chester/config.yaml)"
        if (d / ".git").exists():
            break
    return None, "no chester.yaml found; built-in defaults"


def config_folder(path: Path) -> Path:
    """The project folder of a config file: the folder holding it, or for
    ``.chester/config.yaml`` the folder holding ``.chester``."""
    if path.name == LEGACY_CONFIG[1] and path.parent.name == LEGACY_CONFIG[0]:
        return path.parent.parent
    return path.parent


def _project_root(start: Path) -> Path:
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return start


def cache_root() -> Path:
    """chester's cache folder: ``$CHESTER_CACHE_DIR``, else ``$XDG_CACHE_HOME/chester``
    (``~/.cache/chester``)."""
    env = os.environ.get("CHESTER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chester"


def prune_cache(folder: Path, prefix: str, suffix: str, *, keep: int,
                min_age_s: float = 86400.0) -> None:
    """Remove the files ``prefix*suffix`` of a cache folder beyond the ``keep`` most
    recently used (by mtime: their users touch them on each use), except any used within
    ``min_age_s``: a file another process may be about to read stays. Called when a new
    file is written, so a cache of remembered configs or runtimes stays bounded. Errors
    (another process pruning too, a read-only cache) are ignored."""
    import time

    try:
        with os.scandir(folder) as it:
            found = [(e.stat().st_mtime, e.path) for e in it
                     if e.name.startswith(prefix) and e.name.endswith(suffix) and e.is_file()]
    except OSError:
        return
    if len(found) <= keep:
        return
    found.sort(reverse=True)
    cutoff = time.time() - min_age_s
    for mtime, path in found[keep:]:
        if mtime < cutoff:
            try:
                os.unlink(path)
            except OSError:
                pass


def prune_temporaries(folder: Path, min_age_s: float = 3600.0) -> None:
    """Remove the temporary files (``.NAME.<pid>....tmp``) a process killed while writing
    into a cache folder left behind; a file younger than ``min_age_s`` may still be
    written and stays."""
    import time

    cutoff = time.time() - min_age_s
    try:
        with os.scandir(folder) as it:
            old = [e.path for e in it if e.name.startswith(".") and e.name.endswith(".tmp")
                   and e.is_file() and e.stat().st_mtime < cutoff]
    except OSError:
        return
    for path in old:
        try:
            os.unlink(path)
        except OSError:
            pass


_cache_warned: set[str] = set()


def cache_problem(folder: Path, exc: OSError) -> None:
    """Say once per process, in one line on stderr, that a cache folder cannot be used:
    chester goes on without it (a cache only saves time)."""
    if str(folder) in _cache_warned:
        return
    _cache_warned.add(str(folder))
    why = exc.strerror or str(exc)
    sys.stderr.write(f"chester: warning: the cache folder {folder} cannot be written ({why}); "
                     "going on without it (set CHESTER_CACHE_DIR to a writable folder to "
                     "keep a cache)\n")


def touch(path: Path) -> None:
    """Mark a cache file used now (see :func:`prune_cache`); a read-only cache is fine."""
    try:
        os.utime(path)
    except OSError:
        pass


#: how many remembered configs (one per chester.yaml text) the cache keeps
CONFIG_MEMOS = 64


def _json_exact(value: Any, depth: int = 0) -> bool:
    """JSON holds exactly this value (and gives it back with the same types)."""
    t = type(value)
    if t in (str, int, bool) or value is None:
        return True
    if t is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if depth > 100:
        return False
    if t is list:
        return all(_json_exact(v, depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and _json_exact(v, depth + 1) for k, v in value.items())
    return False


def _parsed_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, remembered by the text's digest in the cache folder as
    JSON where JSON holds it exactly: a command reads its unchanged chester.yaml without
    importing the YAML parser (which costs more than the rest of loading the config)."""
    import json

    from chester.digests import sha256

    memo = cache_root() / "config" / (
        sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32] + ".json")
    try:
        with open(memo, encoding="utf-8") as f:
            raw = json.load(f)["yaml"]
        touch(memo)
        return raw
    except (OSError, ValueError, KeyError, TypeError):
        pass
    import yaml

    raw = yaml.safe_load(text)  # a syntax error goes to the caller, remembered never
    if _json_exact(raw):
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"yaml": raw}), encoding="utf-8")
            os.replace(tmp, memo)
        except OSError as exc:  # a read-only or full cache: parsed again next time
            try:
                tmp.unlink()
            except OSError:
                pass
            cache_problem(cache_root(), exc)
        else:
            prune_cache(memo.parent, "", ".json", keep=CONFIG_MEMOS)
            prune_temporaries(memo.parent)
    return raw


def load_config(path: Path | None = None, *, start: Path | None = None) -> ChesterConfig:
    """Find (unless ``path`` is given), parse and validate the configuration."""
    if path is None:
        path, _why = find_config_path(start)
    raw = _read_config_file(path) if path is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in raw.items():
        key = str(key)
        values[key] = _checked_value(path, key, value)
        sources[key] = str(path)
    for key, (tp, default, _h) in GLOBAL_KEYS.items():
        if key not in values:
            values[key] = tp() if tp in (list, dict) else default
            sources[key] = "default"
    _check_together(path, values)
    if values["project_path"]:
        project = Path(os.path.expanduser(values["project_path"]))
        if not project.is_absolute():
            project = (config_folder(path) if path else Path.cwd()) / project
    else:
        project = config_folder(path) if path else _project_root(Path.cwd().resolve())
        sources["project_path"] = "folder of chester.yaml" if path else "git root or cwd"
    values["project_path"] = str(project)
    cfg = ChesterConfig(path=path, project_path=project, values=values, sources=sources)
    _check_remote_log_dirs(cfg)
    return cfg


def _read_config_file(path: Path) -> Mapping[str, Any]:
    """The top-level mapping of the YAML file at ``path``; what cannot be read, decoded or
    parsed is a :class:`ConfigError` naming the spot and the fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(path, f"line {line}", f"not UTF-8 text (byte "
                          f"{exc.object[exc.start]:#04x})",
                          "save the file as UTF-8") from None
    try:
        raw = _parsed_yaml(text)
    except Exception as exc:
        import yaml

        if not isinstance(exc, yaml.YAMLError):
            raise
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"YAML syntax error: {problem}",
                          "fix the syntax at that spot") from None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(path, None, "the top level must be a mapping of keys",
                          "write `key: value` lines")
    return raw


def _checked_value(path: Path | None, key: str, value: Any) -> Any:
    """One top-level key's value, checked against :data:`GLOBAL_KEYS` (a known key, not
    empty where its default is not, of its type)."""
    if key not in GLOBAL_KEYS:
        close = _close(key, GLOBAL_KEYS)
        raise ConfigError(path, key, "unknown key",
                          f"did you mean {close[0]!r}?" if close else
                          "see `chester config` for the valid keys")
    tp, default, help_ = GLOBAL_KEYS[key]
    if value is None and tp in (list, dict):
        value = tp()
    if (value is None or value == "") and default not in (None, "") \
            and not isinstance(default, (list, dict)):
        # an empty line (`log_dir:`) is YAML's null: never the default it looks like
        raise ConfigError(path, key, "is empty" if value == "" else "is empty (null)",
                          f"give {_TYPE_NAMES[tp]} ({help_}), e.g. `{key}: "
                          f"{_yaml_scalar(default)}`, or remove the line for that default")
    ok, _ = _check_type(value, tp if tp is not str else (str | None))
    if not ok:
        raise ConfigError(path, key, f"expected {_TYPE_NAMES[tp]}, got {type(value).__name__}",
                          help_)
    return str(value) if tp is str and value is not None else value


def _check_together(path: Path | None, values: dict[str, Any]) -> None:
    """What the keys must satisfy together or entry by entry (``values`` complete with the
    defaults); an empty ``backends`` entry becomes ``{}``."""
    if values["package_manager"] not in ("uv", "conda", "python"):
        raise ConfigError(path, "package_manager", f"unknown value {values['package_manager']!r}",
                          "use uv, conda or python")
    if values["package_manager"] == "conda" and not values["conda_env"]:
        raise ConfigError(path, "conda_env", "missing (package_manager is conda)",
                          "add `conda_env: <env name>`")
    for key, why in NOT_SUPPORTED.items():  # accepted once, now refused rather than ignored
        if values[key]:
            raise ConfigError(path, key, "not supported by this version of chester", why)
    for key in ("prepare_commands", "rsync_include", "rsync_exclude", "ssh_hosts"):
        bad = [x for x in values[key] if not isinstance(x, str)]
        if bad:
            raise ConfigError(path, key, f"every entry must be a string, got {bad[0]!r}")
    for name, entry in values["backends"].items():
        if entry is None:
            values["backends"][name] = {}
        elif not isinstance(entry, Mapping):
            raise ConfigError(path, f"backends.{name}", "must be a mapping",
                              "write `type: <backend type>` and its options under it")


def _remote_dir_of(values: Mapping[str, Any], mode: str) -> Any:
    """Backend ``mode``'s ``remote_dir`` as configured (``backends.<mode>`` wins over the
    seed's ``remote_dir`` table, as in :meth:`ChesterConfig.backend_raw`), or None."""
    entry = values["backends"].get(mode)
    if isinstance(entry, Mapping) and entry.get("remote_dir") is not None:
        return entry["remote_dir"]
    return (values.get("remote_dir") or {}).get(mode)


def expected_remote_log_dir(cfg: ChesterConfig, mode: str) -> str | None:
    """Where backend ``mode``'s run folders go on its target: ``log_dir``'s place under the
    project, re-rooted at the mode's ``remote_dir`` (None without a ``remote_dir``)."""
    from chester.remote.paths import remote_path

    remote_dir = _remote_dir_of(cfg.values, mode)
    if not isinstance(remote_dir, str) or not remote_dir:
        return None
    return os.path.normpath(remote_path(cfg.log_dir, cfg.project_path, remote_dir))


def _check_remote_log_dirs(cfg: ChesterConfig) -> None:
    """The seed's ``remote_log_dir``: honoured when it is where chester puts the runs (its
    ``remote_dir`` + ``log_dir``), refused in one line when it says somewhere else."""
    for mode, given in cfg.values["remote_log_dir"].items():
        if given is None:
            continue
        if not isinstance(given, str) or not given:
            raise ConfigError(cfg.path, f"remote_log_dir.{mode}",
                              f"expected a folder path, got {given!r}"[:200],
                              "give the log root on the target, or remove the line")
        want = expected_remote_log_dir(cfg, str(mode))
        if want is not None:  # without a remote_dir, the backend's own root decides (backend())
            _refuse_other_log_dir(cfg, str(mode), given, want)


def _refuse_other_log_dir(cfg: ChesterConfig, mode: str, given: str, want: str) -> None:
    if os.path.normpath(given) != want:
        raise ConfigError(
            cfg.path, f"remote_log_dir.{mode}",
            f"{given} contradicts remote_dir + log_dir ({want}), where the runs of {mode!r} go",
            f"remove remote_log_dir.{mode} or set it to {want}; to move the runs, change "
            f"remote_dir.{mode} or log_dir ({cfg.values['log_dir']})")


# -- the seed's module interface ----------------------------------------------------------------
_cached: ChesterConfig | None = None


def get_config() -> ChesterConfig:
    """The process-wide configuration, loaded on first use."""
    global _cached
    if _cached is None:
        _cached = load_config()
    return _cached


def reload_config() -> ChesterConfig:
    """Forget the cached configuration and load it again."""
    global _cached
    _cached = None
    return get_config()


def get_config_path() -> Path | None:
    """Path of the chester.yaml in use, or None for built-in defaults."""
    return get_config().path


_LEGACY_UPPER = {
    "PROJECT_PATH": lambda c: str(c.project_path),
    "LOG_DIR": lambda c: str(c.log_dir),
    "HOST_ADDRESS": lambda c: {"local": "", **c["host_address"]},
    "REMOTE_DIR": lambda c: {"local": str(c.project_path), **c["remote_dir"]},
    "REMOTE_LOG_DIR": lambda c: {"local": str(c.log_dir), **{
        m: d for m in c.backend_names() if (d := expected_remote_log_dir(c, m)) is not None},
        **{m: d for m, d in c["remote_log_dir"].items() if d}},
    "CHESTER_CHEDULER_LOG_DIR": lambda c: c["chester_scheduler_log_dir"],
}


def __getattr__(name: str) -> Any:
    if name in _LEGACY_UPPER:
        return _LEGACY_UPPER[name](get_config())
    if name.isupper() and name.lower() in GLOBAL_KEYS:
        return get_config()[name.lower()]
    raise AttributeError(f"module 'chester.config' has no attribute {name!r}")


def describe(cfg: ChesterConfig) -> list[tuple[str, str, str]]:
    """(key, value, source) rows for printing; nothing secret is shown."""
    import json

    for name in cfg.values["backends"]:
        cfg.backend(name)  # validate every configured backend's options
    rows = [("config file", cfg.where(), find_config_path()[1] if cfg.path else "")]
    for key in GLOBAL_KEYS:
        val = cfg.values[key]
        if key == "backends" or key in NOT_SUPPORTED:  # refused when set: nothing to show
            continue
        rows.append((key, json.dumps(val, default=str) if not isinstance(val, str) else val,
                     cfg.sources.get(key, "")))
    for name in cfg.backend_names():
        btype, raw, source = cfg.backend_raw(name)
        shown = {k: ("<set>" if "secret" in k.lower() else v) for k, v in raw.items()}
        rows.append((f"backend {name}", json.dumps({"type": btype, **shown}, default=str), source))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m chester.config``: print the resolved configuration."""
    from chester.cli import main as cli_main

    return cli_main(["config", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
