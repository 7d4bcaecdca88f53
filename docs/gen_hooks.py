"""Write docs/hooks.md from the docstrings of chester.plugin.hookspecs (`nox -s docs`)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))


def render() -> str:
    from roles import md_text

    from chester.plugin import hookspecs

    out = ["# Hook reference", "",
           "Generated from `chester/plugin/hookspecs.py` by `docs/gen_hooks.py`; do not edit by hand.",
           "", md_text(inspect.getdoc(hookspecs) or "", hookspecs.__name__), ""]
    out += ["Network hooks (retried by the dispatcher): "
            + ", ".join(f"`{h}`" for h in sorted(hookspecs.NETWORK_HOOKS)), ""]
    for name in sorted(n for n in dir(hookspecs.ChesterSpecs) if n.startswith("chester_")):
        fn = getattr(hookspecs.ChesterSpecs, name)
        sig = str(inspect.signature(fn)).replace("(self, ", "(").replace("(self)", "()")
        out += [f"## `{name}{sig}`", "",
                md_text(inspect.getdoc(fn) or "", f"{hookspecs.__name__}.ChesterSpecs.{name}"), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    target = HERE / "hooks.md"
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
