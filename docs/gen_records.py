"""Write docs/records.md from the fields of chester.plugin.records (`nox -s docs`)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDS = ("BackendSpec", "Capabilities", "BackendConfig", "RunSpec", "PreparedSweep",
           "RunHandle", "RunStatus", "PullPatterns", "PullResult")


def _type(f: object) -> str:
    tp = getattr(f, "type", None)
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", repr(tp))
    return str(text).replace("|", "\\|")


def _default(f: object) -> str:
    import attrs

    d = getattr(f, "default", attrs.NOTHING)
    if d is attrs.NOTHING:
        return "required"
    if isinstance(d, attrs.Factory):  # type: ignore[arg-type]
        return f"`{d.factory.__name__}()`"
    return f"`{d!r}`"


def render() -> str:
    import attrs

    from chester.plugin import records

    out = ["# Records reference", "",
           "Generated from `chester/plugin/records.py` by `docs/gen_records.py`; do not edit by "
           "hand.",
           "", inspect.getdoc(records) or "", "",
           "Every record is an attrs frozen, keyword-only class. The tables say, for each field,",
           "what it holds, who fills it and who reads it.", ""]
    for name in RECORDS:
        cls = getattr(records, name)
        out += [f"## `{name}`", "", inspect.getdoc(cls) or "", "",
                "| field | type | default | holds | filled by | read by |",
                "|---|---|---|---|---|---|"]
        for f in attrs.fields(cls):
            m = f.metadata
            out.append(f"| `{f.name}` | `{_type(f)}` | {_default(f)} | {m.get('doc', '')} | "
                       f"{m.get('filled_by', '')} | {m.get('read_by', '')} |")
        out.append("")
    out += ["## `State`", "", inspect.getdoc(records.State) or "", "",
            ", ".join(f"`{s.value}`" for s in records.State)
            + ". Terminal: " + ", ".join(f"`{s.value}`" for s in records.State if s.terminal)
            + ".", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    target = HERE / "records.md"
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
