"""reST roles in docstrings (:class:`X`, :func:`~a.b`, :data:`Y`) as links of the docs site.

chester's docstrings name other objects the Sphinx way. Markdown knows no roles, so left alone
they show as raw text (":class:`Sweep`"). :func:`md_roles` turns each one into an autorefs
cross-reference: the name is resolved as Python would (absolute, then relative to the object
whose docstring holds it, then under ``chester``), to the object's canonical path (where it is
defined, not an old alias), and becomes ``<autoref identifier=... optional>``: a link when the
site documents that object, plain code otherwise. The API pages get it through the griffe
extension :class:`ReSTRoles` (mkdocs.yml), the generated pages (hooks, records, target) by
calling :func:`md_roles` themselves.
"""

from __future__ import annotations

import html
import importlib
import inspect
import re
import types
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const|term)"
                  r":`(?P<body>[^`]+)`")
#: ``title <target>`` inside a role
_TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")
_MISSING = object()
#: an HTML tag Markdown may hold on purpose; any other ``<word>`` is a placeholder
_HTML = frozenset({"a", "br", "code", "div", "span", "img", "p", "sup", "sub", "em", "strong",
                   "details", "summary", "kbd", "autoref"})
_CODE_SPAN = re.compile(r"(`+)[\s\S]*?(?<!`)\1(?!`)")
_TAG = re.compile(r"<(/?[A-Za-z][^<>\n]*)>")


def _import_path(dotted: str) -> Any:
    """The object at ``dotted`` (a module, or attributes of the longest importable module
    prefix), or ``_MISSING``."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING:
            return obj
    return _MISSING


def canonical(obj: Any, found_as: str) -> str:
    """Where ``obj`` is defined (``module.qualname``), so an old or re-exported name links to
    the page that documents it; data keeps the path it was found under."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    target = inspect.unwrap(obj) if callable(obj) else obj
    if isinstance(target, (type, types.FunctionType, types.BuiltinFunctionType)) or \
            inspect.ismethoddescriptor(target):
        module = getattr(target, "__module__", None)
        qual = getattr(target, "__qualname__", None)
        if module and qual and "<locals>" not in qual:
            return f"{module}.{qual}"
    if isinstance(obj, property) and obj.fget is not None:
        return f"{obj.fget.__module__}.{obj.fget.__qualname__}"
    head, _, last = found_as.rpartition(".")
    if head:
        parent = _import_path(head)
        if parent is not _MISSING and not isinstance(parent, types.ModuleType):
            return f"{canonical(parent, head)}.{last}"
    return found_as


def resolve(target: str, context: str) -> str | None:
    """The canonical path ``target`` names, read as in the object ``context`` (a dotted path),
    or None when nothing by that name can be imported."""
    target = target.lstrip("~.!")
    parts = context.split(".") if context else []
    candidates = [target]
    candidates += [".".join(parts[:i] + [target]) for i in range(len(parts), 0, -1)]
    candidates.append(f"chester.{target}")
    for cand in candidates:
        obj = _import_path(cand)
        if obj is not _MISSING:
            return canonical(obj, cand)
    return None


def escape_placeholders(text: str) -> str:
    """``<name>``, ``<run folder>`` outside code written so Markdown shows them instead of
    swallowing them as HTML tags. Fenced and indented code blocks are left alone."""

    def tags(seg: str) -> str:
        return _TAG.sub(lambda m: m.group(0) if m.group(1).split()[0].lower().strip("/")
                        in _HTML else "&lt;" + m.group(0)[1:], seg)

    out, fenced = [], False
    for para in re.split(r"(\n)", text):
        if para.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or para.startswith("    ") or para == "\n":
            out.append(para)
            continue
        pos, pieces = 0, []
        for m in _CODE_SPAN.finditer(para):
            pieces += [tags(para[pos:m.start()]), m.group(0)]
            pos = m.end()
        out.append("".join([*pieces, tags(para[pos:])]))
    return "".join(out)


def md_text(text: str, context: str = "") -> str:
    """Docstring text as the site shows it: roles as links, placeholders visible."""
    return md_roles(escape_placeholders(text), context)


def md_roles(text: str, context: str = "") -> str:
    """``text`` with every reST role replaced by an autorefs cross-reference (or plain code
    when the name resolves to nothing)."""

    def one(m: re.Match[str]) -> str:
        body = m.group("body").strip()
        titled = _TITLED.match(body)
        if titled:
            title, target = titled.group("title"), titled.group("target")
        else:
            target = body
            title = body.lstrip("!.").split(".")[-1] if body.startswith("~") else body.lstrip("!")
            title = title.lstrip("~")
        ident = resolve(target, context)
        code = f"<code>{html.escape(title)}</code>"
        if ident is None:
            return code
        return f'<autoref identifier="{html.escape(ident)}" optional>{code}</autoref>'

    return ROLE.sub(one, text)


try:  # the griffe extension (mkdocstrings' loader); the generators need only md_roles
    from griffe import Extension, Object
except ImportError:  # pragma: no cover - griffe comes with mkdocstrings-python
    pass
else:
    class ReSTRoles(Extension):
        """Rewrite the reST roles of every docstring griffe loads (see the module's text)."""

        def on_object(self, *, obj: Object, **kwargs: Any) -> None:
            doc = obj.docstring
            if doc is not None:
                doc.value = md_text(doc.value, obj.path)
