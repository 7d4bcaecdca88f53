"""Hydra's override grammar, the part chester writes and checks itself.

The rules follow hydra-core's ``OverrideLexer.g4`` and ``OverrideParser.g4``: what an
override's key may be (:data:`HYDRA_KEY`), which single tokens Hydra reads as a number, a
boolean or null rather than a string, and how to write any value so that Hydra's parser
reads back exactly that value (:func:`hydra_value`). Reading a whole override (quotes,
escapes, functions such as ``range()``) is left to hydra-core's own parser
(:mod:`chester.overrides`); tests check these rules against it.

This module runs on every target (command runs write their overrides there): it imports
nothing outside the standard library.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from typing import Any


class GrammarError(ValueError):
    """A value that Hydra's override grammar cannot hold."""


_UINT = r"(?:0|[1-9](?:_?[0-9])*)"
_DIGITS = r"[0-9](?:_?[0-9])*"
_POINT = rf"(?:{_UINT}\.|(?:{_UINT})?\.{_DIGITS})"
_FLOAT = re.compile(
    rf"[+-]?(?:{_POINT}|(?:{_UINT}|{_POINT})[eE][+-]?{_DIGITS}|[Ii][Nn][Ff]|[Nn][Aa][Nn])")
_INT = re.compile(rf"[+-]?{_UINT}")
_BOOL = re.compile(r"[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]")
_NULL = re.compile(r"[Nn][Uu][Ll][Ll]")
#: strings Hydra reads unquoted as exactly themselves (names, paths); others are quoted
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_\-./]*")
#: one OmegaConf interpolation, ``${...}``: one token, which Hydra reads as that string
_INTERPOLATION = re.compile(r"\$\{[^}]+\}")
#: what a dict key can hold (no quotes there); the second set is written escaped
_DICT_KEY = re.compile(r"[A-Za-z0-9_\-/+.$%*@?|\\()\[\]{}:=, \t]+")
_KEY_ESCAPE = re.compile(r"([\\()\[\]{}:=, \t])")
_KEY_SPECIAL = r"[A-Za-z_$][A-Za-z0-9_$\-]*"
_PACKAGE = rf"(?:(?:{_KEY_SPECIAL}|{_UINT})(?:\.(?:{_KEY_SPECIAL}|{_UINT}))+|{_KEY_SPECIAL})"
_ID = r"[A-Za-z_][A-Za-z0-9_\-]*"

#: an override's key as Hydra reads it: ``lr``, ``model.depth``, ``+x``, ``++x``, ``~db``,
#: ``hydra/launcher``, ``db@backup`` (``fullmatch``)
HYDRA_KEY = re.compile(rf"(?:~|\+\+?)?(?:{_PACKAGE}|{_ID}(?:/{_ID})+)(?:@{_PACKAGE}?)?")
#: one part of a dotted key (``model`` in ``model.depth``) (``fullmatch``)
KEY_PART = re.compile(_KEY_SPECIAL)


def token_value(text: str) -> Any:
    """What Hydra reads for ``text`` when ``text`` is one token that is a number, a boolean
    or null (``1_000`` → 1000, ``1e-3`` → 0.001, ``TRUE`` → True, ``null`` → None); any other
    text is returned as it is. Exact for text that holds no quote, backslash, bracket,
    parenthesis, brace, colon, ``=``, comma or whitespace."""
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INT.fullmatch(text):
        return int(text)
    if _BOOL.fullmatch(text):
        return text.lower() == "true"
    if _NULL.fullmatch(text):
        return None
    return text


def typed_token(text: str) -> bool:
    """Hydra reads ``text``, alone, as a number, a boolean or null (not as a string)."""
    return token_value(text) is not text


def _quote(text: str) -> str:
    """``text`` in quotes as Hydra reads quoted values: the quote character is escaped with a
    backslash, and so are backslashes just before a quote or the closing quote (Hydra's
    ``QuotedString.with_quotes``); other backslashes stay as they are."""
    q = "'" if "'" not in text or '"' in text else '"'
    body = re.sub(rf"(\\*)({q}|\Z)",
                  lambda m: m.group(1) * 2 + ("\\" + q if m.group(2) else ""), text)
    return q + body + q


def _dict_key(key: Any) -> str:
    if key is None or isinstance(key, (bool, numbers.Real)):
        return hydra_value(key)
    if isinstance(key, str) and _DICT_KEY.fullmatch(key) and not typed_token(key):
        return _KEY_ESCAPE.sub(r"\\\1", key)
    raise GrammarError(f"the dict key {key!r} cannot be written in Hydra's override grammar "
                       "(a dict key is a number, true/false, null, or a string of letters, "
                       "digits and _-/+.$%*@?|\\()[]{}:=, and spaces that does not read as a "
                       "number); rename the key or pass the dict differently")


def hydra_value(value: Any) -> str:
    """``value`` as the right side of a Hydra override, written so that Hydra's override
    parser reads back exactly ``value``: strings bare when they read as themselves
    (``resnet``, ``data/x.csv``), else in quotes (``'a,b'``, ``"it's"``, ``'1e-3'``,
    ``'true'``); one ``${...}`` interpolation as it is (OmegaConf resolves it in the app;
    inside other text, ``${`` is OmegaConf's too); ``true``/``false``; ``null``; numbers
    (floats as ``repr``, so they read back bit for bit); lists (and tuples) as ``[a,b]``;
    dicts as ``{k:v}``. Bytes are their UTF-8 text; other values are written as their
    ``str``, a string. Raises :class:`GrammarError` for a dict key the grammar cannot hold."""
    if type(value) is str:  # the common case first: only str itself is none of the below
        text = value
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif value is None:
        return "null"
    elif isinstance(value, numbers.Integral):
        return repr(int(value))
    elif isinstance(value, numbers.Real):
        return repr(float(value))
    elif isinstance(value, Mapping):
        return "{" + ",".join(f"{_dict_key(k)}:{hydra_value(v)}"
                              for k, v in value.items()) + "}"
    elif isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "surrogateescape")
    else:
        text = str(value)
    if (_PLAIN.fullmatch(text) and not typed_token(text)) or _INTERPOLATION.fullmatch(text):
        return text
    return _quote(text)
