"""Write docs/target.md, the target protocol, from ``chester.target`` (`nox -s docs`).

What runs where the runs run: the run folder's files and the records the tools' help does not
describe (``chester.target.rundir``'s text), and
each target-side program's own ``--help`` (the worker, the queue runner, the target tool and
its status fields). tests/test_docs.py fails when the page and the code differ.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
TARGET = HERE / "target.md"


def _help(main: Callable[[list[str]], object], argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*argv, "--help"])
        except SystemExit:
            pass
    return out.getvalue().rstrip()


def _block(text: str) -> list[str]:
    return ["```text", text, "```", ""]


def render() -> str:
    from roles import md_text

    import chester.target as target_pkg
    from chester.target import rundir, runner, tool, worker

    os.environ["COLUMNS"] = "100"  # help text wraps the same wherever this runs
    layout = inspect.getdoc(rundir) or ""
    intro, _, rest = layout.partition("::")
    block, _, records = rest.strip("\n").partition("\n\n")  # the tree, then its records
    tree = textwrap.dedent(block)
    out = ["# Target protocol", "",
           "Generated from `chester/target/` by `docs/gen_target.py`; do not edit by hand.", "",
           md_text(inspect.getdoc(target_pkg) or "", "chester.target"), "",
           "The launcher ships this package as one zip, `chester-<digest>.pyz`, under the "
           "backend's `<remote_dir>/.chester/runtime/` ([the remote layer](remote.md)), so the "
           "target needs no chester installed: run the tools as "
           "`python chester-<digest>.pyz worker|runner|target|zygote ARGS...`, or where chester is "
           "installed as `python -m chester.target.worker`, `python -m chester.target.runner` "
           "and `python -m chester.target`. The Python must be 3.10 or newer, and of the "
           "launcher's minor version when a function is pickled (backends check this before "
           "submitting).", "",
           "## The run folder", "",
           md_text(intro.strip().split("\n\n")[-1].rstrip(":") + ":", "chester.target.rundir"),
           "",
           *_block(tree),
           md_text(records.strip(), "chester.target.rundir"), "",
           "## `worker`: one run", "", *_block(_help(worker.main, [])),
           "## `runner`: the detached queue of one target", "",
           md_text(inspect.getdoc(runner) or "", "chester.target.runner"), "",
           *_block(_help(runner.main, [])),
           "## `target`: status, cancel and tail of many runs in one call", ""]
    out += _block(_help(tool.main, []))
    for cmd in ("status", "cancel", "tail"):
        out += [f"### `target {cmd}`", "", *_block(_help(tool.main, [cmd]))]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
