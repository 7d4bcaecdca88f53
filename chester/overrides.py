"""Sweeps from a command line, as Hydra's multirun makes them: ``lr=1e-3,1e-4 seed=1,2,3``.

``chester launch -- python train.py lr=1e-3,1e-4 seed=1,2,3`` splits its command into the
program (every token that is not ``key=value``) and the sweep (the ``key=value`` tokens,
Hydra's override syntax, ``+key=``/``++key=`` included). A value with commas outside quotes
and brackets is a list of values to sweep over (``lr=[1,2]`` and ``msg='a,b'`` are one
value). Each value is kept exactly as typed, so it reaches the program as typed; a value that
reads back the same as a number (``1``, ``0.5``) becomes that number for run names. A sweep
file (``--sweep FILE.yaml``) maps keys to a value or a list of values. The variants are every
combination, in the order the keys were given.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chester.errors import UserError

_OVERRIDE = re.compile(r"^(\+{0,2}[A-Za-z_][\w.\-/@]*)=(.*)$", re.S)
_OPEN = {"[": "]", "{": "}", "(": ")"}


def split_values(text: str) -> list[str]:
    """``a,b,[c,d],'e,f'`` → ``['a', 'b', '[c,d]', "'e,f'"]`` (commas outside quotes and
    brackets separate values)."""
    out: list[str] = []
    cur: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            cur.append(ch)
        elif ch in _OPEN:
            stack.append(_OPEN[ch])
            cur.append(ch)
        elif stack and ch == stack[-1]:
            stack.pop()
            cur.append(ch)
        elif ch == "," and not stack:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def typed(text: str) -> Any:
    """``text`` as an int or float when it reads back exactly the same, else the text."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if str(value) == text:
            return value
    return text


def parse_command(tokens: Sequence[str]) -> tuple[list[str], dict[str, list[Any]]]:
    """(program argv, sweep keys → values) from a command line's tokens."""
    if not tokens:
        raise UserError("chester launch needs a command after `--`, e.g. "
                        "`chester launch -- python train.py lr=1e-3,1e-4`")
    program = [tokens[0]]
    keys: dict[str, list[Any]] = {}
    for tok in tokens[1:]:
        m = _OVERRIDE.match(tok)
        if m is None:
            program.append(tok)
            continue
        key, value = m.group(1), m.group(2)
        if key in keys:
            raise UserError(f"{key}= is given twice on the command line; give its values once, "
                            f"separated by commas ({key}=a,b)")
        values = split_values(value)
        if len(values) > 1 and any(v == "" for v in values):
            raise UserError(f"{tok!r} has an empty value in its comma list; remove the extra "
                            "comma (or quote a value that holds commas)")
        keys[key] = [typed(v) for v in values]
    return program, keys


def load_sweep_file(path: str | Path) -> dict[str, list[Any]]:
    """A YAML mapping of keys to a value or a list of values."""
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
    out: dict[str, list[Any]] = {}
    for k, v in data.items():
        if not isinstance(k, str):
            raise UserError(f"{p}: key {k!r} must be a string")
        values = list(v) if isinstance(v, list) else [v]
        if not values:
            raise UserError(f"{p}: {k} has an empty list of values")
        out[k] = values
    return out


def combine(*sweeps: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the keys' values (one variant when there are no keys)."""
    keys: dict[str, list[Any]] = {}
    for s in sweeps:
        for k, v in s.items():
            if k in keys:
                raise UserError(f"{k} is swept both on the command line and in the sweep file; "
                                "keep it in one place")
            keys[k] = v
    names = list(keys)
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(keys[k] for k in names))]


def default_prefix(program: Sequence[str]) -> str:
    """A sweep name from the command: the script's name (``train`` for ``python
    train.py``), the module's for ``python -m pkg.train``, else the program's."""
    for i, tok in enumerate(program):
        if tok == "-m" and i + 1 < len(program):
            return program[i + 1].rsplit(".", 1)[-1]
        if tok.endswith(".py"):
            return Path(tok).stem
    return Path(program[0]).name
