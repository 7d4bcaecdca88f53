"""Write docs/reference/cli.md from the ``chester`` command's argparse parser (`nox -s docs`).

Every command, subcommand (plugins' own included: every backend of this repository is
installed where the docs are built), argument and option comes from the parser itself, with
its help, default and choices. The examples under each command are checked by
tests/test_docs.py: each one must parse with the same parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "reference" / "cli.md"

#: Examples shown under each command (besides the parser's own epilog). Each must parse.
EXAMPLES: dict[str, list[str]] = {
    "launch": [
        "chester launch -- python train.py lr=1e-3,1e-4 seed=1,2,3",
        "chester launch -b cluster -p lr-sweep --wait -- python train.py lr=1e-3,1e-4",
        "chester launch --dry-run -- python train.py lr=1e-3,1e-4",
        "chester launch --sweep sweep.yaml -- python -m pkg.train model=small",
        "chester launch --style argparse -- python train.py lr=0.1,0.01",
    ],
    "status": ["chester status", "chester status lr-sweep", "chester status lr-sweep@2",
               "chester status lr-sweep --all", "chester status --json"],
    "sweeps": ["chester sweeps", "chester sweeps --json"],
    "logs": ["chester logs 3_lr-sweep_lr_0.001_seed_3", "chester logs -f --stderr 1_lr-sweep"],
    "cancel": ["chester cancel lr-sweep", "chester cancel --run 2_lr-sweep_lr_0.1"],
    "pull": ["chester pull lr-sweep", "chester pull lr-sweep --bare",
             "chester pull lr-sweep --include '*.json' --exclude '*'"],
    "relaunch": ["chester relaunch lr-sweep", "chester relaunch lr-sweep --failed"],
    "monitor": ["chester monitor", "chester monitor lr-sweep --interval 30 --timeout 7200"],
    "config": ["chester config", "chester config --json"],
    "plugins list": ["chester plugins list", "chester plugins list --verbose"],
    "plugins new": ["chester plugins new tmux --dir ."],
}


def parser() -> argparse.ArgumentParser:
    from chester.cli import _parser

    return _parser()


def _subparsers(p: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, sub, helps.get(name, "")))
    return out


def _md(text: str) -> str:
    """Help text as Markdown table text: pipes escaped, placeholders kept visible."""
    return (text or "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") \
        .replace("\n", " ")


def _flags(a: argparse.Action) -> str:
    if a.option_strings:
        names = ", ".join(a.option_strings)
        if a.nargs == 0:
            return f"`{names}`"
        meta = a.metavar or (a.dest.upper() if not a.choices else "{" + ",".join(a.choices) + "}")
        return f"`{names} {meta}`"
    return f"`{a.metavar or a.dest}`"


def _default(a: argparse.Action) -> str:
    if a.nargs == 0 or a.default in (None, argparse.SUPPRESS, [], False):
        return ""
    return f"`{a.default}`"


def _command(path: str, p: argparse.ArgumentParser, help_: str, level: int) -> list[str]:
    out = [f"{'#' * level} `chester {path}`", ""]
    if help_:
        out += [help_[0].upper() + help_[1:] + ("" if help_.endswith(".") else "."), ""]
    out += ["```text", p.format_usage().strip(), "```", ""]
    if p.description and p.description != help_:
        out += [_md(p.description), ""]
    rows = [a for a in p._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    if rows:
        out += ["| argument | default | what it does |", "|---|---|---|"]
        for a in rows:
            choices = f" (one of: {', '.join(map(str, a.choices))})" \
                if a.choices and not a.option_strings else ""
            repeat = " (repeatable)" if isinstance(a, argparse._AppendAction) and \
                "repeatable" not in (a.help or "") else ""
            help_text = a.help or ("the command each run runs, and its arguments"
                                   if a.nargs == argparse.REMAINDER else "")
            out.append(f"| {_flags(a)} | {_default(a)} | {_md(help_text)}{choices}{repeat} |")
        out.append("")
    examples = list(EXAMPLES.get(path, []))
    if p.epilog and "example:" in p.epilog:
        examples.insert(0, p.epilog.split("example:", 1)[1].strip())
    elif p.epilog:
        out += [_md(p.epilog), ""]
    if examples:
        out += ["Examples:", "", "```bash", *examples, "```", ""]
    for name, sub, sub_help in _subparsers(p):
        out += _command(f"{path} {name}", sub, sub_help, level + 1)
    return out


def render() -> str:
    os.environ["COLUMNS"] = "100"  # usage lines wrap the same wherever this runs
    p = parser()
    p.prog = "chester"
    out = ["# Command line reference", "",
           "Generated from the `chester` command's parser (`chester/cli/`, and the plugins' "
           "own commands) by `docs/gen_cli.py`; do not edit by hand. Every command prints the "
           "same with `chester COMMAND --help`.", "",
           "Exit status: 0 when the command did what it was asked; 1 when a backend failed "
           "(or, for `launch --wait` and `pull`, a run did not succeed or did not arrive); "
           "2 for a usage or configuration error, said in one line on stderr.", "",
           "## `chester`", "", _md(p.description or ""), "",
           "```text", p.format_usage().strip(), "```", "",
           "| option | what it does |", "|---|---|"]
    for a in p._actions:
        if a.option_strings and not isinstance(a, argparse._HelpAction):
            out.append(f"| {_flags(a)} | {_md(a.help or '')} |")
    out += ["", _md(p.epilog or ""), ""]
    for name, sub, help_ in _subparsers(p):
        out += _command(name, sub, help_, 2)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
