"""Sweeps from a command line, read as Hydra's multirun reads them (``seed=range(3)``).

``chester launch -- python train.py lr=1e-3,1e-4 seed=1,2,3`` splits its command into the
program (every token that is not ``key=value`` with a Hydra key) and the overrides, which
are read with Hydra's override grammar (hydra-core's own parser): ``a,b`` and
``choice(a,b)`` sweep, ``range(1,4)`` sweeps 1, 2, 3, a value in quotes (``'a,b'``,
``"it's"``) or with escaped characters (``a\\,b``) is one value, ``[1,2]`` and ``{a:1}`` are
one list and one dict. ``glob()`` and ``interval()`` are refused in one line: a fixed set of
runs cannot use them. Each variant holds the values Hydra reads (``1e-3`` is the float
0.001, ``'a,b'`` the string ``a,b``); run names come from them.

What each run's program receives stays what was typed where Hydra would pass that text on:
an override that is one value reaches the program exactly as typed, and so does each
typed element of a comma list (``lr=1e-3``); elements a function made (``range``,
``choice``) are written so that Hydra reads back exactly that element
(:func:`chester.command.hydra_value`). In ``argparse`` style the program gets each value
itself: a string without its quotes or escapes, a number, boolean or null as typed.

A sweep file (``--sweep FILE.yaml``) maps keys to a list of values (each as YAML reads it)
or to one value; a string is read like the text after ``key=`` on the command line, as
Hydra's ``hydra.sweeper.params`` are (``seed: range(1,4)``, ``lr: 1e-3,1e-4``). The
variants are every combination, in the order the keys were given.

Values made only of letters, digits, ``_ - + . /`` and commas are read here, by the
grammar's own rules for them (:func:`chester.hydra_grammar.token_value`); anything else by
hydra-core's parser, imported only then (importing it takes about 0.1 s).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from chester.plugin.errors import UserError
from chester.target.hydra_grammar import HYDRA_KEY, hydra_value, token_value, typed_token

#: values read without hydra-core: elements of these characters, separated by commas
_SIMPLE = re.compile(r"(?:[A-Za-z0-9_.+\-/]+(?:,[A-Za-z0-9_.+\-/]+)*)?")
_HINT = ("put a value holding quotes, commas, spaces or brackets in quotes (x='a,b', "
         "x=\"it's\") or escape the character with a backslash (x=a\\,b); see "
         "https://hydra.cc/docs/advanced/override_grammar/basic/")
_CALL_HINT = ("fix the call (x=range(1,4), x=choice(a,b)) or put the value in quotes to "
              "pass it as text (x='f(1)')")


class Element(NamedTuple):
    """One value of a key: what Hydra reads, and its text as typed (``None`` when a
    function such as ``range()`` made it)."""

    value: Any
    typed: str | None


class Swept(NamedTuple):
    """A key (as typed: ``lr``, ``+model.depth``, ``db@backup``) and its values. ``given``
    is the whole text after ``=`` when it is one value, not a sweep: passed on as typed."""

    key: str
    elements: list[Element]
    given: str | None


_PARSER: Any = None


def _parser() -> Any:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    return _PARSER


def _plain(value: Any, where: str) -> Any:
    """A parsed element as plain data (quoted strings as their text); a sweep inside a list
    or dict is refused."""
    from hydra.core.override_parser.types import Glob, QuotedString, Sweep

    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {_plain(k, where): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (Sweep, Glob)):
        raise UserError(f"{where}: a sweep inside a list, a dict or another sweep cannot be "
                        "run; sweep whole values instead (x=[1],[2] or x=choice([1],[2]))")
    return value


def _slices(text: str) -> list[str]:
    """The elements of a comma list as typed (``a,'b c',[1,2]`` → ``a``, ``'b c'``,
    ``[1,2]``), split where Hydra's lexer finds commas outside brackets and calls."""
    from antlr4 import InputStream
    from hydra.grammar.gen.OverrideLexer import OverrideLexer

    lexer = OverrideLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.mode(OverrideLexer.VALUE_MODE)
    opening = {OverrideLexer.POPEN, OverrideLexer.BRACKET_OPEN, OverrideLexer.BRACE_OPEN}
    closing = {OverrideLexer.PCLOSE, OverrideLexer.BRACKET_CLOSE, OverrideLexer.BRACE_CLOSE}
    out: list[str] = []
    depth, start = 0, 0
    for tok in lexer.getAllTokens():
        if tok.type in opening:
            depth += 1
        elif tok.type in closing:
            depth -= 1
        elif tok.type == OverrideLexer.COMMA and depth == 0:
            out.append(text[start:tok.start])
            start = tok.stop + 1
    out.append(text[start:])
    return out


def _hydra_read(key: str, text: str, where: str) -> Swept:
    """``key=text`` read by hydra-core's override parser."""
    try:
        parser = _parser()
    except ImportError:
        raise UserError(f"{where}: reading this value needs hydra-core, which chester-ml "
                        "depends on; reinstall it: pip install chester-ml") from None
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    try:
        override = parser.parse_override(f"{key}={text}")
    except HydraException as exc:
        # one line: ANTLR's list of the tokens it expected says nothing a user can act on
        why = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        why = why.split(" expecting ", 1)[0] or "it cannot be read"
        hint = _CALL_HINT if " while evaluating " in why else _HINT
        raise UserError(f"{where} is not a Hydra override ({why}); {hint}") from None
    kind = override.value_type
    if kind == ValueType.GLOB_CHOICE_SWEEP:
        raise UserError(f"{where}: glob() picks options of a config group, which only the "
                        "app's own Hydra can list; name them (db=mysql,postgresql) or run "
                        "the app's own multirun (-m)")
    if kind == ValueType.INTERVAL_SWEEP:
        raise UserError(f"{where}: interval() is a continuous range for sweepers that "
                        "sample (Optuna, Nevergrad, Ax); chester runs a fixed set: give the "
                        "values (x=0.1,0.2) or range(start,stop,step)")
    if kind == ValueType.ELEMENT:
        value = _plain(override.value(), where)
        return Swept(key, [Element(value, text.lstrip(" \t"))], text)
    try:  # a range is only stepped through here (range(1,4,0) fails only now)
        swept = list(override.sweep_iterator())
    except (HydraException, ValueError, TypeError, ArithmeticError) as exc:
        raise UserError(f"{where} cannot be swept ({exc}); {_CALL_HINT}") from None
    values = [_plain(v, where) for v in swept]
    if not values:
        raise UserError(f"{where} sweeps over no values; check the range's start, stop and "
                        "step (range(1,4) is 1, 2, 3)")
    typed: list[str | None] = [None] * len(values)
    raw = override.value()
    # each element as typed, unless shuffle() is in it (the app would shuffle it anew)
    if kind == ValueType.SIMPLE_CHOICE_SWEEP and not raw.shuffle and "shuffle" not in text:
        found = _slices(text.lstrip(" \t"))
        if len(found) == len(values):
            typed = list(found)
    return Swept(key, [Element(v, t) for v, t in zip(values, typed, strict=True)], None)


def read_value(key: str, text: str, where: str | None = None) -> Swept:
    """The values of ``key=text``, as Hydra's override grammar reads them. ``where`` names
    the value in errors (default: the override itself)."""
    where = where or repr(f"{key}={text}")
    if _SIMPLE.fullmatch(text):
        parts = text.split(",")
        elements = [Element(token_value(p), p) for p in parts]
        return Swept(key, elements, text if len(parts) == 1 else None)
    return _hydra_read(key, text, where)


def parse_command(tokens: Sequence[str]) -> tuple[list[str], list[Swept]]:
    """(program argv, the overrides' keys and values) from a command line's tokens."""
    if not tokens:
        raise UserError("chester launch needs a command after `--`, e.g. "
                        "`chester launch -- python train.py lr=1e-3,1e-4`")
    program = [tokens[0]]
    keys: list[Swept] = []
    seen: set[str] = set()
    for tok in tokens[1:]:
        key, eq, text = tok.partition("=")
        if not eq or not HYDRA_KEY.fullmatch(key):
            program.append(tok)
            continue
        if key in seen:
            raise UserError(f"{key}= is given twice on the command line; give its values once, "
                            f"separated by commas ({key}=a,b)")
        seen.add(key)
        keys.append(read_value(key, text))
    return program, keys


def load_sweep_file(path: str | Path) -> list[Swept]:
    """A YAML mapping of keys to a list of values or one value (a string is read as the
    text after ``key=``)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise UserError(f"cannot read the sweep file {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{p} must map keys to a value or a list of values, e.g. "
                        "`lr: [0.001, 0.0001]`")
    out: list[Swept] = []
    for k, v in data.items():
        if not isinstance(k, str):
            raise UserError(f"{p}: key {k!r} must be a string")
        if not HYDRA_KEY.fullmatch(k):
            raise UserError(f"{p}: {k!r} is not a Hydra override key (letters, digits, "
                            "_ - $, dots between parts, an optional leading + ++ or ~)")
        if isinstance(v, list):
            if not v:
                raise UserError(f"{p}: {k} has an empty list of values")
            out.append(Swept(k, [Element(x, None) for x in v], None))
        elif isinstance(v, str):
            out.append(read_value(k, v, f"{p}: {k}: {v!r}"))
        else:
            out.append(Swept(k, [Element(v, None)], None))
    return out


def combine(*sweeps: Sequence[Swept]) -> list[dict[str, Any]]:
    """Every combination of the keys' values (one variant when there are no keys)."""
    keys: dict[str, list[Any]] = {}
    for s in sweeps:
        for sw in s:
            if sw.key in keys:
                raise UserError(f"{sw.key} is swept both on the command line and in the sweep "
                                "file; keep it in one place")
            keys[sw.key] = [e.value for e in sw.elements]
    names = list(keys)
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(keys[k] for k in names))]


def _argparse_text(e: Element) -> str:
    """A value as its argument after ``--key``: a string itself; a number, boolean or null
    as typed; anything else in Hydra's syntax (``[1,2]``)."""
    if isinstance(e.value, str):
        return e.value
    typed = (e.typed or "").strip(" \t")
    return typed if typed_token(typed) else hydra_value(e.value)


def texts(*sweeps: Sequence[Swept], style: str) -> dict[str, list[tuple[Any, str]]]:
    """For :class:`chester.command.Command`: per key, the values whose text the program
    receives as typed (``style="hydra"``: after ``key=``; ``"argparse"``: after ``--key``),
    where that differs from how the command would write the value itself."""
    out: dict[str, list[tuple[Any, str]]] = {}
    for s in sweeps:
        for sw in s:
            pairs = out.setdefault(sw.key, [])
            for e in sw.elements:
                if style == "hydra":
                    text = sw.given if sw.given is not None else e.typed
                    if text is not None and text != hydra_value(e.value):
                        pairs.append((e.value, text))
                elif not isinstance(e.value, str):  # a string is passed as itself anyway
                    text = _argparse_text(e)
                    if isinstance(e.value, (list, dict)) or text != str(e.value):
                        pairs.append((e.value, text))
    return out


def default_prefix(program: Sequence[str]) -> str:
    """A sweep name from the command: the script's name (``train`` for ``python
    train.py``), the module's for ``python -m pkg.train``, else the program's."""
    for i, tok in enumerate(program):
        if tok == "-m" and i + 1 < len(program):
            return program[i + 1].rsplit(".", 1)[-1]
        if tok.endswith(".py"):
            return Path(tok).stem
    return Path(program[0]).name
