"""What a launch runs, as digests that are the same in every process for unchanged code.

"The same launch again" is the same variants *and* the same thing to run. What runs is

- the function: by its module and qualified name when the target imports it by name (a
  function of an importable module), by its code objects, constants, defaults and closure
  (:mod:`chester.variants.fingerprint`) and its source file's content when it travels by
  value (defined in the launching script, a lambda, a callable object) — never by its
  cloudpickle bytes, which differ between processes for the same function;
- or the command (its argv and how a variant becomes arguments);
- and the project's code: every file the backend's sync rules send (:mod:`chester.remote.sync`;
  the local backend uses the same files in place), by content. Hashing is kept cheap by a
  stat memo in ``.chester/code-memo.json``: a file whose size, mtime and inode are
  unchanged is not read again. What runs write into the project is no code: files git
  ignores (in a git work tree) and the folders of :data:`RUN_OUTPUTS` are left out, so a run
  that writes ``wandb/`` or ``outputs/`` beside the code does not make the next run of the
  same script a new launch. Each digest's file list is kept in ``.chester/manifests/`` so
  that a new launch can name the files that changed.

:func:`function_ref` says how :func:`chester.relaunch` can find the function again: by
import (``{"kind": "ref", "module", "qualname", "root"}``), not at all (``"value"``: only the
launching script has it) or as a command (``"command"``: the payload is the command).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from chester.digests import sha256
from chester.plugin.records import BackendConfig

#: Files larger than this are known by size and mtime, not by content (a checkpoint in the
#: project is not read at every launch).
CONTENT_LIMIT = 16 << 20
#: A file changed this recently is hashed again next time (its mtime may not yet tell a
#: later change apart: the racy-clean case git knows).
RACY_S = 2.0
MEMO = "code-memo.json"
#: Folders that ML tools write into the working folder while a run goes (Weights & Biases,
#: Hydra's run and sweep folders, PyTorch Lightning, MLflow): never part of the project's
#: code, wherever they are in the project.
RUN_OUTPUTS = ("wandb", "outputs", "multirun", "lightning_logs", "mlruns")
#: Where each project digest's file list is kept (``<digest>.json``: path -> content digest),
#: and how many are kept.
MANIFESTS = "manifests"
KEEP_MANIFESTS = 16


@attrs.frozen(kw_only=True)
class Identity:
    """What a launch runs: ``fn`` (the function or command), ``code`` (the project's files)
    and ``what_runs``, the digest of both, which the store keeps per launch."""

    fn: str
    code: str
    ref: dict[str, Any]

    @property
    def what_runs(self) -> str:
        return sha256(f"{self.fn}\0{self.code}".encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """The launch's ``options["identity"]``: what the next launch compares with."""
        return {"fn": self.fn, "code": self.code, "ref": self.ref}


def identify(fn: Any, backend: BackendConfig, skip: Iterable[str | os.PathLike[str]] = ()
             ) -> Identity:
    """The :class:`Identity` of running ``fn`` on ``backend``; ``skip`` are folders left out
    of the project's files (the launch's own run folders: what runs write never counts)."""
    skipped = sorted({os.path.normpath(os.fspath(d)) for d in skip})
    ref = {**function_ref(fn, backend.project_path), "skip": skipped}
    return Identity(fn=function_digest(fn).hex(), code=project_digest(backend, skipped),
                    ref=ref)


def function_ref(fn: Any, project_dir: str | os.PathLike[str] | None = None
                 ) -> dict[str, Any]:
    """How the function can be found again without the launching script (see the module
    docstring). A ``"ref"`` says ``shipped`` when the target cannot import its module by
    name (a module beside a script in a subfolder of ``project_dir``: it travels by value)."""
    from chester.target.command import Command

    if type(fn) is Command:
        return {"kind": "command"}
    name = _importable(fn)
    if name is None:
        source = _source_file(fn)
        return {"kind": "value",
                **({"source": source, "source_sha": file_sha(source)} if source else {})}
    module, qualname, root = name
    shipped = False
    if project_dir is not None:
        from chester.launcher.payloads import by_value_test

        shipped = by_value_test(project_dir)(module, getattr(sys.modules[module], "__file__",
                                                             None))
    return {"kind": "ref", "module": module, "qualname": qualname, "root": root,
            "shipped": shipped}


def _importable(fn: Any) -> tuple[str, str, str] | None:
    """(module, qualified name, import root) when ``fn`` is a function the target imports
    by name: a module's top-level function (or a class's), reachable by that name."""
    if not isinstance(fn, types.FunctionType):
        return None
    modname, qualname = fn.__module__, fn.__qualname__
    if not modname or modname == "__main__" or "<" in qualname:
        return None
    module = sys.modules.get(modname)
    path = getattr(module, "__file__", None)
    if module is None or not path:
        return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn:
        return None
    real = Path(os.path.realpath(path))
    depth = modname.count(".") + (1 if real.name == "__init__.py" else 0)
    root = real.parent
    for _ in range(depth):
        root = root.parent
    return modname, qualname, str(root)


def _source_file(fn: Any) -> str | None:
    code = getattr(fn, "__code__", None)
    path = getattr(code, "co_filename", None)
    return os.path.realpath(path) if path and os.path.isfile(path) else None


def function_digest(fn: Any) -> bytes:
    """The function's (or command's) digest: see the module docstring."""
    from chester.variants.fingerprint import digest

    ref = function_ref(fn)
    h = sha256(b"chester-what-runs-1\0")
    if ref["kind"] == "ref":
        h.update(f"ref\0{ref['module']}\0{ref['qualname']}".encode("utf-8", "surrogatepass"))
        return h.digest()
    h.update(digest(fn))
    source = ref.get("source")
    if source:  # what the function calls in its own file (helpers beside it) counts too
        h.update(file_sha(source).encode())
    return h.digest()


def file_sha(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's content ("" when it cannot be read)."""
    import hashlib  # OpenSSL's: faster on long inputs (see chester.digests)

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


# -- the project's files -----------------------------------------------------------------------
def project_digest(backend: BackendConfig, skip: Iterable[str | os.PathLike[str]] = ()) -> str:
    """A digest of the project's files that ``backend``'s sync rules send (the files the
    local backend uses in place), by path and content; folders in ``skip``, files git
    ignores and :data:`RUN_OUTPUTS` are left out.

    The memo keeps, per file, its size, mtime, inode and content digest, and the rules it
    was made under: a file it knows is neither read nor matched against the rules again."""
    from chester.remote.codesync import extra_excludes
    from chester.remote.sync import compile_rules, rules

    root = Path(backend.project_path)
    rule_list = rules(backend.rsync_include, backend.rsync_exclude, extra_excludes(backend))
    rules_key = sha256(json.dumps(rule_list).encode()).hexdigest()
    memo_path = root / ".chester" / MEMO
    memo = _load_memo(memo_path, rules_key)
    fresh: dict[str, list[Any]] = {}
    listed: dict[str, str] = {}
    h = sha256(b"chester-code-1\0")
    skipped = {os.path.normpath(os.fspath(d)) for d in skip}
    racy_after = time.time() - RACY_S
    for rel, path, st in _walk(root, compile_rules(rule_list), skipped, memo,
                               git_ignored(root)):
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        known = memo.get(rel)
        if known is not None and known[:3] == key:
            sha = known[3]
        elif st.st_size > CONTENT_LIMIT:
            sha = f"stat:{st.st_size}:{st.st_mtime_ns}"
        else:
            sha = file_sha(path)
        if st.st_mtime_ns / 1e9 < racy_after:
            fresh[rel] = [*key, sha]
        listed[rel] = sha
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + sha.encode() + b"\0")
    if fresh != memo:
        _save_memo(memo_path, {"rules": rules_key, "files": fresh})
    code = h.hexdigest()
    _keep_manifest(root, code, listed)
    return code


def git_ignored(root: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(folders, files) under ``root`` that git ignores and does not track, relative to
    ``root`` (folders end with ``/``), when ``root`` is in a git work tree and git is
    installed; nothing otherwise. One ``git ls-files`` call."""
    import subprocess

    here = root.resolve()
    if not any((d / ".git").exists() for d in (here, *here.parents)):
        return frozenset(), frozenset()
    try:
        res = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--others", "--ignored",
                              "--exclude-standard", "--directory", "--no-empty-directory"],
                             capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return frozenset(), frozenset()
    if res.returncode != 0:
        return frozenset(), frozenset()
    names = [os.fsdecode(p) for p in res.stdout.split(b"\0") if p]
    return (frozenset(n for n in names if n.endswith("/")),
            frozenset(n for n in names if not n.endswith("/")))


def _keep_manifest(root: Path, code: str, listed: dict[str, str]) -> None:
    """Keep the file list of the digest ``code`` (once per digest), and the newest
    :data:`KEEP_MANIFESTS` of them."""
    folder = root / ".chester" / MANIFESTS
    path = folder / f"{code}.json"
    if path.exists():
        return
    _save_memo(path, listed)
    try:
        kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    except OSError:
        return
    for old in kept[:-KEEP_MANIFESTS]:
        try:
            old.unlink()
        except OSError:
            pass


def changed_files(root: str | os.PathLike[str], old: str, new: str
                  ) -> tuple[list[str], list[str], list[str]] | None:
    """(changed, new, gone) file paths between the project digests ``old`` and ``new``, from
    their kept file lists; None when one of them is not kept."""
    folder = Path(root) / ".chester" / MANIFESTS
    try:
        with open(folder / f"{old}.json", encoding="utf-8") as f:
            a = json.load(f)
        with open(folder / f"{new}.json", encoding="utf-8") as f:
            b = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(a, dict) or not isinstance(b, dict):
        return None
    return (sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
            sorted(b.keys() - a.keys()), sorted(a.keys() - b.keys()))


def _walk(root: Path, sent: Callable[[str, bool], bool], skipped: set[str],
          known: dict[str, Any], ignored: tuple[frozenset[str], frozenset[str]] = (
              frozenset(), frozenset())) -> Iterable[tuple[str, str, os.stat_result]]:
    """``(relative path, path, stat)`` of every file the rules send, in a stable order (a
    file in ``known`` was sent under the same rules: it is not matched again), leaving out
    the ``ignored`` (folders, files) and :data:`RUN_OUTPUTS`."""
    ignored_dirs, ignored_files = ignored
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=_name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        subdirs = []
        for e in entries:
            rel = f"{prefix}{e.name}"
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if e.name in RUN_OUTPUTS or rel + "/" in ignored_dirs:
                    continue
                if os.path.normpath(e.path) not in skipped and sent(rel, True):
                    subdirs.append((e.path, rel + "/"))
                continue
            if rel in ignored_files or (rel not in known and not sent(rel, False)):
                continue
            try:
                st = e.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield rel, e.path, st
        stack.extend(reversed(subdirs))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _load_memo(path: Path, rules_key: str) -> dict[str, list[Any]]:
    """The memo's files, when it was made under the same rules (else nothing is known)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("rules") != rules_key:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _save_memo(path: Path, memo: dict[str, Any]) -> None:
    """Write the memo whole under another name, then move it into place (a reader never
    sees half of it); a memo that cannot be written is only slower next time."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(memo, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def describe_change(old: dict[str, Any] | None, new: Identity,
                    command: bool = False) -> str:
    """What changed between a launch's recorded identity and ``new``, in a few words."""
    if not old:
        return "what runs changed"
    if old.get("fn") != new.fn:  # (its file is one of the project's, as a rule)
        return "the command changed" if command else "the function changed"
    if old.get("code") != new.code:
        return "the project's files changed"
    return "what runs changed"


def files_line(root: str | os.PathLike[str], old: dict[str, Any] | None, new: Identity,
               most: int = 3) -> str | None:
    """``changed: a.py, b.py and 3 more (new: c.py)``: the project's files that changed
    between a launch's recorded identity and ``new``, when both file lists are kept; with a
    hint when some are not Python files (what runs write belongs out of the project's
    code)."""
    if not old or old.get("code") == new.code or not old.get("code"):
        return None
    diff = changed_files(root, str(old["code"]), new.code)
    if diff is None or not any(diff):
        return None

    def names(paths: list[str]) -> str:
        shown = ", ".join(paths[:most])
        return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")

    parts = [f"{what}: {names(paths)}"
             for what, paths in zip(("changed", "new", "gone"), diff, strict=True) if paths]
    line = "; ".join(parts)
    if any(not p.endswith(".py") for p in (*diff[0], *diff[1])):
        line += (" (files the runs write belong in .gitignore or the backend's "
                 "rsync_exclude)")
    return line


__all__ = ["RUN_OUTPUTS", "Identity", "changed_files", "describe_change", "file_sha",
           "files_line", "function_digest", "function_ref", "git_ignored", "identify",
           "project_digest"]
