"""chester's target-side runtime, shipped with every launch: the target needs no chester.

The runtime is one zip file, ``chester-<digest>.pyz``: chester's target package
(``chester/target/``, the only code that runs on targets, with ``chester/__init__.py``)
and the ``cloudpickle`` it unpickles with, plus a ``__main__.py`` that starts one of the
target tools::

    python chester-<digest>.pyz worker RUN_DIR [--spec FILE]   # chester.target.worker
    python chester-<digest>.pyz runner ...                     # chester.target.runner
    python chester-<digest>.pyz target status|cancel|tail ...  # chester.target
    python chester-<digest>.pyz zygote FIFO [BASE]             # chester.target.zygote

Each module also travels compiled for this launcher's Python (``x.pyc`` beside ``x.py``,
unchecked-hash bytecode, PEP 552), which zipimport loads instead of compiling the source at
every start: the target's Python is of the same minor version (the probe checks it), and a
Python of another one falls back to the sources.

The digest is the content's, so launcher and target always speak the same protocol: a host
that has chester installed still runs the shipped copy, and a backend sends the file only
when the host does not have that digest yet (under ``<remote_dir>/.chester/runtime/``). The
zip is on ``sys.path`` of that one process only (no ``PYTHONPATH``), so what a run starts
never sees it; the working folder comes next on ``sys.path``, as with ``python -m``.

Before anything is submitted, a backend runs :func:`probe_script` on the target (after the
package manager's setup) and :func:`check` reads the answer: a Python that is missing, older
than 3.10, of another minor version than this launcher's (which pickled the function), or
that cannot import the runtime stops the launch with one line naming the backend, the host,
the Python found and the fix. When the runs use a container, the probe can run the Python
through it (``probe_script(..., container=...)``), as the runs do.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from chester.digests import sha256
from chester.plugin.errors import BackendError

MIN_PYTHON = (3, 10)
#: the folder, under a backend's remote root, that holds runtimes
REMOTE_SUBDIR = ".chester/runtime"
TOOLS = ("worker", "runner", "target", "zygote")

_MAIN = '''\
"""chester's target-side runtime: python THIS.pyz {worker|runner|target|zygote} ARGS..."""
import os
import runpy
import sys

_TOOLS = {"worker": "chester.target.worker", "runner": "chester.target.runner",
          "target": "chester.target", "zygote": "chester.target.zygote"}


def _main():
    if sys.version_info < (3, 10):
        sys.stderr.write("chester: the runtime needs Python >= 3.10, this is %s (%s)\\n"
                         % (sys.version.split()[0], sys.executable))
        sys.exit(3)
    if len(sys.argv) < 2 or sys.argv[1] not in _TOOLS:
        sys.stderr.write("usage: python %s {worker|runner|target|zygote} ARGS...\\n"
                         % sys.argv[0])
        sys.exit(2)
    # as with `python -m`: the working folder is importable (after the runtime itself)
    sys.path.insert(1, os.getcwd())
    tool = sys.argv.pop(1)
    runpy.run_module(_TOOLS[tool], run_name="__main__", alter_sys=True)


_main()
'''


@attrs.frozen
class Runtime:
    """A built runtime: the local file, its content digest and its file name."""

    path: Path
    digest: str

    @property
    def name(self) -> str:
        return self.path.name

    def remote_path(self, root: str) -> str:
        """Where it lives under a backend's remote root."""
        return str(PurePosixPath(root) / REMOTE_SUBDIR / self.name)

    def argv(self, python: str, tool: str, root: str) -> list[str]:
        """``python <runtime> TOOL`` with the runtime under ``root``."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        return [python, self.remote_path(root), tool]


def _package_paths(pkg_dir: Path, arc_root: str) -> list[tuple[str, str]]:
    """(name in the zip, path on disk) of each ``.py`` file of a package, sorted by name."""
    out = []
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, pkg_dir).replace(os.sep, "/")
        for f in filenames:
            if f.endswith(".py"):
                out.append((f"{arc_root}/{f}" if rel == "." else f"{arc_root}/{rel}/{f}",
                            os.path.join(dirpath, f)))
    return sorted(out)


def _bytecode(name: str, source: bytes) -> bytes:
    """``source`` compiled for this Python as an unchecked-hash ``.pyc`` (PEP 552): magic,
    flags (hash-based, not checked against the source), the source's hash, the code."""
    import importlib.util
    import marshal

    code = compile(source, name, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def _sources() -> list[tuple[str, str]]:
    """(name in the zip, path on disk) of every module the runtime carries: chester's target
    package with the package's ``__init__`` (which imports nothing else) and the
    cloudpickle it unpickles with (found, not imported: a command run never loads it)."""
    import importlib.util

    import chester

    spec = importlib.util.find_spec("cloudpickle")
    if spec is None or spec.origin is None:
        raise BackendError("cloudpickle is not installed here: reinstall chester-ml")
    root = Path(chester.__file__).parent
    return ([("chester/__init__.py", str(root / "__init__.py"))]
            + _package_paths(root / "target", "chester/target")
            + _package_paths(Path(spec.origin).parent, "cloudpickle"))


def _contents(sources: list[tuple[str, str]] | None = None) -> list[tuple[str, bytes]]:
    files = [("__main__.py", _MAIN.encode())]
    for name, path in sources if sources is not None else _sources():
        with open(path, "rb") as f:
            files.append((name, f.read()))
    return files


def _with_bytecode(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The files plus each package module's ``.pyc`` beside it (the order zipimport looks)."""
    out = []
    for name, data in files:
        out.append((name, data))
        if name.endswith(".py") and "/" in name:
            out.append((name + "c", _bytecode(name, data)))
    return out


def cache_dir() -> Path:
    from chester.config import cache_root

    return cache_root() / "runtime"


_BUILT: dict[str, Runtime] = {}

#: how many runtimes (one per chester version or checkout) the local cache keeps
RUNTIMES_KEPT = 8


def _write_whole(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` under a temporary name first and rename it into
    place when whole; the temporary file is removed whatever fails."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _fallback_dir() -> Path:
    """Where the runtime goes when the cache folder cannot take it: a folder of this user's
    in the system's temporary folder (runs of the local backend start from the file, so it
    must outlive the command)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"chester-{os.getuid()}-runtime"


def build() -> Runtime:
    """The runtime of this chester (built once, then cached by content).

    Its name is the digest of its bytes, so any copy can be checked against its own name
    (:func:`verify_lines`). Its files are stored, not compressed: every worker imports from
    it, and Python's zipimport reads each module it imports twice (for the spec's file name,
    then for the code), so compressed files cost each worker zlib and two inflations per
    module (about 2 ms of CPU; stored, the file is about 2.5 times larger, and it is sent
    once per digest). Reading every module at each launch is most of the work, so the digest
    is also remembered in the cache folder under a key of the modules' ``stat`` (name, size,
    mtime, inode) and this Python's bytecode magic: unchanged files give the runtime
    without reading them. A cache folder that cannot be written (read-only, full, not a
    folder) is one warning line and the runtime goes to a folder of this user's in the
    system's temporary folder instead."""
    import importlib.util

    from chester.config import cache_problem, prune_cache, prune_temporaries, touch

    sources = _sources()
    # the naming scheme is part of the key: an index written by a chester that named
    # runtimes another way (while the sources changed under it) is never read as this one's
    key = sha256(b"sha256-of-bytes,stored\0" + importlib.util.MAGIC_NUMBER + _MAIN.encode())
    for name, src in sources:
        st = os.stat(src)
        key.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
    folder = cache_dir()
    index = folder / f"index-{key.hexdigest()[:24]}"
    try:
        known = index.read_text().strip()
    except (OSError, ValueError):
        known = ""
    if known:
        if known in _BUILT:
            return _BUILT[known]
        for base in (folder, _fallback_dir()):
            rt = Runtime(path=base / f"chester-{known}.pyz", digest=known)
            if rt.path.is_file():
                _BUILT[known] = rt
                touch(rt.path)
                touch(index)
                return rt
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in _with_bytecode(_contents(sources)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    blob = buf.getvalue()
    import hashlib  # OpenSSL's, for the whole runtime (see chester.digests)

    digest = hashlib.sha256(blob).hexdigest()[:20]
    name = f"chester-{digest}.pyz"
    path = None
    for base in (folder, _fallback_dir()):
        if (base / name).is_file():
            path = base / name
            break
        try:
            path = _write_whole(base, name, blob)
            break
        except OSError as exc:
            cache_problem(base, exc)
    if path is None:
        raise BackendError(f"chester's runtime could not be written to {folder} nor to "
                           f"{_fallback_dir()}; set CHESTER_CACHE_DIR to a writable folder")
    _BUILT[digest] = Runtime(path=path, digest=digest)
    if path.parent == folder:
        try:
            _write_whole(folder, index.name, (digest + "\n").encode())
        except OSError as exc:  # the next launch reads the modules again
            cache_problem(folder, exc)
        else:  # runtimes of other chester versions, and their index files, are kept a while
            prune_cache(folder, "chester-", ".pyz", keep=RUNTIMES_KEPT)
            prune_cache(folder, "index-", "", keep=4 * RUNTIMES_KEPT)
            prune_temporaries(folder)
    return _BUILT[digest]


# -- the target's Python ------------------------------------------------------------------------
PROBE = "chester-probe"


def _digest_of(remote: str) -> str:
    """The digest a content-addressed file's name carries: ``chester-<digest>.pyz`` (a
    runtime), ``scheduler-<digest>.py`` (autobot's scheduler)."""
    name = PurePosixPath(remote).name
    return name.split("-", 1)[-1].rsplit(".", 1)[0]


def _sum_expr(path: str, n: int = 20) -> str:
    """Shell: the first ``n`` hex digits of the SHA-256 of ``path`` (empty when it cannot be
    read, or no tool for it is on the host)."""
    q = shlex.quote(path)
    return (f"$( {{ sha256sum -- {q} || shasum -a 256 -- {q} || openssl dgst -sha256 -r {q}; "
            f"}} 2>/dev/null | cut -c1-{n} )")


def _checks_out(path: str, remote: str) -> str:
    """Shell test: ``path`` holds the bytes ``remote``'s name says (its digest's prefix of
    the SHA-256)."""
    digest = _digest_of(remote)
    return f'[ "{_sum_expr(path, len(digest))}" = {shlex.quote(digest)} ]'


def verify_lines(runtime_remote: str, var: str = "chester_rt") -> str:
    """One shell line setting ``var`` to 1 when the runtime (or another content-addressed
    file, see :func:`part_path`) is there and its bytes are what its name says (a file cut
    short by a full disk, or written over, is not), else empty."""
    q = shlex.quote(runtime_remote)
    return (f"{var}=; if [ -f {q} ] && {_checks_out(runtime_remote, runtime_remote)}; "
            f"then {var}=1; fi")


def part_path(runtime_remote: str, tag: str) -> str:
    """Where a runtime is uploaded before it is checked and renamed into place: a hidden
    name of its own in the same folder (``tag``: a launch's key, so two launches at once
    never write one file). Any file whose name carries the digest of its content
    (``NAME-<digest>.EXT``: autobot's scheduler) travels the same way."""
    p = PurePosixPath(runtime_remote)
    return str(p.with_name(f".{p.name}.{tag}.part"))


def install_lines(runtime_remote: str, part: str, *, strict: bool,
                  what: str = "the runtime") -> list[str]:
    """Shell lines that put an uploaded runtime (at ``part``, see :func:`part_path`) into
    place: renamed over the runtime's name only when its bytes check out, removed
    otherwise. A rename is atomic, so no run ever starts from a file still being written.
    ``strict``: stop the script (exit 1, one line on stderr naming ``what``) when the file
    is not in place after that. Parts older than a day that a broken upload left are
    removed."""
    q = shlex.quote
    p = PurePosixPath(runtime_remote)
    stem = p.name.split("-", 1)[0]
    lines = [
        f"if [ -f {q(part)} ]; then "
        f"if {_checks_out(part, runtime_remote)}; then "
        f"chmod 644 {q(part)} && mv -f {q(part)} {q(runtime_remote)}; "
        f"else rm -f {q(part)}; fi; fi",
        # find only when the shell's own glob sees a part at all (most launches: none)
        f"for chester_part in {q(str(p.parent))}/{q(f'.{stem}-')}*.part; do "
        f'if [ -e "$chester_part" ]; then '
        f"find {q(str(p.parent))} -maxdepth 1 -name {q(f'.{stem}-*.part')} -mmin +1440 "
        "-exec rm -f {} + 2>/dev/null || :; fi; break; done",
    ]
    if strict:
        lines += [verify_lines(runtime_remote),
                  f'if [ -z "$chester_rt" ]; then echo "chester: {what} did not arrive '
                  f'whole at {runtime_remote} (a full disk?); launch again" >&2; exit 1; fi']
    return lines


def send(transport: Any, rt: Runtime, root: str, *, who: str) -> None:
    """Upload the runtime under ``root`` the safe way (a part file, checked, renamed into
    place), unless a copy that checks out is already there. One round trip."""
    place(transport, rt.path.read_bytes(), rt.remote_path(root), who=who)


def place(transport: Any, data: bytes, remote: str, *, who: str,
          what: str = "chester's runtime") -> None:
    """Upload ``data`` to ``remote``, a name carrying the digest of its content (see
    :func:`part_path`), as :func:`send` does: through a part file that is checked and
    renamed into place, unless a copy that checks out is already there. One round trip."""
    part = part_path(remote, f"{os.getpid()}-{os.urandom(4).hex()}")
    q = shlex.quote
    script = "\n".join([
        f"mkdir -p {q(str(PurePosixPath(remote).parent))} || exit 1",
        f"cat > {q(part)} || {{ rm -f {q(part)}; exit 1; }}",
        verify_lines(remote),
        f'if [ -n "$chester_rt" ]; then rm -f {q(part)}; exit 0; fi',
        *install_lines(remote, part, strict=True, what=what)])
    res = transport.run(["sh", "-c", script], stdin=data, timeout=600, check=False)
    if res.exit_code != 0:
        raise BackendError(f"{who}: {what} could not be placed at {remote}: "
                           f"{res.stderr.strip()[-300:]}")


def _probe_code(runtime_remote: str, *, report_runtime: bool) -> str:
    """Python (any version that can print) that prints the probe's ``python=`` line and,
    when the runtime is there and its bytes are what its name says, whether it imports
    (``import=ok`` or the error: chester must come from the runtime, not from a copy
    installed on the host); ``report_runtime``: also whether a runtime that checks out is
    there (``runtime=1|0``). One line (``exec`` of the program): probe scripts are joined
    into one shell line."""
    return "exec(%r)" % "\n".join([
        "import os, sys, hashlib",
        "print('%s python=%%d.%%d.%%d %%s' %% (sys.version_info[:3] + (sys.executable,)))"
        % PROBE,
        "rt = %r" % runtime_remote,
        "ok = False",
        "try:",
        "    f = open(rt, 'rb')",
        "    ok = hashlib.sha256(f.read()).hexdigest()[:%d] == %r"
        % (len(_digest_of(runtime_remote)), _digest_of(runtime_remote)),
        "    f.close()",
        "except Exception:",
        "    pass",
        "if ok:",
        *(["    print('%s runtime=1')" % PROBE] if report_runtime else []),
        "    try:",
        "        sys.path.insert(0, rt)",
        "        import chester.target.worker",
        "        src = os.path.abspath(chester.target.worker.__file__)",
        "        if not src.startswith(os.path.abspath(rt) + os.sep):",
        "            raise ImportError('chester was imported from %s, not from the runtime'"
        " % src)",
        "        print('%s import=ok')" % PROBE,
        "    except BaseException as e:",
        "        print('%s import=%%s: %%s' %% (type(e).__name__, str(e).replace('\\n', ' ')))"
        % PROBE,
        *(["else:", "    print('%s runtime=0')" % PROBE] if report_runtime else []),
    ])


def probe_script(python: str, runtime_remote: str, *, setup: list[str] | None = None,
                 container: tuple[list[str], list[str]] | None = None) -> str:
    """Shell text that reports whether the runtime is on the target, which Python
    ``python`` is there (after ``setup``, the package manager's lines) and whether the
    runtime imports with it.

    ``container``: ``(lines, argv)``, the shell lines a run's container needs before it
    starts (:func:`chester.remote.container.env_lines`) and the command that runs a
    program in it (:func:`chester.remote.container.wrap` of nothing: ``apptainer exec
    -B ... IMAGE``). The Python is then the container's, run as the jobs run it, and the
    runtime is looked for and imported inside the container; what the container runtime
    says on failure follows a ``via=`` line (the command)."""
    q = shlex.quote
    if container is not None:
        lines, argv = container
        cmd = shlex.join([*argv, python, "-c", _probe_code(runtime_remote,
                                                             report_runtime=True)])
        return "\n".join([
            *(setup or []), *lines,
            f"echo {q(PROBE + ' via=' + shlex.join([*argv, python]))}",
            f"if command -v {q(argv[0])} >/dev/null 2>&1; then {cmd} 2>&1 "
            f"|| echo '{PROBE} python=broken'; else echo '{PROBE} container=missing'; fi",
        ]) + "\n"
    code = _probe_code(runtime_remote, report_runtime=False)
    return "\n".join([
        *(setup or []),
        verify_lines(runtime_remote) + "; "
        f"if [ -n \"$chester_rt\" ]; then echo '{PROBE} runtime=1'; "
        f"else echo '{PROBE} runtime=0'; fi",
        _remembered_python_check(python, runtime_remote, code, setup or []),
    ]) + "\n"


#: this launcher's minor version as the probe's ``python=`` line starts (``3.11.``)
_MINOR = "%d.%d." % sys.version_info[:2]

#: the fields of ``stat`` that tell one file from its replacement: device, inode, size, mtime
_STAT = "%d.%i.%s.%Y"


def _remembered_python_check(python: str, runtime_remote: str, code: str,
                             setup: list[str]) -> str:
    """One shell line that prints the probe's ``python=`` and ``import=`` lines.

    Starting the Python to ask is most of a submit's time on the target, so a good answer
    is remembered beside the runtime (``<runtime>.probe-<digest of the Python and its
    setup>``) with what it was about: the ``stat`` of the Python found (the link
    and the file it points to: a rebuilt venv, an upgraded or another Python is a new file)
    and ``PYTHONHOME``/``PYTHONPATH``. The next probe prints the remembered lines when all
    of that is unchanged. Only an answer of this launcher's minor version that imported the
    runtime is remembered, and never for a script standing in for Python (a ``#!`` file,
    such as a pyenv shim, can start another Python tomorrow) or where ``stat -c`` fails."""
    q = shlex.quote
    # the memo sits beside its runtime: the digest tells apart the Pythons and setups only
    digest = sha256("\0".join([python, *setup]).encode())
    memo = q(f"{runtime_remote}.probe-{digest.hexdigest()[:16]}")
    py = q(python)
    return (
        f'chester_py=$(command -v {py} 2>/dev/null) || chester_py=""; '
        f"if [ -z \"$chester_py\" ]; then echo '{PROBE} python=missing'; else "
        f'chester_key=$(stat -c {_STAT} -- "$chester_py" 2>/dev/null)/'
        f'$(stat -L -c {_STAT} -- "$chester_py" 2>/dev/null); '
        f'case "$chester_key" in /*|*/) chester_key="";; '
        f'*) chester_key="$chester_key/${{PYTHONHOME-}}/${{PYTHONPATH-}}";; esac; '
        # the memo is read with the shell's own `read` (no process started for it)
        'chester_hit=; '
        f'if [ -n "$chester_key" ] && [ -n "$chester_rt" ] && [ -f {memo} ]; then '
        '{ IFS= read -r chester_line || :; if [ "$chester_line" = "$chester_key" ]; then '
        "chester_hit=1; while IFS= read -r chester_line; do printf '%s\\n' \"$chester_line\"; "
        f'done; fi; }} < {memo} 2>/dev/null || chester_hit=; fi; '
        'if [ -n "$chester_hit" ]; then :; '
        f"else chester_out=$({py} -c {q(code)} || echo '{PROBE} python=broken'); "
        f"printf '%s\\n' \"$chester_out\"; "
        f'case "$chester_out" in *"{PROBE} python={_MINOR}"*"{PROBE} import=ok"*) '
        f'if [ -n "$chester_key" ] && [ -n "$chester_rt" ] && '
        f'[ "$(head -c 2 -- "$chester_py")" != "#!" ]; then '
        f"{{ printf '%s\\n%s\\n' \"$chester_key\" \"$chester_out\" > {memo}.$$ && "
        f"mv -f {memo}.$$ {memo}; }} 2>/dev/null || rm -f {memo}.$$ 2>/dev/null; fi;; esac; "
        "fi; fi")


#: exit codes of :func:`guard_lines`: the runtime is missing / the Python cannot run it
EXIT_NO_RUNTIME = 6
EXIT_BAD_PYTHON = 7


def guard_lines(python: str, runtime_remote: str, *, setup: list[str] | None = None,
                container: tuple[list[str], list[str]] | None = None) -> list[str]:
    """Lines for a submit script that runs everything in one go: they print the probe
    (:func:`parse_probe` reads it) and stop the script before anything is submitted when
    the runtime is not on the target (:data:`EXIT_NO_RUNTIME`: send it, run again) or its
    Python is missing, not this launcher's minor version, or cannot import it
    (:data:`EXIT_BAD_PYTHON`). ``container``: as in :func:`probe_script`. The probe runs
    in a subshell: its setup changes nothing for the lines after it."""
    probe = probe_script(python, runtime_remote, setup=setup,
                         container=container).strip().replace("\n", "; ")
    return [
        f"chester_probe=$( {{ {probe}; }} 2>/dev/null || true )",
        "printf '%s\\n' \"$chester_probe\"",
        f'case "$chester_probe" in *"{PROBE} python={_MINOR}"*) ;; *) exit {EXIT_BAD_PYTHON};; esac',
        f'case "$chester_probe" in *"{PROBE} import="*) case "$chester_probe" in '
        f'*"{PROBE} import=ok"*) ;; *) exit {EXIT_BAD_PYTHON};; esac;; esac',
        f'case "$chester_probe" in *"{PROBE} runtime=0"*) exit {EXIT_NO_RUNTIME};; esac',
    ]


@attrs.frozen
class Probe:
    runtime_present: bool
    version: tuple[int, ...] | None
    executable: str | None
    problem: str | None
    #: the command that ran the Python inside a container (``apptainer exec ... python``)
    via: str | None = None
    #: what else the container command printed (its runtime's error), last lines
    said: str | None = None
    #: the runtime was there but did not import: the exception
    import_error: str | None = None


def parse_probe(stdout: str) -> Probe:
    present = False
    version: tuple[int, ...] | None = None
    exe = None
    problem: str | None = "no answer"
    via = None
    said: list[str] = []
    import_error = None
    for line in stdout.splitlines():
        if not line.startswith(PROBE + " "):
            if via is not None and line.strip():
                said.append(line.strip())
            continue
        key, _, value = line[len(PROBE) + 1:].partition("=")
        if key == "runtime":
            present = value.strip() == "1"
        elif key == "via":
            via, said = value.strip(), []
        elif key == "container":
            problem = "container runtime missing"
        elif key == "import":
            import_error = None if value.strip() == "ok" else value.strip()
        elif key == "python":
            if value in ("missing", "broken"):
                problem = value
            else:
                ver, _, exe = value.partition(" ")
                try:
                    version = tuple(int(x) for x in ver.split("."))
                    problem = None
                except ValueError:
                    problem = "broken"
    return Probe(runtime_present=present, version=version, executable=exe, problem=problem,
                 via=via, said=" | ".join(said[-3:])[-500:] or None,
                 import_error=import_error)


def check(probe: Probe, *, who: str, python: str, same_minor: bool = True) -> None:
    """Raise a one-line :class:`BackendError` unless the target's Python can run the
    runtime and unpickle what this launcher pickled (inside the container, when the probe
    ran there)."""
    here = "%d.%d" % sys.version_info[:2]
    if probe.via:
        where = f"in the container (`{probe.via}`)"
        fix = (f"set `python:` to a Python {here} inside the image, or fix the container's "
               "image, binds or options")
    else:
        where = "on the host"
        fix = ("set `python:` in this backend's options to a Python %s on the host, or use "
               "package_manager: uv (or conda) so the project's environment provides one"
               % here)
    said = f": {probe.said}" if probe.said else ""
    if probe.problem == "container runtime missing":
        runtime_cmd = (probe.via or "").split(" ", 1)[0]
        raise BackendError(f"{who}: the container runtime {runtime_cmd!r} is not on PATH on "
                           "the host; load its module in `modules:` or set `container: "
                           "{runtime: PATH}`")
    if probe.problem == "missing":
        raise BackendError(f"{who}: no Python at {python!r} {where}; {fix}")
    if probe.problem is not None or probe.version is None:
        raise BackendError(f"{who}: {python!r} {where} did not run "
                           f"({probe.problem}){said}; {fix}")
    found = ".".join(map(str, probe.version))
    if probe.version[:2] < MIN_PYTHON:
        raise BackendError(f"{who}: {python!r} {where} is Python {found} "
                           f"({probe.executable}), older than chester needs "
                           f"(>= {'.'.join(map(str, MIN_PYTHON))}); {fix}")
    if same_minor and tuple(probe.version[:2]) != tuple(sys.version_info[:2]):
        raise BackendError(f"{who}: {python!r} {where} is Python {found} "
                           f"({probe.executable}), but this launcher is Python {here} and "
                           f"runs are pickled for it; {fix}")
    if probe.import_error:
        raise BackendError(f"{who}: chester's runtime does not import with {python!r} "
                           f"{where} ({probe.import_error[:300]}); check that the project "
                           "folder is readable there" + (" and bound into the container"
                                                         if probe.via else ""))


def probe_target(transport: Any, script: str, *, who: str, python: str) -> tuple[Probe, str]:
    """Run a probe script (the environment sync, then :func:`probe_script`) over
    ``transport`` and :func:`check` its answer. Returns the probe and the script's stdout;
    a failed environment sync is one line with the tool's last words."""
    from chester.remote.shell import env_failure

    res = transport.run_script(script, timeout=1800, check=False)
    if res.exit_code != 0:
        raise BackendError(f"{who}: preparing the environment failed: "
                           f"{env_failure(res.stderr, res.exit_code)}")
    probe = parse_probe(res.stdout)
    check(probe, who=who, python=python)
    return probe, res.stdout


def call_json(transport: Any, argv: list[str], *, who: str, what: str,
              resend: Any = None, stdin: str | None = None,
              timeout: float | None = 120) -> Any:
    """Run a target-side tool that answers one JSON line; when its file is not on the host
    (a host launched by another chester version) ``resend()`` puts it there and the call
    runs again."""
    import json

    def answer(res: Any) -> Any:
        return json.loads(res.stdout.strip().splitlines()[-1])

    res = transport.run(argv, stdin=stdin, timeout=timeout, check=False)
    try:
        return answer(res)
    except (ValueError, IndexError):
        pass
    if resend is not None and res.exit_code != 0:
        # the file is missing ("can't open file") or damaged (cut short, written over):
        # put a whole one in place (a copy that checks out is left as it is), ask again
        resend()
        res = transport.run(argv, stdin=stdin, timeout=timeout, check=False)
    try:
        return answer(res)
    except (ValueError, IndexError):
        raise BackendError(f"{who}: unexpected answer from {what} (exit {res.exit_code}): "
                           f"{res.stdout.strip()[-200:]!r} {res.stderr.strip()[-300:]!r}") \
            from None


__all__ = ["install_lines", "part_path", "place", "send", "verify_lines", "EXIT_BAD_PYTHON", "call_json", "probe_target", "EXIT_NO_RUNTIME", "guard_lines", "MIN_PYTHON", "PROBE", "Probe", "REMOTE_SUBDIR", "Runtime", "build", "cache_dir",
           "check", "parse_probe", "probe_script"]
