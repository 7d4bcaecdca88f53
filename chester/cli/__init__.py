"""The ``chester`` command."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from chester import __version__

EXIT_USER = 2
EXIT_BACKEND = 1
AT_N = "PREFIX@N: launch N only (the sweep id `status` shows)"
RUN = ("PREFIX:N (run N of the sweep, as its folder N_... is numbered), or the run's name, "
       "token, id or folder")


class _Parser(argparse.ArgumentParser):
    """argparse, with "did you mean" for a mistyped command or choice."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            import difflib

            choices = re.findall(r"'([^']*)'", m[2]) or [c.strip() for c in m[2].split(",")]
            close = difflib.get_close_matches(m[1], choices, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)


#: chester's own commands: one of these on the command line needs no plugin loaded to be read
OWN_COMMANDS = frozenset({"launch", "plugins", "config", "status", "sweeps", "logs", "cancel",
                          "pull", "relaunch", "monitor"})


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand a command line names (its first word that is no option)."""
    return next((a for a in argv if not a.startswith("-")), None)


#: what may come before the command word of a line whose parser needs only that command:
#: the global options that print nothing (``-h`` lists every command; ``--version`` and
#: abbreviations go through the whole parser, as any other word does)
_QUIET_GLOBALS = frozenset({"-v", "-vv", "-vvv", "--verbose", "--log-json"})


def _only_command(argv: Sequence[str]) -> str | None:
    """The one own command a command line needs parsed (``chester launch ...``): the other
    subcommands' parsers are then not built. ``None`` when the line needs the whole parser:
    no own command, or a word before it that is not a quiet global option."""
    for a in argv:
        if not a.startswith("-"):
            return a if a in OWN_COMMANDS else None
        if a not in _QUIET_GLOBALS:
            return None
    return None


def _parser(plugin_commands: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The ``chester`` command line: the global options, then one subcommand per
    ``_add_*`` step, in the order ``--help`` lists them, then the plugins' own (loading
    every plugin: left out with ``plugin_commands=False``, for a line that names one of
    chester's own commands). ``only``: of chester's own commands, only that one (a line
    that names it, see :func:`_only_command`: it parses the same)."""
    p = _Parser(
        prog="chester",
        description="Launch ML parameter sweeps anywhere, track every run, bring results home.",
        epilog="Runs are tracked in <project>/.chester/jobs.db; every command works from any "
               "shell in the project. See `chester COMMAND --help`.")
    p.add_argument("--version", action="store_true", help="print versions of chester and plugins")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("--log-json", action="store_true", help="log as JSON lines on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, add in (("launch", _add_launch), ("plugins", _add_plugins),
                      ("config", _add_config), ("status", _add_status),
                      ("sweeps", _add_sweeps), ("logs", _add_logs), ("cancel", _add_cancel),
                      ("pull", _add_pull), ("relaunch", _add_relaunch),
                      ("monitor", _add_monitor)):
        if only is None or name == only:
            add(sub)
    if plugin_commands:
        _add_plugin_commands(sub)
    return p


def _add_launch(sub: Any) -> None:
    """Add ``chester launch``: run a command once per variant (its options, the sweep
    file, the command after ``--``)."""
    la = sub.add_parser(
        "launch", help="run a command once per combination of key=a,b values",
        usage="chester launch [-b BACKEND] [-p PREFIX] [--sweep FILE.yaml] "
              "[--style hydra|argparse] [--dry-run] [--wait] [--new] -- COMMAND [ARGS...]",
        description="Run COMMAND once per variant on a backend, as Hydra's multirun does: "
                    "key=value tokens are read with Hydra's override grammar (key=a,b, "
                    "key=range(1,4) and key=choice(a,b) sweep; 'a,b' in quotes or a\\,b "
                    "escaped is one value), --sweep adds keys from a YAML file, and every "
                    "combination is one tracked run. Values reach the command as typed, as "
                    "single argv elements; nothing is run by a shell. The same command run "
                    "again, with the project's code unchanged, reattaches to its launch and "
                    "runs nothing (one line says so); changed code is a new launch.",
        epilog="example: chester launch -b cluster -- python train.py lr=1e-3,1e-4 seed=1,2,3")
    la.add_argument("-b", "--backend", default="local", help="backend name (default: local)")
    la.add_argument("-p", "--prefix", default=None,
                    help="sweep name, exp_prefix (default: the script's name)")
    la.add_argument("--sweep", metavar="FILE.yaml", default=None,
                    help="YAML mapping of keys to a value or a list of values")
    la.add_argument("--style", choices=("hydra", "argparse"), default="hydra",
                    help="hydra: key=value overrides (default); argparse: --key value")
    la.add_argument("--no-run-args", action="store_true",
                    help="do not add the run folder (hydra.run.dir=, or --log_dir/--exp_name)")
    la.add_argument("--dry-run", action="store_true",
                    help="show each run's command and what the backend would submit")
    la.add_argument("--wait", action="store_true",
                    help="wait for every run to end and pull it; exit 1 if any did not succeed")
    la.add_argument("--new", action="store_true",
                    help="a new launch even when the sweep's latest launch ran the same "
                         "variants with the same command and code (by default that one is "
                         "reattached and nothing runs)")
    la.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")


def _add_plugins(sub: Any) -> None:
    """Add ``chester plugins``: the installed plugins: ``plugins list`` and ``plugins new``."""
    pl = sub.add_parser("plugins", help="installed backend plugins")
    plsub = pl.add_subparsers(dest="plugins_command", metavar="ACTION")
    pll = plsub.add_parser("list", help="list plugins, their backends and hooks")
    pll.add_argument("--json", action="store_true", help="JSON output")
    pll.add_argument("--verbose", action="store_true", help="show each backend's options")
    pln = plsub.add_parser("new", help="write a ready-to-install backend package to start from")
    pln.add_argument("name", help="the backend type (a Python identifier, e.g. tmux)")
    pln.add_argument("--dir", default=".", help="where to write chester-backend-NAME/")


def _add_config(sub: Any) -> None:
    """Add ``chester config``: the resolved chester.yaml."""
    cf = sub.add_parser("config", help="show the resolved chester.yaml and where values came from")
    cf.add_argument("--json", action="store_true", help="JSON output")


def _add_status(sub: Any) -> None:
    """Add ``chester status``: a sweep's or one run's states."""
    st = sub.add_parser(
        "status", help="states of every run of a sweep (default: the latest), or one run",
        description="A sweep's runs on one screen: a line per state, then the runs that "
                    "failed or run (every run when they fit), each with a one-line reason. "
                    "Piped: tab-separated values, one run a line, every column. A run "
                    f"({RUN}) shows all about that run.")
    st.add_argument("exp_prefix", nargs="?", metavar="PREFIX|RUN",
                    help=f"sweep name (exp_prefix): all its runs, of every launch; {AT_N}; "
                         "or one run")
    st.add_argument("--all", action="store_true",
                    help="every run and column, one table per launch (of PREFIX, or every "
                         "launch in the store), with the last lines of failed runs' stderr")
    st.add_argument("--json", action="store_true", help="JSON output")
    st.add_argument("--no-refresh", action="store_true", help="show stored states only")


def _add_sweeps(sub: Any) -> None:
    """Add ``chester sweeps``: every sweep of the project."""
    sw = sub.add_parser("sweeps", help="every sweep of the project: backends, counts by "
                                       "state, age")
    sw.add_argument("--json", action="store_true", help="JSON output")
    sw.add_argument("--no-refresh", action="store_true",
                    help="show stored states (with their age) without asking the backends")
    sw.add_argument("--timeout", type=float, default=10.0, metavar="S",
                    help="wait at most S seconds for the backends' answers (default: 10); "
                         "states not refreshed in time say how old they are")


def _add_logs(sub: Any) -> None:
    """Add ``chester logs``: a run's output."""
    lg = sub.add_parser("logs", help="print a run's output",
                        description="Print a run's stdout (or --stderr). For a run that "
                                    "failed, the last lines of its stderr follow, on "
                                    "stderr. -f keeps printing until the run ends, says "
                                    "when it waits for the run to start, and ends with the "
                                    "run's final state.")
    lg.add_argument("run", metavar="RUN", help=RUN)
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    lg.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")


def _add_cancel(sub: Any) -> None:
    """Add ``chester cancel``: cancel a sweep's unfinished runs, or one run."""
    cn = sub.add_parser("cancel", help="cancel a sweep's unfinished runs, or one run",
                        description="Cancel the unfinished runs of a sweep, or one run. "
                                    "Without PREFIX: the latest sweep, after asking on a "
                                    "terminal (refused when not on a terminal, unless -y).")
    cn.add_argument("exp_prefix", nargs="?", metavar="PREFIX|RUN",
                    help=f"sweep name (default: the latest, asked first); {AT_N}; or one "
                         f"run: {RUN}")
    cn.add_argument("--run", action="append", default=[],
                    help="only this run of the sweep (repeatable)")
    cn.add_argument("-y", "--yes", action="store_true",
                    help="do not ask (a bare `chester cancel`: the latest sweep)")


def _add_pull(sub: Any) -> None:
    """Add ``chester pull``: bring finished runs home."""
    pu = sub.add_parser("pull", help="bring finished runs home (incremental)")
    pu.add_argument("exp_prefix", nargs="?", metavar="PREFIX|RUN",
                    help=f"sweep name (default: the latest); {AT_N}; or one run: {RUN}")
    pu.add_argument("--include", action="append", default=[], help="rsync include pattern")
    pu.add_argument("--exclude", action="append", default=[], help="rsync exclude pattern")
    pu.add_argument("--bare", action="store_true", help="skip *.pkl *.png *.gif *.pth *.pt")


def _add_relaunch(sub: Any) -> None:
    """Add ``chester relaunch``: submit a sweep's lost (or failed) runs again."""
    rl = sub.add_parser("relaunch", help="submit a sweep's lost (and, with --failed, failed) "
                                         "runs again, with the current code; succeeded runs "
                                         "are left alone",
                        description="Submit a sweep's lost (with --failed: also failed, "
                                    "timed-out and out-of-memory) runs again, each in its own "
                                    "folder, with the code as it is now: the project is synced "
                                    "again, an imported function is imported afresh, a "
                                    "command runs the current files. A function defined in "
                                    "the launching script cannot be read from here once the "
                                    "code changed: run that script again with "
                                    "resume=\"retry-failed\". The earlier attempt's logs stay "
                                    "beside the new ones (stdout.1.log).")
    rl.add_argument("exp_prefix", nargs="?", help=f"sweep name (default: the latest); {AT_N}")
    rl.add_argument("--failed", action="store_true",
                    help="also runs that failed, timed out or ran out of memory")


def _add_monitor(sub: Any) -> None:
    """Add ``chester monitor``: wait for sweeps to end, pulling as runs finish."""
    mo = sub.add_parser("monitor", help="wait for sweeps to end, pulling each run as it finishes")
    mo.add_argument("exp_prefix", nargs="?", metavar="PREFIX",
                    help=f"sweep name (default: every unfinished sweep); {AT_N}")
    mo.add_argument("--interval", type=float, default=None, help="seconds between polls")
    mo.add_argument("--bare", action="store_true", help="skip large artefacts when pulling")
    mo.add_argument("--timeout", type=float, default=None, help="give up after N seconds")
    mo.add_argument("--once", action="store_true", help="one pass, then exit")


def _add_plugin_commands(sub: Any) -> None:
    """Add the plugins' own subcommands (e.g. ``chester ec2 ls``) through the
    ``chester_register_commands`` hook; a plugin whose commands fail to add is a warning,
    never the end of chester's own."""
    from chester.plugin.manager import get_plugin_manager

    try:
        get_plugin_manager().hook.chester_register_commands(subparsers=sub)
    except Exception as exc:  # one plugin's commands never take chester's own down
        print(f"chester: warning: a plugin's subcommands could not be added: {exc}",
              file=sys.stderr)


#: commands whose work is done on the targets and in the job store: once that is done, what
#: they could not print does not undo it (their exit status stays the truth about the work)
ACTING_COMMANDS = frozenset({"launch", "relaunch", "cancel", "pull", "monitor"})


class GuardedOutput:
    """``sys.stdout``/``sys.stderr`` for one command: a write that fails (a closed stream,
    a full disk, a reader gone) is remembered in :attr:`error` instead of ending the
    command half-way, unless ``strict`` (then the first failure is raised, once, so a
    command that only prints stops). ``buffer`` is guarded the same way."""

    def __init__(self, stream: Any, name: str, *, strict: bool = False,
                 binary: bool = False) -> None:
        self._stream = stream
        self.name = name
        self.strict = strict
        self._binary = binary
        self.error: str | None = None
        #: the write failed because whoever read it went away (`chester status | head`)
        self.reader_gone = False
        self._buffer: GuardedOutput | None = None

    def _failed(self, exc: BaseException) -> None:
        first = self.error is None
        self.reader_gone = isinstance(exc, BrokenPipeError)
        self.error = str(exc) or type(exc).__name__
        if self.strict and first:
            raise exc

    def _call(self, op: str, *a: Any) -> Any:
        if self.error is not None:
            return None
        try:
            if self._stream is None:  # closed before the command started
                import errno

                raise OSError(errno.EBADF, f"{self.name} is closed")
            return getattr(self._stream, op)(*a)
        except (OSError, ValueError) as exc:
            self._failed(exc)
            return None

    def write(self, data: Any) -> int:
        self._call("write", data)
        return len(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._stream is not None:  # nothing was written to a closed one
            self._call("flush")

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (AttributeError, OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self._stream is None:
            import io

            raise io.UnsupportedOperation("fileno")
        return int(self._stream.fileno())

    @property
    def buffer(self) -> GuardedOutput:
        if self._binary:
            raise AttributeError("buffer")
        if self._buffer is None:
            self._buffer = _SharedError(getattr(self._stream, "buffer", None), self)
        return self._buffer

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:
        return getattr(self._stream, "errors", None) or "strict"

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False


class _SharedError(GuardedOutput):
    """The binary ``buffer`` of a :class:`GuardedOutput`: one error for both."""

    def __init__(self, stream: Any, text: GuardedOutput) -> None:
        super().__init__(stream, text.name, strict=text.strict, binary=True)
        self._text = text

    @property
    def error(self) -> str | None:  # type: ignore[override]
        return self._text.error

    @error.setter
    def error(self, value: str | None) -> None:
        if value is not None or not hasattr(self, "_text"):
            if hasattr(self, "_text"):
                self._text.error = value


def _acts(args: argparse.Namespace) -> bool:
    """Whether the command's work is done elsewhere than on stdout (a dry run acts on
    nothing: its output is what it is for, as for status)."""
    return args.command in ACTING_COMMANDS and not getattr(args, "dry_run", False)


def _guard_output(acts: bool) -> tuple[GuardedOutput, GuardedOutput]:
    out = GuardedOutput(sys.stdout, "stdout", strict=not acts)
    err = GuardedOutput(sys.stderr, "stderr")
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    return out, err


def _output_verdict(command: str, acts: bool, code: int, out: GuardedOutput,
                    err: GuardedOutput) -> int:
    """The exit status once the command is done: an acting command keeps its own (what
    it did is done) and says in one line on stderr that only its output was lost; any
    other command (a dry run too), whose output is what it was for, keeps its own when
    its reader went away having read what it wanted (``| head``) and fails otherwise."""
    out.strict = False  # what failed now is said below, not raised
    out.flush()
    if out.error is None:
        return code
    if acts:
        err.write(f"chester: warning: the {command} completed (exit status {code}), but "
                  f"its output could not be written to stdout: {out.error}\n")
        err.flush()
        return code
    if out.reader_gone:  # `| head`: the reader had what it wanted, as `logs -f` into one
        return code
    err.write(f"chester: error: the output could not be written to stdout: {out.error}\n")
    err.flush()
    return code or EXIT_BACKEND


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chester`` command."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    parser = _parser(plugin_commands=_command_word(argv) not in OWN_COMMANDS,
                     only=_only_command(argv))
    args = parser.parse_args(argv)
    if args.version:
        return _version()
    if args.command is None:
        parser.print_help()
        return 0
    real = sys.stdout, sys.stderr
    acts = _acts(args)
    out, err = _guard_output(acts)
    try:
        code = _main(args)
        return _output_verdict(args.command, acts, code, out, err)
    finally:
        sys.stdout, sys.stderr = real


def _main(args: argparse.Namespace) -> int:
    from chester.logs import configure_lazily
    from chester.plugin.errors import BackendError, ChesterError, UserError

    if args.verbose or args.log_json:
        configure_lazily(level="debug" if args.verbose > 1 else "info", json=args.log_json)
    else:
        configure_lazily(level="warning")
    try:
        from chester.cli import commands

        if getattr(args, "chester_command", None) is not None:  # a plugin's subcommand
            return int(args.chester_command(args) or 0)
        return int(getattr(commands, f"cmd_{args.command}")(args) or 0)
    except UserError as exc:
        print(f"chester: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except BackendError as exc:
        print(f"chester: error: {exc}", file=sys.stderr)
        return EXIT_BACKEND
    except ChesterError as exc:
        print(f"chester: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        going = " (runs already submitted go on: `chester status` shows them)" \
            if args.command in ("launch", "relaunch") else ""
        print(f"chester: interrupted{going}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # a reader gone (`chester status | head`): nothing more to say
        try:  # and nothing more is tried at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0  # the reader had what it wanted
    except OSError:
        if sys.stdout.error is None:  # type: ignore[union-attr]
            raise
        return EXIT_BACKEND  # the output failed: said once the command is over
    except Exception as exc:
        import sqlite3

        if not isinstance(exc, sqlite3.Error):
            raise
        from chester.store import explain

        print(f"chester: error: {explain(exc, _store_path())}", file=sys.stderr)
        return EXIT_USER


def _store_path() -> Any:
    """The job store of the project in use, when it can be told."""
    try:
        from chester.config import get_config

        return get_config().store_path
    except Exception:
        return None


def run() -> None:
    """The ``chester`` console script: :func:`main`, then the process ends.

    Once the command is done and nothing else runs in the process, the exit handlers run
    (logging's flush, temporary folders' cleanup, anything registered with :mod:`atexit`),
    the job stores are closed (their write-ahead log goes back into ``jobs.db``), and the
    process ends without the interpreter's teardown, which frees every object one by one:
    some 50 ms after a 1,000-run launch, for nothing. With another thread still running,
    the interpreter ends as usual, waiting for it.

    The cycle collector runs when 100,000 more objects are alive, not 700 (Python's
    default): a launch makes tens of thousands of objects that live until it ends, and
    the default scans them some sixty times (about 17 ms for 1,000 runs). Long commands
    (``monitor``, ``logs -f``) still collect, less often.
    """
    gc.set_threshold(100_000, 10, 10)
    code = main()
    import threading

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive()
           for t in threading.enumerate()):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()  # with them, the job stores close (their log goes into jobs.db)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed pipe or stream (None when
            # it was closed before the command started): nothing more can be said
            pass
    os._exit(code if isinstance(code, int) else 1)


def _version() -> int:
    from chester.plugin.manager import get_plugin_manager

    mgr = get_plugin_manager()
    parts = []
    for rec in sorted(mgr.records.values(), key=lambda r: r.name):
        dist = (rec.distribution or rec.name).replace("chester-backend-", "")
        parts.append(f"{dist}-{rec.version}" if rec.version else dist)
    print(f"chester {__version__}; plugins: {', '.join(parts) or 'none'}")
    return 0


def emit_table(title: str | None, columns: list[str], rows: list[list[Any]], *,
               keep: tuple[str, ...] = (), whole: tuple[str, ...] = (),
               wrap: tuple[str, ...] = (), console: Any = None) -> None:
    """A rich table on a terminal; tab-separated values when piped (no title).

    On a terminal, a column empty in every row is left out (unless in ``keep``); the
    ``whole`` columns (names) are never broken, the ``wrap`` ones (free text) wrap at word
    boundaries and take what width is left, so a table reads on an 80-column terminal."""
    if console is not None or sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        cells = [["" if v is None else str(v) for v in r] for r in rows]
        shown = [i for i, c in enumerate(columns)
                 if c in keep or not rows or any(r[i] for r in cells)]
        from rich import box

        t = Table(title=title, show_lines=False, pad_edge=False, box=box.SIMPLE_HEAD,
                  padding=(0, 1))
        for i in shown:
            c = columns[i]
            if c in whole:
                width = max([len(c)] + [len(r[i]) for r in cells])
                t.add_column(c, no_wrap=True, min_width=width)
            elif c in wrap:
                t.add_column(c, overflow="fold", ratio=1, min_width=min(
                    12, max([len(c)] + [len(r[i]) for r in cells])))
            else:
                t.add_column(c, no_wrap=True, overflow="ellipsis", min_width=len(c))
        for r in cells:
            t.add_row(*[r[i] for i in shown])
        (console or Console()).print(t)
    else:  # tab-separated values only: a header row, then the rows
        print("\t".join(columns))
        for r in rows:
            print("\t".join("" if v is None else str(v).replace("\n", " ") for v in r))


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":
    sys.exit(main())
