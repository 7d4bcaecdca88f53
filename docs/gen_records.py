"""Write docs/records.md from the fields of chester.plugin.records (`nox -s docs`)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
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
    from roles import md_text

    from chester.plugin import records

    out = ["# Records reference", "",
           "Generated from `chester/plugin/records.py` by `docs/gen_records.py`; do not edit by "
           "hand.",
           "", md_text(inspect.getdoc(records) or "", records.__name__), "",
           "Every record is an attrs frozen, keyword-only class. The tables say, for each field,",
           "what it holds, who fills it and who reads it.", ""]
    for name in RECORDS:
        cls = getattr(records, name)
        out += [f"## `{name}`", "", md_text(inspect.getdoc(cls) or "", f"{records.__name__}.{name}"), "",
                "| field | type | default | holds | filled by | read by |",
                "|---|---|---|---|---|---|"]
        for f in attrs.fields(cls):
            m = f.metadata
            cells = [md_text(str(m.get(k, "")), f"{records.__name__}.{name}")
                     for k in ("doc", "filled_by", "read_by")]
            out.append(f"| `{f.name}` | `{_type(f)}` | {_default(f)} | " + " | ".join(cells)
                       + " |")
        out.append("")
    out += ["## `State`", "", md_text(inspect.getdoc(records.State) or "", records.__name__), "",
            ", ".join(f"`{s.value}`" for s in records.State)
            + ". Terminal: " + ", ".join(f"`{s.value}`" for s in records.State if s.terminal)
            + ".", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    target = HERE / "records.md"
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
