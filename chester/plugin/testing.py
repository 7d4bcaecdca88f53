"""A conformance suite that any backend plugin runs against itself.

Use it from a pytest module in the backend's tests::

    import pytest
    from chester.plugin.testing import BackendConformance, ConformanceEnv

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def chester_env(self, tmp_path, my_server):
            return ConformanceEnv.create(
                tmp_path, backend="mine",
                config={"backends": {"mine": {"type": "mine", "host": my_server.address}}})

Every test launches real runs through :func:`chester.launch` on the backend and checks what
a researcher relies on: runs succeed and come home, failures say why, cancel stops a run and
its children, status is one hook call for many runs, a second pull transfers nothing new,
hostile variant values arrive byte for byte (to a function, and as a command's arguments),
a failing command reports its exit status, and a launcher that died mid-submit can be run
again without running anything twice.

The functions launched here are module-level in this module, so the target needs only
chester installed (they pickle by reference).
"""

from __future__ import annotations

import io
import json
import os
import shlex
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from chester.config import ChesterConfig, load_config
from chester.plugin.dispatch import Dispatcher
from chester.plugin.manager import build_plugin_manager, hookimpl
from chester.target.testing_functions import (  # noqa: F401  (part of this module's API)
    HOSTILE_VALUES,
    fn_done_early,
    fn_hostile,
    fn_print_lines,
    fn_print_then_wait,
    fn_raise,
    fn_sleep,
    fn_sleep_with_child,
    fn_write_result,
    log_line,
)


def _now() -> float:
    return time.time()


def check_golden(path: str | os.PathLike[str], text: str) -> None:
    """Compare rendered ``text`` (a job script, a submit script) with the golden file
    ``path``. With ``CHESTER_UPDATE_GOLDEN=1``, or when the file does not exist yet, write
    it instead (then read the diff before committing it). Replace what changes from run
    to run (a runtime's digest, temporary paths) before calling."""
    path = Path(path)
    if os.environ.get("CHESTER_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if text != path.read_text(encoding="utf-8"):
        raise AssertionError(f"{path.name} changed; rerun with CHESTER_UPDATE_GOLDEN=1 if "
                             "intended, and read the diff")


def container_stand_in(folder: str | os.PathLike[str], name: str = "apptainer"
                       ) -> tuple[Path, Path]:
    """A stand-in for ``apptainer``/``singularity`` where neither can be installed.

    It takes the same command line (``exec [-B SRC[:DST]]... [--nv] [--OPTION]... IMAGE
    CMD...``), appends its arguments as one JSON list a line to the calls file, and runs
    CMD on the host. Returns ``(runtime path, calls file)``; give the runtime path as the
    backend's ``container: {runtime: PATH}`` (or ``singularity_command``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exe, calls = folder / name, folder / f"{name}-calls.jsonl"
    exe.write_text(f"""#!/bin/sh
python3 - {shlex.quote(str(calls))} "$@" <<'PY'
import fcntl, json, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, (json.dumps(sys.argv[2:]) + "\\n").encode())
os.close(fd)
PY
[ "$1" = exec ] || {{ echo "{name}: only exec is supported" >&2; exit 2; }}
shift
while [ $# -gt 0 ]; do
  case "$1" in -B|--bind) shift 2 ;; -*) shift ;; *) break ;; esac
done
shift  # the image
exec "$@"
""")
    exe.chmod(0o755)
    return exe, calls


def container_calls(calls: str | os.PathLike[str]) -> list[list[str]]:
    """The argument lists a :func:`container_stand_in` was called with, in order."""
    p = Path(calls)
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


#: A command run by the suite: writes its arguments into the run folder (only Python needed).
CMD_SHOW_ARGV = ["python", "-c", "import json, os, sys; json.dump(sys.argv[1:], open(os.path."
                 "join(os.environ['CHESTER_LOG_DIR'], 'argv.json'), 'w', encoding='utf-8'))"]
CMD_FAIL = ["python", "-c", "import sys; print('boom from the command', file=sys.stderr); "
            "sys.exit(5)"]


@attrs.define
class ConformanceEnv:
    """Where and how the suite launches: a project folder with its chester.yaml."""

    project: Path
    backend: str
    config: ChesterConfig
    timeout: float = 180.0
    poll_interval: float = 0.5
    #: Does a pid (from a run's pids.json) still live? Remote backends may override.
    pid_alive: Callable[[int], bool] = attrs.field(default=None)
    #: Can the suite check leftover processes (same pid namespace as the target)?
    check_processes: bool = True
    #: Options that make the backend's workers unable to start (e.g. ``{"python":
    #: "/nonexistent/python3"}``); the suite checks such a launch fails clearly or its runs
    #: end with a reason. None: that check is skipped.
    broken_options: Mapping[str, Any] | None = None

    @classmethod
    def create(cls, tmp_path: Path, *, backend: str, config: Mapping[str, Any],
               **kw: Any) -> ConformanceEnv:
        """Write ``tmp_path/project/chester.yaml`` from ``config`` and load it."""
        import yaml

        project = Path(tmp_path) / "project"
        project.mkdir(parents=True, exist_ok=True)
        (project / ".git").mkdir(exist_ok=True)  # marks the project root
        (project / "chester.yaml").write_text(yaml.safe_dump(dict(config)))
        cfg = load_config(project / "chester.yaml")
        return cls(project=project, backend=backend, config=cfg, **kw)

    def __attrs_post_init__(self) -> None:
        if self.pid_alive is None:
            from chester.target.rundir import pid_alive

            self.pid_alive = lambda pid: pid_alive(pid)


class _ClosedPipe(io.StringIO):
    """An output whose reader has gone: every write raises ``BrokenPipeError``."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


class _DropOnce(io.StringIO):
    """An output whose first write once ``after`` characters arrived raises
    ``TransientBackendError`` (what a dropped link raises mid-stream) and keeps nothing of
    it; the dispatcher then retries the call. Every other write is kept."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.dropped = 0

    def write(self, text: str) -> int:
        if not self.dropped and self.tell() >= self.after:
            from chester.plugin.errors import TransientBackendError

            self.dropped += 1
            raise TransientBackendError("injected: the link dropped while the log streamed")
        return super().write(text)


class _FailFirstSubmit:
    """An observer plugin whose first ``chester_submit`` raises before the backend's runs."""

    def __init__(self) -> None:
        self.left = 1

    @hookimpl(wrapper=True)
    def chester_submit(self):  # type: ignore[no-untyped-def]
        if self.left:
            self.left -= 1
            from chester.plugin.errors import BackendError

            raise BackendError("injected: the submit failed before reaching the backend")
        return (yield)


class _CallCounter:
    """An observer plugin counting lifecycle hook calls."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    @hookimpl(wrapper=True)
    def chester_status(self):  # type: ignore[no-untyped-def]
        self.calls["chester_status"] = self.calls.get("chester_status", 0) + 1
        return (yield)

    @hookimpl(wrapper=True)
    def chester_submit(self):  # type: ignore[no-untyped-def]
        self.calls["chester_submit"] = self.calls.get("chester_submit", 0) + 1
        return (yield)


def dispatcher_with(plugin: object, name: str | None = None, **kw: Any) -> Dispatcher:
    """A dispatcher over a fresh plugin manager (every installed plugin, new instances of
    their backend classes) in which ``plugin`` — a backend instance built for a test, e.g. a
    subclass that records or breaks what it does — replaces the installed plugin ``name``
    (default: the plugin's ``name``). ``kw`` goes to :class:`Dispatcher` (``sleep=``)::

        class Recording(SlurmBackend):
            def open_executor(self, backend):
                return Spy(super().open_executor(backend))

        sweep = chester.launch(fn, vg, backend="slurm", dispatcher=dispatcher_with(Recording()))
    """
    mgr = build_plugin_manager()
    name = name or getattr(plugin, "name", None)
    if not name:
        raise ValueError("dispatcher_with: name the plugin to replace")
    mgr.unregister(name)
    mgr.register(plugin, name=name)
    return Dispatcher(manager=mgr, **kw)


def _dispatcher() -> tuple[Dispatcher, _CallCounter]:
    mgr = build_plugin_manager()
    counter = _CallCounter()
    mgr.register(counter, name="chester-conformance-counter")
    return Dispatcher(manager=mgr, sleep=lambda s: time.sleep(min(s, 0.2))), counter


def _counter(sweep: Any) -> _CallCounter:
    return sweep.dispatcher.manager.pm.get_plugin("chester-conformance-counter")


class BackendConformance:
    """Subclass in a test module and provide a ``chester_env`` fixture (a ConformanceEnv)."""

    def _launch(self, cenv: ConformanceEnv, fn: Callable | list[str], variants: Any, prefix: str,
                **kw: Any) -> Any:
        from chester.launcher.launching import launch

        disp, _ = _dispatcher()
        sweep = launch(fn, variants, backend=cenv.backend, exp_prefix=prefix,
                       config=cenv.config, dispatcher=disp, **kw)
        return sweep

    def _wait(self, env: ConformanceEnv, sweep: Any, **kw: Any) -> dict:
        return sweep.wait(timeout=env.timeout, poll_interval=env.poll_interval,
                          progress=False, **kw)

    def test_runs_succeed_and_come_home(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        variants = [{"lr": lr, "name": f"run-{i}"} for i, lr in enumerate([0.1, 0.01, 0.001])]
        sweep = self._launch(env, fn_write_result, variants, "conf-basic")
        states = self._wait(env, sweep, pull=True)
        assert sorted(s.value for s in states.values()) == ["succeeded"] * 3, states
        for run, v in zip(sweep.runs, variants, strict=False):
            result = json.loads((run.log_dir / "result.json").read_text())
            assert result["variant"] == v
            assert result["exp_name"] == run.name
            assert (run.log_dir / "invocations.txt").read_text().count("\n") == 1
            assert (run.log_dir / ".done").exists()
            assert "hello from" in (run.log_dir / "stdout.log").read_text()
            assert json.loads((run.log_dir / "variant.json").read_text())["lr"] == v["lr"]

    def test_done_alone_is_no_success(self, chester_env: ConformanceEnv) -> None:
        """A run that writes ``.done`` itself before its function returns is running until
        its worker records the end (the one rule, docs/architecture.md "States"): it is
        neither reported succeeded early nor stopped as a success's leftover."""
        env = chester_env
        sweep = self._launch(env, fn_done_early, [{"seconds": 4}], "conf-done-early")
        states = self._wait(env, sweep, pull=True)
        run = sweep.runs[0]
        assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
        assert (run.log_dir / "result.json").exists(), (
            "chester_status: .done without the worker's success record is no success (the "
            "run was reported succeeded, or stopped, before it ended)")

    def test_status_is_one_call_for_many_runs(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        sweep = self._launch(env, fn_write_result, [{"i": i} for i in range(6)], "conf-status")
        assert _counter(sweep).calls.get("chester_submit") == 1
        before = _counter(sweep).calls.get("chester_status", 0)
        states = sweep.status()
        assert len(states) == 6
        assert _counter(sweep).calls.get("chester_status", 0) == before + 1
        self._wait(env, sweep, pull=True)

    def test_failure_reports_the_exception(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        sweep = self._launch(env, fn_raise, [{"tag": "t-41"}, {"tag": "t-42"}], "conf-fail")
        states = self._wait(env, sweep, pull=True)
        assert [s.value for s in states.values()] == ["failed", "failed"]
        for run, tag in zip(sweep.runs, ["t-41", "t-42"], strict=False):
            assert run.reason and "ValueError" in run.reason and tag in run.reason, (
                "chester_status: a run that ended otherwise carries a reason (the exception); "
                f"got {run.reason!r}")
            assert run.stderr_tail and f"deliberate failure {tag}" in run.stderr_tail, (
                "chester_status: a failed run carries stderr_tail, the last lines of its "
                f"stderr; got {run.stderr_tail!r}")
            assert not (run.log_dir / ".done").exists()
            assert "deliberate failure" in (run.log_dir / "stderr.log").read_text()

    def test_cancel_stops_run_and_children(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        sweep = self._launch(env, fn_sleep_with_child, [{"seconds": 600}], "conf-cancel")
        deadline = time.monotonic() + env.timeout
        while sweep.status()[sweep.runs[0].name].value != "running":
            assert time.monotonic() < deadline, "run never started"
            time.sleep(env.poll_interval)
        # the run has recorded its pids before we cancel
        pids = None
        while pids is None and time.monotonic() < deadline:
            sweep.pull()  # no-op until terminal; remote backends: pids come after cancel
            p = sweep.runs[0].log_dir / "pids.json"
            if p.exists():
                pids = json.loads(p.read_text())
            elif sweep.status()[sweep.runs[0].name].value == "running":
                time.sleep(env.poll_interval)
                if not sweep.backend.type == "local":
                    break
        result = sweep.cancel()
        assert result == {sweep.runs[0].name: True}
        states = self._wait(env, sweep, pull=True)
        row = sweep.store.run(sweep.runs[0].id)
        assert states[sweep.runs[0].name].value == "cancelled", (row.state, row.reason,
                                                                 row.stderr_tail)
        if pids is None:
            pids = json.loads((sweep.runs[0].log_dir / "pids.json").read_text())
        if env.check_processes:
            end = time.monotonic() + 15
            while (env.pid_alive(pids["worker"]) or env.pid_alive(pids["child"])) and \
                    time.monotonic() < end:
                time.sleep(0.2)
            assert not env.pid_alive(pids["worker"]), "the run's process survived cancel"
            assert not env.pid_alive(pids["child"]), "a child of the run survived cancel"

    def test_logs_follow_into_a_closed_pipe_ends_at_once(self, chester_env: ConformanceEnv
                                                          ) -> None:
        """``chester logs -f RUN | head -2`` while the run goes on printing nothing: the
        command ends as soon as ``head`` has its lines, quietly, with exit status 0, as
        ``tail -f | head`` does (chester_logs: a ``write`` to ``out`` that raises
        ``BrokenPipeError``, or the CLI's interruption when the reader goes away, ends the
        hook and propagates as it is; it is no error of the link)."""
        import subprocess
        import sys
        import tempfile

        env = chester_env
        sweep = self._launch(env, fn_print_then_wait, [{"lines": 3, "seconds": 300}],
                             "conf-head")
        run = sweep.runs[0].name
        _logs_until(sweep, run, "line 2", env)  # the run printed its lines and waits
        # a write that fails (the reader left while the run prints) ends the hook at once
        # with that error: not taken for a dropped link and retried
        t0 = time.monotonic()
        try:
            sweep.logs(run, follow=True, out=_ClosedPipe())
            raise AssertionError("chester_logs: a write that raised BrokenPipeError went unseen")
        except BrokenPipeError:
            pass
        assert time.monotonic() - t0 < 10, "chester_logs went on after its output was closed"
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chester.cli", "logs", "-f", run], cwd=env.project,
                env={**os.environ, "CHESTER_CONFIG_PATH": str(env.project / "chester.yaml")},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            try:
                assert proc.stdout is not None
                seen = [proc.stdout.readline() for _ in range(2)]
                assert seen == [b"line 0\n", b"line 1\n"], seen
                proc.stdout.close()  # `head -2` has its two lines and exits
                t0 = time.monotonic()
                code = proc.wait(timeout=60)
                took = time.monotonic() - t0
                err.seek(0)
                said = err.read().decode("utf-8", "replace")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                sweep.cancel()
        assert code == 0 and said == "", (code, said)
        assert took < 10, f"logs -f went on {took:.1f}s after its reader left"
        self._wait(env, sweep)

    def test_logs_retried_mid_stream_repeat_and_skip_no_byte(self, chester_env: ConformanceEnv
                                                             ) -> None:
        """``chester logs -f`` while the link drops once after part of the log arrived: the
        dispatcher retries the call, and the retry goes on from the byte the first attempt
        had written up to, counted in the log's raw bytes (chester_logs: "a retry never
        repeats nor skips a byte"). The log holds characters of one to four bytes and bytes
        that are no UTF-8; the output is the log decoded once, whole."""
        env = chester_env
        lines = 40
        # the run prints for 8 s: the follow below sees the log grow, chunk by chunk
        sweep = self._launch(env, fn_print_lines, [{"lines": lines, "every": 0.2}],
                             "conf-logs-retry")
        run = sweep.runs[0].name
        buf = _logs_until(sweep, run, "line 002", env)  # follow where the log has begun
        out = _DropOnce(after=len(buf.getvalue()))
        sweep.logs(run, follow=True, out=out)
        expect = b"".join(log_line(i) for i in range(lines)).decode("utf-8", "replace")
        assert out.dropped == 1, "the injected drop never happened"
        got = out.getvalue()
        assert got == expect, (
            "chester_logs: a call retried after a dropped link goes on from the byte already "
            "written, never repeating nor skipping one; got "
            f"{len(got)} characters for {len(expect)}: {got[-300:]!r}")
        self._wait(env, sweep)

    def test_second_pull_transfers_nothing(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        sweep = self._launch(env, fn_write_result, [{"i": i} for i in range(3)], "conf-pull")
        self._wait(env, sweep, pull=True)
        again = sweep.pull()
        assert len(again) == 3
        assert sum(r.files for r in again) == 0, again
        assert sum(r.bytes for r in again) == 0, again

    def test_hostile_values_arrive_exactly(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        pwned = Path("/tmp/chester-pwned")
        if pwned.exists():
            pwned.unlink()
        sweep = self._launch(env, fn_hostile, [dict(HOSTILE_VALUES)], "conf-hostile",
                             env={"CHESTER_HOSTILE": HOSTILE_VALUES["subshell"]})
        states = self._wait(env, sweep, pull=True)
        run = sweep.runs[0]
        assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
        got = json.loads((run.log_dir / "hostile.json").read_text())
        assert got["values"] == HOSTILE_VALUES
        assert not pwned.exists(), "a variant value was evaluated by a shell"

    def test_relaunch_after_crash_runs_each_variant_once(self, chester_env: ConformanceEnv) -> None:
        """A launcher that died after the backend got the runs but before the store knew."""
        from chester.launcher.launching import launch

        env = chester_env
        variants = [{"i": i} for i in range(4)]
        disp, _counter = _dispatcher()

        class Crash(BaseException):
            pass

        class CrashAfterSubmit:
            @hookimpl(wrapper=True)
            def chester_submit(self):  # type: ignore[no-untyped-def]
                yield
                raise Crash()

        disp.manager.register(CrashAfterSubmit(), name="crash-after-submit")
        try:
            launch(fn_write_result, variants, backend=env.backend, exp_prefix="conf-crash",
                   config=env.config, dispatcher=disp)
        except Crash:
            pass
        else:  # pragma: no cover
            raise AssertionError("the injected crash did not happen")
        sweep = self._launch(env, fn_write_result, variants, "conf-crash")
        states = self._wait(env, sweep, pull=True)
        runs = sweep.runs
        assert len(runs) == 4
        caps = disp.manager.get_backend(sweep.backend.type).spec.capabilities
        if caps.idempotent_submit:
            assert all(s.value == "succeeded" for s in states.values()), states
        for run in runs:
            inv = run.log_dir / "invocations.txt"
            n = inv.read_text().count("\n") if inv.exists() else 0
            assert n <= 1, f"{run.name} ran {n} times"
            if caps.idempotent_submit:
                assert n == 1

    def test_command_runs_get_hostile_values_as_argv(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        pwned = Path("/tmp/chester-pwned")
        if pwned.exists():
            pwned.unlink()
        for style in ("argparse", "hydra"):
            sweep = self._launch(env, CMD_SHOW_ARGV, [dict(HOSTILE_VALUES)],
                                 f"conf-cmd-{style}", args_style=style)
            states = self._wait(env, sweep, pull=True)
            run = sweep.runs[0]
            assert states[run.name].value == "succeeded", (run.reason, run.stderr_tail)
            argv = json.loads((run.log_dir / "argv.json").read_text(encoding="utf-8"))
            if style == "argparse":
                expect = [a for k, v in HOSTILE_VALUES.items() for a in (f"--{k}", v)]
                assert argv[:-4] == expect
                assert argv[-4] == "--log_dir" and argv[-2:] == ["--exp_name", run.name]
            else:
                # written for Hydra's parser, which reads back exactly each value
                from chester.target.hydra_grammar import hydra_value

                assert argv[:-1] == [f"{k}={hydra_value(v)}" for k, v in HOSTILE_VALUES.items()]
                assert argv[-1].startswith("hydra.run.dir=")
            assert (run.log_dir / ".done").exists()
        assert not pwned.exists(), "a variant value was evaluated by a shell"

    def test_failed_command_reports_its_exit_status(self, chester_env: ConformanceEnv) -> None:
        env = chester_env
        sweep = self._launch(env, CMD_FAIL, [{"tag": 1}], "conf-cmd-fail")
        states = self._wait(env, sweep, pull=True)
        run = sweep.runs[0]
        assert states[run.name].value == "failed"
        assert run.reason and "exited with status 5" in run.reason, run.reason
        assert run.stderr_tail and "boom from the command" in run.stderr_tail
        assert not (run.log_dir / ".done").exists()

    def test_run_folders_with_spaces_and_unicode(self, chester_env: ConformanceEnv) -> None:
        """A log folder whose path has spaces and non-ASCII letters (run folders, and their
        place on the target, carry them)."""
        import yaml

        env = chester_env
        raw = yaml.safe_load(env.config.path.read_text()) if env.config.path else {}
        raw["log_dir"] = "data dir/r\u00e9sultats \u2603"
        alt = env.project / "chester-unicode.yaml"
        alt.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        odd = attrs.evolve(env, config=load_config(alt))
        sweep = self._launch(odd, fn_write_result, [{"i": 1}, {"i": 2}], "conf-odd path")
        states = self._wait(odd, sweep, pull=True)
        assert sorted(s.value for s in states.values()) == ["succeeded"] * 2, (
            "chester_submit/chester_pull: run folders whose paths hold spaces and unicode "
            f"run and come home like any other; got {states}")
        for run in sweep.runs:
            assert "r\u00e9sultats \u2603" in str(run.log_dir)
            assert json.loads((run.log_dir / "result.json").read_text())["exp_name"] == \
                run.name, "chester_pull: each run's files come home into its local_dir"

    def test_relaunch_after_a_submit_that_raised(self, chester_env: ConformanceEnv) -> None:
        """A submit hook raised: the runs say so (not that the launcher stopped), and the next
        launch of the same variants submits each once (or, for a backend that cannot check
        tokens, reports them lost with that reason; resume="retry" submits them)."""
        from chester.launcher.launching import launch
        from chester.plugin.errors import BackendError

        env = chester_env
        disp, _ = _dispatcher()
        disp.manager.register(_FailFirstSubmit(), name="chester-conformance-fail-submit")
        variants = [{"i": 1}, {"i": 2}]
        try:
            launch(fn_write_result, variants, backend=env.backend, exp_prefix="conf-subfail",
                   config=env.config, dispatcher=disp)
        except BackendError:
            pass
        else:
            raise AssertionError("the injected submit failure did not reach the caller")
        from chester.launcher.sweeps import sweep as reattach

        rows = reattach("conf-subfail", config=env.config).rows()
        assert all(r.reason and "the submit failed" in r.reason and "injected" in r.reason
                   for r in rows), ("launcher: a run whose submit raised records that error "
                                    f"as its reason; got {[r.reason for r in rows]}")
        sweep = self._launch(env, fn_write_result, variants, "conf-subfail")
        if {s.value for s in sweep.status().values()} == {"lost"}:  # no token check
            assert all("the submit failed" in (r.reason or "") for r in sweep.runs)
            sweep = self._launch(env, fn_write_result, variants, "conf-subfail",
                                 resume="retry")
        states = self._wait(env, sweep, pull=True)
        assert sorted(s.value for s in states.values()) == ["succeeded"] * 2, states
        for run in sweep.runs:
            assert (run.log_dir / "invocations.txt").read_text().count("\n") == 1, (
                "chester_submit: a retried submit never starts a run twice")

    def test_cancel_right_after_submit(self, chester_env: ConformanceEnv) -> None:
        """Runs cancelled before (or as) they start end cancelled and never run on."""
        env = chester_env
        sweep = self._launch(env, fn_sleep_with_child, [{"seconds": 60}] * 3, "conf-cancel-early")
        res = sweep.cancel()
        assert all(res.values()), ("chester_cancel: every live run (queued ones included) is "
                                   f"cancelled and reported true; got {res}")
        states = self._wait(env, sweep, pull=False)
        assert {s.value for s in states.values()} == {"cancelled"}, (
            f"chester_status: a cancelled run reads cancelled; got {states}")
        time.sleep(2 * env.poll_interval + 1)
        assert {s.value for s in sweep.status().values()} == {"cancelled"}, (
            "chester_cancel: a run cancelled before it started never starts later")

    def test_workers_that_cannot_start_do_not_stay_queued(self,
                                                          chester_env: ConformanceEnv) -> None:
        """The launch fails in one line, or each run ends failed/lost with a reason: never
        queued for ever."""
        import pytest
        import yaml

        from chester.plugin.errors import ChesterError

        env = chester_env
        if env.broken_options is None:
            pytest.skip("the backend's test gives no broken_options")
        raw = yaml.safe_load(env.config.path.read_text()) if env.config.path else {}
        raw.setdefault("backends", {}).setdefault(env.backend, {"type": env.backend})
        raw["backends"][env.backend].update(env.broken_options)
        alt = env.project / "chester-broken.yaml"
        alt.write_text(yaml.safe_dump(raw))
        broken = attrs.evolve(env, config=load_config(alt))
        try:
            sweep = self._launch(broken, fn_write_result, [{"i": 1}], "conf-nostart")
        except ChesterError as exc:
            assert "\n" not in str(exc), "a launch error is one line"
            return
        deadline = time.monotonic() + env.timeout
        while True:
            run = sweep.runs[0]
            st = sweep.status()[run.name]
            if st.terminal:
                break
            assert time.monotonic() < deadline, (
                "chester_status: a run whose worker never started must not stay "
                f"{st.value} for ever")
            time.sleep(env.poll_interval)
        assert st.value in ("failed", "lost") and run.reason, (
            f"chester_status: it ends failed or lost with a reason; got {st.value} "
            f"{run.reason!r}")


def _logs_until(sweep: Any, run: str, text: str, env: ConformanceEnv) -> io.StringIO:
    """``chester logs RUN`` (not following) until its output holds ``text``; that output."""
    deadline = time.monotonic() + env.timeout
    while True:
        buf = io.StringIO()
        sweep.logs(run, out=buf)
        if text in buf.getvalue():
            return buf
        assert time.monotonic() < deadline, f"the run printed nothing: {buf.getvalue()!r}"
        time.sleep(env.poll_interval)
