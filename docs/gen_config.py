"""Write docs/reference/config.md: every key of chester.yaml (`nox -s docs`).

The top-level keys come from ``chester.config.GLOBAL_KEYS``; each backend's keys from the
options class its plugin declares (``BackendSpec.options_cls``), found through the plugin
manager as ``chester`` finds them, so every installed backend is here with each field's type,
default and help. tests/test_docs.py fails when this page and the code differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = HERE / "reference" / "config.md"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") \
        .replace("\n", " ")


def _code(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (list, tuple)) and not value:
        text = "[]"
    elif isinstance(value, dict) and not value:
        text = "{}"
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _default(f: Any) -> str:
    import attrs

    d = f.default
    if d is attrs.NOTHING:
        return "**required**"
    if isinstance(d, attrs.Factory):  # type: ignore[arg-type]
        if d.takes_self:
            return "computed"
        try:
            d = d.factory()
        except Exception:
            return "computed"
    return _code(d)


def _fields(cls: type, prefix: str = "") -> list[str]:
    import attrs

    from chester.config import _attrs_class_of, _type_name

    rows = []
    for f in attrs.fields(cls):
        tp = f.type
        if isinstance(tp, str):  # postponed annotations: resolve them as attrs would
            tp = attrs.resolve_types(cls) and attrs.fields_dict(cls)[f.name].type
        nested = _attrs_class_of(tp)
        name = f"{prefix}{f.name}"
        help_ = f.metadata.get("help", "")
        if nested is not None:
            rows.append(f"| `{name}` | a mapping | {_default(f)} | {_md(help_)} |")
            rows += _fields(nested, prefix=f"{name}.")
        else:
            rows.append(f"| `{name}` | {_md(_type_name(tp))} | {_default(f)} | {_md(help_)} |")
    return rows


def render() -> str:
    from chester.config import GLOBAL_KEYS, NOT_SUPPORTED
    from chester.plugin.manager import build_plugin_manager

    out = ["# chester.yaml reference", "",
           "Generated from `chester/config.py` and the options class of every installed "
           "backend (found through the plugin manager, as `chester` finds them) by "
           "`docs/gen_config.py`; do not edit by hand. `chester plugins list --verbose` "
           "prints the same help for the backends installed where you run it.", "",
           "chester looks for `$CHESTER_CONFIG_PATH`, then `chester.yaml` in the current "
           "folder and its parents up to the git root, then uses built-in defaults (the local "
           "backend only). A mistake is one line naming the file, the key and the fix. "
           "`chester config` prints the resolved file and where each value came from.", "",
           "```yaml",
           "log_dir: data                 # top-level keys (below)",
           "backends:",
           "  NAME:                       # the name you pass as backend= / -b",
           "    type: TYPE                # a backend type (below)",
           "    OPTION: value             # that type's options",
           "```", "",
           "## Top-level keys", "",
           "| key | type | default | what it sets |", "|---|---|---|---|"]
    from chester.config import _type_name

    for key, (tp, default, help_) in GLOBAL_KEYS.items():
        if key in NOT_SUPPORTED:
            continue
        out.append(f"| `{key}` | {_md(_type_name(tp))} | {_code(default)} | {_md(help_)} |")
    out += ["", "Keys of the earlier chester that nothing implements any more are refused "
            "with what replaced them:", ""]
    for key, why in NOT_SUPPORTED.items():
        out.append(f"- `{key}`: {_md(why)}")
    out += ["", "## Backend types", "",
            "Each entry under `backends:` names its `type`; the keys below are that type's "
            "options (a nested mapping's keys are written `group.key` here).", ""]
    mgr = build_plugin_manager()
    backends = mgr.backends()
    out += ["| type | distribution | what it does |", "|---|---|---|"]
    for name, entry in sorted(backends.items()):
        out.append(f"| [`{name}`](#{name}) | `{entry.distribution or entry.plugin_name}` | "
                   f"{_md(entry.spec.summary)} |")
    out.append("")
    for name, entry in sorted(backends.items()):
        cls = entry.spec.options_cls
        out += [f"### `{name}` {{#{name}}}", "",
                f"`type: {name}`, from `{entry.distribution or entry.plugin_name}` "
                f"(options class `{cls.__module__}.{cls.__qualname__}`). "
                f"{_md(entry.spec.summary)}", "",
                "| key | type | default | what it sets |", "|---|---|---|---|",
                *_fields(cls), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
