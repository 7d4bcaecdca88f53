"""chester's target-side runtime: one zip that runs the worker, runner and target tools with a
Python that has nothing of chester's installed; the check of a target's Python."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chester_testinfra.pythons import other_python

from chester.errors import BackendError
from chester.remote import runtime


def _bare_python():
    """A Python of this minor version that has no chester installed (Debian's, say)."""
    return other_python(same_minor=True, bare=True, why="a target Python without chester")


def test_built_once_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_CACHE_DIR", str(tmp_path))
    runtime._BUILT.clear()
    a = runtime.build()
    b = runtime.build()
    assert a == b and a.path.parent == tmp_path / "runtime"
    assert a.name == f"chester-{a.digest}.pyz"
    data = a.path.read_bytes()
    a.path.unlink()
    runtime._BUILT.clear()
    assert runtime.build().path.read_bytes() == data  # byte for byte the same zip again


def test_the_tools_run_from_the_zip_with_a_bare_python(tmp_path):
    py = _bare_python()
    rt = runtime.build()
    r = subprocess.run([py, str(rt.path), "target", "status", "--help"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0 and "usage:" in r.stdout and "stderr_tail" in r.stdout
    r = subprocess.run([py, str(rt.path), "target", "status", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[str(tmp_path / "nope")]["state"] == "lost"
    r = subprocess.run([py, str(rt.path), "bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "worker|runner|target" in r.stderr
    for tool in ("worker", "runner", "target"):  # each has a real --help
        r = subprocess.run([py, str(rt.path), tool, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (tool, r.stderr)


def test_the_modules_load_from_bytecode_for_this_python(tmp_path):
    """Every module travels with its unchecked-hash ``.pyc`` for this launcher's Python, so a
    target Python of the same minor version never compiles chester at a worker's start."""
    import importlib.util
    import zipfile

    py = _bare_python()
    rt = runtime.build()
    names = set(zipfile.ZipFile(rt.path).namelist())
    sources = {n for n in names if n.endswith(".py") and "/" in n}
    assert sources and {n + "c" for n in sources} <= names
    with zipfile.ZipFile(rt.path) as z:
        head = z.read("chester/target/worker.pyc")[:8]
    assert head == importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")  # hash, unchecked
    r = subprocess.run([py, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import chester.worker, cloudpickle; "
                        "print(chester.worker.__file__); print(cloudpickle.__file__)",
                        str(rt.path)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(line.endswith(".pyc") for line in r.stdout.split()), r.stdout


_IMPORT_ALL = """
import sys
zip_path, names = sys.argv[1], sys.argv[2:]
sys.path.insert(0, zip_path)
before = set(sys.modules)
import importlib
for name in names:
    importlib.import_module(name)
import sysconfig
stdlib = tuple(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib"))
for name in sorted(set(sys.modules) - before):
    where = getattr(sys.modules[name], "__file__", None)
    if where is None:  # a built-in or frozen module
        continue
    if not where.startswith(zip_path + "/") and not where.startswith(stdlib):
        print("outside the zip:", name, where)
"""


def test_the_runtime_holds_only_the_target_package_and_it_imports_alone(tmp_path):
    """The zip carries chester/__init__.py, chester/target/ and cloudpickle (each module with
    its .pyc) and its __main__.py, nothing else; every module in it imports with a Python
    that sees only the zip and the standard library (-I -S: no site-packages, no chester
    installed) and pulls in nothing from elsewhere."""
    import zipfile

    rt = runtime.build()
    names = zipfile.ZipFile(rt.path).namelist()
    outside = [n for n in names if n != "__main__.py" and not n.startswith(
        ("chester/target/", "cloudpickle/")) and n not in ("chester/__init__.py",
                                                           "chester/__init__.pyc")]
    assert outside == []
    assert {"chester/target/worker.py", "chester/target/runner.py", "chester/target/tool.py",
            "chester/target/__main__.py", "chester/target/logger.py",
            "cloudpickle/__init__.py"} <= set(names)
    assert all(n.endswith((".py", ".pyc")) for n in names)
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in names
                     if n.endswith(".py") and n != "__main__.py")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", _IMPORT_ALL, str(rt.path), *modules],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    for tool in ("worker", "runner", "target"):  # and the tools start from it the same way
        r = subprocess.run([sys.executable, "-I", "-S", str(rt.path), tool, "--help"],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (tool, r.stderr)


def test_a_run_writes_with_chester_logger_from_the_zip_alone(tmp_path):
    """``from chester import logger`` (the earlier chester's name) on a target that has
    nothing but the runtime: the logger in chester.target, under its old name."""
    rt = runtime.build()
    code = ("import sys; sys.path[:0] = [sys.argv[1]]\n"
            "from chester import logger\nimport chester.logger\n"
            "assert logger is chester.logger and logger.__name__ == 'chester.target.logger'\n"
            "logger.configure(dir=sys.argv[2], format_strs=['csv'])\n"
            "logger.logkv('step', 1); logger.dumpkvs(); logger.reset()\n"
            "print(logger.__file__)")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(rt.path), str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"{rt.path}/chester/target/logger.py")
    assert (tmp_path / "progress.csv").read_text() == "step\n1\n"


def test_a_run_finds_the_rest_of_chester_where_chester_is_installed(tmp_path):
    """The runtime's chester.target comes first; what the zip does not hold (the launcher
    side, a module of the project's packages may import it) comes from a chester installed
    on the target, and from nowhere where there is none."""
    import chester

    rt = runtime.build()
    installed = str(Path(chester.__file__).resolve().parents[1])  # this checkout's chester
    code = ("import sys; sys.path[:0] = sys.argv[1:]\n"
            "import chester.target.worker, chester.naming, chester.variants.generator\n"
            "print(chester.target.worker.__file__); print(chester.naming.__file__)\n"
            "print(chester.variants.generator.__file__)")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(rt.path), installed],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    worker, naming, generator = r.stdout.split()
    assert worker.startswith(str(rt.path) + "/")
    assert naming == str(Path(installed) / "chester" / "variants" / "naming.py")
    assert generator == str(Path(installed) / "chester" / "variants" / "generator.py")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(rt.path)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "ModuleNotFoundError: No module named 'chester." in r.stderr


def test_a_run_from_the_zip_unpickles_with_the_shipped_cloudpickle(tmp_path):
    """A run folder written by the launcher, run by a bare Python through the runtime."""
    import cloudpickle

    from chester import rundir as rd

    py = _bare_python()
    run_dir = tmp_path / "1_run"
    (run_dir / ".chester").mkdir(parents=True)
    rd.write_json_atomic(run_dir / rd.RUN_JSON, {"token": "t", "name": "1_run", "attempt": 1})
    value = "it's $(id) `x`\n\u00e9"

    def fn(variant, log_dir, exp_name):
        import sys as _s

        with open(log_dir + "/out.json", "w") as f:
            f.write(__import__("json").dumps({"v": variant["v"], "py": _s.executable}))

    with open(run_dir / rd.PAYLOAD, "wb") as f:
        f.write(cloudpickle.dumps(fn))
        f.write(cloudpickle.dumps({"v": value}))
    r = subprocess.run([py, str(runtime.build().path), "worker", str(run_dir)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads((run_dir / "out.json").read_text())
    assert out == {"v": value, "py": py}
    assert json.loads((run_dir / rd.STATUS).read_text())["state"] == "succeeded"


@pytest.mark.parametrize("line,problem", [
    ("chester-probe python=missing", "no Python at 'python3'"),
    ("chester-probe python=3.8.10 /usr/bin/python3.8", "older than chester needs"),
    (f"chester-probe python=3.{sys.version_info[1] + 1}.0 /opt/py", "runs are pickled for it"),
    ("garbage", "did not run"),
])
def test_a_python_that_cannot_run_the_sweep_is_one_line(line, problem):
    probe = runtime.parse_probe(f"chester-probe runtime=1\n{line}\n")
    with pytest.raises(BackendError) as ei:
        runtime.check(probe, who="ssh backend 'b' (h)", python="python3")
    msg = str(ei.value)
    assert problem in msg and "\n" not in msg and msg.startswith("ssh backend 'b' (h): ")
    assert "set `python:`" in msg


def test_the_same_minor_version_passes():
    here = "%d.%d.%d" % sys.version_info[:3]
    probe = runtime.parse_probe(f"chester-probe runtime=0\nchester-probe python={here} /x\n")
    assert not probe.runtime_present and probe.version == tuple(sys.version_info[:3])
    runtime.check(probe, who="b", python="python3")


def test_guard_lines_stop_a_script_before_it_submits(tmp_path):
    built = runtime.build()
    rt = tmp_path / built.name
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\necho 'chester-probe python=3.8.1 /old'\n")
    fake.chmod(0o755)

    def run(python):
        script = "\n".join(["set -euo pipefail", *runtime.guard_lines(python, str(rt)),
                            "echo SUBMITTED"])
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True)

    r = run(sys.executable)
    assert r.returncode == runtime.EXIT_NO_RUNTIME and "SUBMITTED" not in r.stdout
    whole = built.path.read_bytes()
    rt.write_bytes(whole[:len(whole) // 2])  # cut short by a full disk: sent again
    r = run(sys.executable)
    assert r.returncode == runtime.EXIT_NO_RUNTIME and "SUBMITTED" not in r.stdout
    rt.write_bytes(whole)
    r = run(sys.executable)
    assert r.returncode == 0 and "SUBMITTED" in r.stdout
    r = run(str(fake))
    assert r.returncode == runtime.EXIT_BAD_PYTHON and "SUBMITTED" not in r.stdout
    assert runtime.parse_probe(r.stdout).version == (3, 8, 1)


def test_a_probe_through_a_container_names_the_command():
    out = ("chester-probe via=apptainer exec -B /p /img.sif python3\n"
           'FATAL:   "python3": executable file not found in $PATH\n'
           "chester-probe python=broken\n")
    probe = runtime.parse_probe(out)
    assert probe.via == "apptainer exec -B /p /img.sif python3" and "FATAL" in probe.said
    with pytest.raises(BackendError) as ei:
        runtime.check(probe, who="gl backend (login)", python="python3")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("gl backend (login): 'python3' in the container "
                                              "(`apptainer exec -B /p /img.sif python3`)")
    assert "executable file not found" in msg and "set `python:` to a Python" in msg
    missing = runtime.parse_probe("chester-probe via=apptainer exec /img.sif python3\n"
                                  "chester-probe container=missing\n")
    with pytest.raises(BackendError, match="the container runtime 'apptainer' is not on PATH"):
        runtime.check(missing, who="gl backend (login)", python="python3")


def test_a_runtime_that_does_not_import_is_one_line():
    here = "%d.%d.%d" % sys.version_info[:3]
    probe = runtime.parse_probe(f"chester-probe runtime=1\nchester-probe python={here} /x\n"
                                "chester-probe import=ModuleNotFoundError: No module named "
                                "'chester'\n")
    with pytest.raises(BackendError) as ei:
        runtime.check(probe, who="b", python="python3")
    assert "does not import" in str(ei.value) and "ModuleNotFoundError" in str(ei.value)


def test_guard_lines_run_the_probe_through_a_container(tmp_path):
    """The probe runs the Python through the container runtime (a stand-in here), finds the
    runtime there and imports it; a container runtime that is not there stops the script."""
    from chester.remote import container as ctr
    from chester.remote.options import Container
    from chester.testing import container_calls, container_stand_in

    rt = runtime.build()
    shim, calls = container_stand_in(tmp_path / "ctr")

    def run(c):
        via = (ctr.env_lines(c), ctr.wrap([], c, binds=[str(tmp_path)]))
        script = "\n".join(["set -euo pipefail", *runtime.guard_lines(
            sys.executable, str(rt.path), container=via), "echo SUBMITTED"])
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True)

    r = run(Container(image="/img.sif", runtime=str(shim)))
    assert r.returncode == 0 and "SUBMITTED" in r.stdout, r.stdout + r.stderr
    assert "chester-probe import=ok" in r.stdout
    (call,) = container_calls(calls)
    assert call[:4] == ["exec", "-B", str(tmp_path), "/img.sif"]
    r = run(Container(image="/img.sif", runtime=str(tmp_path / "none" / "apptainer")))
    assert r.returncode == runtime.EXIT_BAD_PYTHON and "SUBMITTED" not in r.stdout
    assert runtime.parse_probe(r.stdout).problem == "container runtime missing"


def _memo(rt):
    found = list(rt.parent.glob(rt.name + ".probe-*"))
    assert len(found) <= 1, found
    return found[0] if found else None


def test_a_good_probe_answer_is_remembered_until_the_python_changes(tmp_path):
    """The probe's Python start is remembered beside the runtime: the next probe prints the
    remembered answer while the Python (its file, PYTHONHOME, PYTHONPATH) is the same, and
    asks again once ``python`` is another file or PYTHONPATH differs."""
    other = other_python(why="a second Python binary")
    here = os.path.realpath(sys.executable)
    rt = runtime.build()
    remote = tmp_path / rt.name
    remote.write_bytes(rt.path.read_bytes())
    (tmp_path / "bin").mkdir()
    py = tmp_path / "bin" / "python"
    py.symlink_to(here)

    def probe(**env):
        script = runtime.probe_script(str(py), str(remote))
        r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, **env})
        assert r.returncode == 0, r.stderr
        return r.stdout

    def tamper():  # a remembered answer that no Python would give: seen only if remembered
        memo = _memo(remote)
        key = memo.read_text().splitlines()[0]
        memo.write_text(f"{key}\nchester-probe python=3.99.0 /remembered\n"
                        "chester-probe import=ok\n")

    first = probe()
    assert "chester-probe import=ok" in first and _memo(remote) is not None
    tamper()
    assert "python=3.99.0 /remembered" in probe()
    again = probe(PYTHONPATH=str(tmp_path / "nowhere"))  # another PYTHONPATH: asked again
    assert "/remembered" not in again and "import=ok" in again
    tamper()
    py.unlink()
    py.symlink_to(other)  # the same name, another Python
    fresh = probe()
    assert "/remembered" not in fresh and "import=ok" in fresh
    assert runtime.parse_probe(fresh).executable == str(py)


def test_a_script_python_or_a_failed_import_is_never_remembered(tmp_path):
    rt = runtime.build()
    remote = tmp_path / rt.name
    shim = tmp_path / "python"  # a pyenv-style shim: it may start another Python tomorrow
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    remote.write_bytes(rt.path.read_bytes())
    out = subprocess.run(["sh", "-c", runtime.probe_script(str(shim), str(remote))], cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert "import=ok" in out and _memo(remote) is None
    remote.write_bytes(b"not a zip")  # not what its name says: sent again, never tried
    bare = _bare_python()
    out = subprocess.run(["sh", "-c", runtime.probe_script(bare, str(remote))], cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert "runtime=0" in out and "import=" not in out and _memo(remote) is None


def test_an_unchanged_chester_is_not_read_again_and_a_changed_one_is(tmp_path, monkeypatch):
    """The runtime's digest is remembered under the modules' stat: a launch with the same
    files builds nothing and reads none of them; a changed module makes a new runtime."""
    monkeypatch.setenv("CHESTER_CACHE_DIR", str(tmp_path / "cache"))
    runtime._BUILT.clear()
    first = runtime.build()
    real_contents, real_sources = runtime._contents, runtime._sources

    def no_reading(*a, **k):
        raise AssertionError("the modules were read again")

    monkeypatch.setattr(runtime, "_contents", no_reading)
    runtime._BUILT.clear()
    assert runtime.build() == first
    extra = tmp_path / "extra.py"
    extra.write_text("X = 1\n")
    monkeypatch.setattr(runtime, "_sources",
                        lambda: real_sources() + [("chester/zz_extra.py", str(extra))])
    monkeypatch.setattr(runtime, "_contents", real_contents)
    second = runtime.build()
    assert second.digest != first.digest
    extra.write_text("X = 22\n")  # edited: another size and mtime, another runtime
    third = runtime.build()
    assert third.digest not in (first.digest, second.digest)
    import zipfile

    assert zipfile.ZipFile(third.path).read("chester/zz_extra.py") == b"X = 22\n"


def test_a_worker_starts_without_importing_typing():
    """A worker's own imports are the standard library's smallest: ``typing`` (and what it
    pulls in) is not among them, so a run of an imported function pays for its own imports
    only (cloudpickle, which imports typing, comes only with a function sent by value)."""
    code = ("import sys; from chester.target import worker, rundir; "
            "print(' '.join(sorted(m for m in ('typing', 'cloudpickle', 'chester.plugin', "
            "'attrs') if m in sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", r.stdout
