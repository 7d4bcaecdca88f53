"""Backends keep no state in module globals: what a backend learns while it works (caches,
clients, pacers, log offsets) lives on its instance, which each plugin manager makes for
itself (a test builds its own). Constants — UPPER_CASE names, immutable values — are fine.
The hosted backends' plugin modules also stay under a line limit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(ROOT.glob("chester_backends/*/src/**/*.py"))

_MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "deque", "Counter",
                  "Lock", "RLock", "Event", "Condition", "Semaphore", "local",
                  "WeakKeyDictionary", "WeakValueDictionary"}
_DISPLAYS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)


def _called(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
    return None


def module_state(source: str) -> list[str]:
    """What a module keeps in its globals that a call could change: a mutable container
    bound to a name that is not a constant (or an empty one under any name, to be filled
    later), a lock, a ``global`` statement, a memoizing decorator."""
    tree = ast.parse(source)
    found = []
    for node in tree.body:
        targets: list[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for t in targets:
            if not isinstance(t, ast.Name) or t.id == "__all__" or value is None:
                continue
            mutable = isinstance(value, _DISPLAYS) or _called(value) in _MUTABLE_CALLS
            empty = (isinstance(value, (ast.Dict, ast.List, ast.Set)) and
                     not getattr(value, "keys", None) and not getattr(value, "elts", None)) \
                or (isinstance(value, ast.Call) and not value.args and mutable)
            if mutable and (not t.id.isupper() or empty):
                found.append(f"line {node.lineno}: {t.id}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"line {node.lineno}: global {', '.join(node.names)}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                name = d.attr if isinstance(d, ast.Attribute) else getattr(
                    d.func if isinstance(d, ast.Call) else d, "id", None)
                if name in ("cache", "lru_cache"):
                    found.append(f"line {node.lineno}: @{name} {node.name}")
    return found


def test_the_check_finds_module_state():
    assert module_state("_CACHE: dict[str, int] = {}\n") == ["line 1: _CACHE"]
    assert module_state("LAST = {}\n") == ["line 1: LAST"]
    assert module_state("import threading\n_lock = threading.Lock()\n") == ["line 2: _lock"]
    assert module_state("seen = set()\n") == ["line 1: seen"]
    assert module_state("from functools import cache\n@cache\ndef f():\n    return 1\n") == \
        ["line 3: @cache f"]
    assert module_state("x = None\ndef f():\n    global x\n    x = 1\n") == ["line 3: global x"]
    assert module_state("FLAGS = {'a': 1}\nNAMES = ('a',)\nq = str.strip\n") == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_backend_module_keeps_state(path):
    assert module_state(path.read_text(encoding="utf-8")) == [], (
        f"{path.relative_to(ROOT)} keeps state in module globals: put it on the backend's "
        "instance (chester.remote.backend.Backend)")


#: the hosted backends' plugin modules stay thin: the hooks they share live in
#: chester.remote.hosted, and what is a backend's own beyond its plan goes in modules beside
PLUGIN_LINES_MAX = 150
THIN_PLUGINS = ["chester_backends/ssh/src/chester_backend_ssh/plugin.py",
                "chester_backends/autobot/src/chester_backend_autobot/plugin.py"]


@pytest.mark.parametrize("rel", THIN_PLUGINS)
def test_hosted_plugin_modules_stay_short(rel):
    lines = len((ROOT / rel).read_text(encoding="utf-8").splitlines())
    assert lines < PLUGIN_LINES_MAX, (
        f"{rel} has {lines} lines (the limit is under {PLUGIN_LINES_MAX}): move helpers into a "
        "module beside it (as chester_backend_autobot/capacity.py) or into chester.remote.hosted")
