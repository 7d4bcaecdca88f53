"""The ``chester`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from chester import __version__

EXIT_USER = 2
EXIT_BACKEND = 1
AT_N = "PREFIX@N: launch N only (the sweep id `status` shows)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chester",
        description="Launch ML parameter sweeps anywhere, track every run, bring results home.",
        epilog="Runs are tracked in <project>/.chester/jobs.db; every command works from any "
               "shell in the project. See `chester COMMAND --help`.")
    p.add_argument("--version", action="store_true", help="print versions of chester and plugins")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("--log-json", action="store_true", help="log as JSON lines on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    pl = sub.add_parser("plugins", help="installed backend plugins")
    plsub = pl.add_subparsers(dest="plugins_command", metavar="ACTION")
    pll = plsub.add_parser("list", help="list plugins, their backends and hooks")
    pll.add_argument("--json", action="store_true", help="JSON output")
    pll.add_argument("--verbose", action="store_true", help="show each backend's options")

    cf = sub.add_parser("config", help="show the resolved chester.yaml and where values came from")
    cf.add_argument("--json", action="store_true", help="JSON output")

    st = sub.add_parser("status", help="states of every run of a sweep (default: the latest)")
    st.add_argument("exp_prefix", nargs="?", metavar="PREFIX",
                    help=f"sweep name (exp_prefix): all its runs, of every launch; {AT_N}")
    st.add_argument("--all", action="store_true",
                    help="one table per launch (of PREFIX, or every launch in the store)")
    st.add_argument("--json", action="store_true", help="JSON output")
    st.add_argument("--no-refresh", action="store_true", help="show stored states only")

    lg = sub.add_parser("logs", help="print a run's output")
    lg.add_argument("run", help="run name, token, id or folder")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    lg.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")

    cn = sub.add_parser("cancel", help="cancel a sweep's unfinished runs, or named runs")
    cn.add_argument("exp_prefix", nargs="?", metavar="PREFIX",
                    help=f"sweep name (default: the latest); {AT_N}")
    cn.add_argument("--run", action="append", default=[], help="only this run (repeatable)")

    pu = sub.add_parser("pull", help="bring finished runs home (incremental)")
    pu.add_argument("exp_prefix", nargs="?", metavar="PREFIX",
                    help=f"sweep name (default: the latest); {AT_N}")
    pu.add_argument("--include", action="append", default=[], help="rsync include pattern")
    pu.add_argument("--exclude", action="append", default=[], help="rsync exclude pattern")
    pu.add_argument("--bare", action="store_true", help="skip *.pkl *.png *.gif *.pth *.pt")

    mo = sub.add_parser("monitor", help="wait for sweeps to end, pulling each run as it finishes")
    mo.add_argument("exp_prefix", nargs="?", metavar="PREFIX",
                    help=f"sweep name (default: every unfinished sweep); {AT_N}")
    mo.add_argument("--interval", type=float, default=None, help="seconds between polls")
    mo.add_argument("--bare", action="store_true", help="skip large artefacts when pulling")
    mo.add_argument("--timeout", type=float, default=None, help="give up after N seconds")
    mo.add_argument("--once", action="store_true", help="one pass, then exit")
    # plugins' own subcommands (e.g. `chester ec2 ls`), through the register_commands hook
    from chester.plugins import get_plugin_manager

    try:
        get_plugin_manager().hook.chester_register_commands(subparsers=sub)
    except Exception as exc:  # one plugin's commands never take chester's own down
        print(f"chester: warning: a plugin's subcommands could not be added: {exc}",
              file=sys.stderr)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chester`` command."""
    from chester.errors import BackendError, ChesterError, UserError

    parser = _parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.version:
        return _version()
    if args.command is None:
        parser.print_help()
        return 0
    from chester.logs import configure_lazily

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
        print("chester: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _version() -> int:
    from chester.plugins import get_plugin_manager

    mgr = get_plugin_manager()
    parts = []
    for rec in sorted(mgr.records.values(), key=lambda r: r.name):
        dist = (rec.distribution or rec.name).replace("chester-backend-", "")
        parts.append(f"{dist}-{rec.version}" if rec.version else dist)
    print(f"chester {__version__}; plugins: {', '.join(parts) or 'none'}")
    return 0


def emit_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """A rich table on a terminal; tab-separated text when piped."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        Console().print(t)
    else:
        if title:
            print(f"# {title}")
        print("\t".join(columns))
        for r in rows:
            print("\t".join("" if v is None else str(v).replace("\n", " ") for v in r))


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":
    sys.exit(main())
