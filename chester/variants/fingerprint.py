"""A digest of any picklable value that is the same in every process.

``repr`` and ``json.dumps(default=repr)`` are not: a ``set`` iterates in an order that
depends on the process's string hash seed, and an object without its own ``__repr__``
prints its memory address. :func:`digest` walks the value the way pickle does (through
``__reduce_ex__``) and hashes what it finds:

- ``None``, booleans, numbers, strings and bytes by type and exact value;
- lists and tuples in order; dicts and sets whatever their order (sorted by the digest of
  each item);
- classes and named functions by module and qualified name; lambdas and nested functions
  by their code, constants, defaults and closure;
- any other object by its class and the state pickle would store (``__getstate__``,
  ``__dict__``, slots, or what its ``__reduce__`` returns).

Equal data gives equal digests across processes and hash seeds. A value pickle could not
store (an open file, a lock, a generator) raises :class:`UnstableValue`, naming the path
to the bad part.
"""

from __future__ import annotations

import copyreg
import struct
import types
from collections import OrderedDict
from typing import Any

from chester.digests import sha256
from chester.plugin.errors import UserError

_MAX_DEPTH = 100


class UnstableValue(UserError):
    """A value with no stable fingerprint (pickle could not store it either)."""


_LEN = struct.Struct("<Q").pack


def _h(tag: bytes, *parts: bytes) -> bytes:
    """One node of the canonical encoding: a tag, then each part with its length (so the
    encoding is unambiguous); a digest is the SHA-256 of the whole value's encoding."""
    body = b"".join([_LEN(len(p)) + p for p in parts])
    return tag + _LEN(len(body)) + body


def _leaf(tag: bytes, payload: bytes) -> bytes:
    """A scalar: its tag, its length, its bytes."""
    return tag + _LEN(len(payload)) + payload


def _node(tag: bytes, children: Any) -> bytes:
    """A container of encodings (each delimits itself): its tag, its length, the children."""
    body = b"".join(children)
    return tag + _LEN(len(body)) + body


_NONE = _leaf(b"N", b"")
_TRUE = _leaf(b"B", b"1")
_FALSE = _leaf(b"B", b"0")


class _Attr(str):
    """A step of the path to a bad value that is an attribute, not a key."""


def _former_names() -> dict[str, str]:
    from chester import _MOVED

    return {**{new: old for old, new in _MOVED.items()},
            "chester.target.tool": "chester.target",
            "chester.variants.generator": "chester.variants",
            "chester.launcher.launching": "chester.launcher"}


#: chester's modules by the names they had before they moved into subpackages: a value
#: holding chester's classes or functions (an AttrDict, a Command) keeps the digest it had,
#: so a launch made before the move is found again, and run names stay as they were
_FORMER = _former_names()


def _qualname(obj: Any) -> bytes:
    mod = getattr(obj, "__module__", None) or ""
    mod = _FORMER.get(mod, mod)
    qn = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or ""
    return f"{mod}:{qn}".encode("utf-8", "surrogatepass")


class _Walker:
    def __init__(self) -> None:
        self.path: list[int] = []  # ids of the containers being walked (cycle detection)
        self.where: list[Any] = []  # keys and indices on the way there (formatted on failure)

    def fail(self, value: Any, why: str) -> UnstableValue:
        where = "".join(w if isinstance(w, _Attr) else f"[{w!r}]"
                        for w in self.where if w is not _ROOT) or "the value"
        return UnstableValue(
            f"variant value at {where} ({type(value).__name__}) has no stable fingerprint: "
            f"{why} (pass a picklable value, or resume=False to skip the rerun check)")

    def d(self, value: Any, where: Any = None) -> bytes:
        t = type(value)
        if t is str:
            return _leaf(b"S", value.encode("utf-8", "surrogatepass"))
        if t is int:
            return _leaf(b"I", str(value).encode())
        if t is float:
            return _leaf(b"F", repr(value).encode())
        if value is None:
            return _NONE
        if t is bool:
            return _TRUE if value else _FALSE
        if t is complex:
            return _leaf(b"C", repr(value).encode())
        if t in (bytes, bytearray):
            return _leaf(b"Y" if t is bytes else b"y", bytes(value))
        if isinstance(value, (type, types.BuiltinFunctionType, types.ModuleType)):
            name = _FORMER.get(value.__name__, value.__name__) \
                if isinstance(value, types.ModuleType) else None
            return _h(b"G", name.encode() if name else _qualname(value))
        ident = id(value)
        if ident in self.path:  # a cycle: refer to the ancestor by how far up it is
            return _h(b"^", str(len(self.path) - self.path.index(ident)).encode())
        if len(self.path) > _MAX_DEPTH:
            raise self.fail(value, f"nested more than {_MAX_DEPTH} levels deep")
        self.path.append(ident)
        self.where.append(_ROOT if where is None else where)
        try:
            return self._container(value, t)
        finally:
            self.path.pop()
            self.where.pop()

    def _items(self, pairs: Any) -> list[bytes]:
        d = self.d
        out = []
        for k, v in pairs:
            t = type(v)  # the usual case inline: a string key and a scalar value
            if t is str:
                enc = _leaf(b"S", v.encode("utf-8", "surrogatepass"))
            elif t is int:
                enc = _leaf(b"I", str(v).encode())
            elif t is float:
                enc = _leaf(b"F", repr(v).encode())
            else:
                enc = d(v, k)
            out.append((_leaf(b"S", k.encode("utf-8", "surrogatepass")) if type(k) is str
                        else d(k, k)) + enc)
        out.sort()
        return out

    def _container(self, value: Any, t: type) -> bytes:
        if t is list or t is tuple:
            return _node(b"L" if t is list else b"T",
                         [self.d(v, i) for i, v in enumerate(value)])
        if t is dict or (isinstance(value, dict) and not isinstance(value, OrderedDict)
                         and t.__reduce_ex__ is dict.__reduce_ex__
                         and t.__reduce__ is dict.__reduce__):
            # dict and its plain subclasses (AttrDict...): equal whatever the key order
            items = _node(b"D", self._items(value.items()))
            return items if t is dict else _h(b"d", _qualname(t), items)
        if t is set or t is frozenset:
            return _node(b"E" if t is set else b"Z",
                         sorted([self.d(v, _Attr("{…}")) for v in value]))
        if isinstance(value, types.FunctionType):
            return self._function(value)
        if isinstance(value, types.CodeType):
            return self._code(value)
        if isinstance(value, types.MethodType):
            return _h(b"M", self.d(value.__self__, _Attr(".__self__")),
                      value.__func__.__name__.encode())
        return self._reduced(value, t)

    def _function(self, fn: types.FunctionType) -> bytes:
        qn = fn.__qualname__
        if "<lambda>" not in qn and "<locals>" not in qn and fn.__module__ != "__main__":
            return _h(b"G", _qualname(fn))
        cells = tuple(c.cell_contents if _cell_full(c) else _EMPTY for c in
                      (fn.__closure__ or ()))
        return _h(b"f", _qualname(fn), self._code(fn.__code__),
                  self.d(fn.__defaults__, _Attr(".__defaults__")),
                  self.d(fn.__kwdefaults__, _Attr(".__kwdefaults__")),
                  self.d(cells, _Attr(".__closure__")))

    def _code(self, code: types.CodeType) -> bytes:
        consts = tuple(self._code(c) if isinstance(c, types.CodeType) else c
                       for c in code.co_consts)
        return _h(b"c", code.co_code, self.d(consts, _Attr(".co_consts")),
                  "\0".join(code.co_names).encode(), "\0".join(code.co_varnames).encode())

    def _reduced(self, value: Any, t: type) -> bytes:
        try:
            rv = value.__reduce_ex__(4)
        except Exception as exc:  # pickle would fail the same way
            raise self.fail(value, f"{type(exc).__name__}: {exc}") from None
        if isinstance(rv, str):  # a global (an enum member's module-level name, a singleton)
            return _h(b"G", _qualname(t), rv.encode())
        if not isinstance(rv, tuple) or len(rv) < 2:
            raise self.fail(value, "__reduce_ex__ returned something pickle rejects")
        func, args, *rest = rv + (None,) * (6 - len(rv))
        state, listitems, dictitems = rest[0], rest[1], rest[2]
        if func is getattr(copyreg, "__newobj__", None) \
                or func is getattr(copyreg, "__newobj_ex__", None):
            head = _h(b"n", self.d(args, _Attr(".__reduce__")))
        else:
            head = _h(b"r", self.d(func, _Attr(".__reduce__")), self.d(args, _Attr(".__reduce__")))
        parts = [head, self.d(state, _Attr(".__getstate__()"))]
        if listitems is not None:
            parts.append(_h(b"L", *(self.d(v, i) for i, v in enumerate(listitems))))
        if dictitems is not None:
            items = list(dictitems)
            if isinstance(value, OrderedDict):
                parts.append(_h(b"O", *(_h(b"P", self.d(k, k), self.d(v, k))
                                         for k, v in items)))
            else:
                parts.append(_h(b"D", *self._items(items)))
        return _h(b"R", _qualname(t), *parts)


_ROOT = object()


class _Empty:
    pass


_EMPTY = _Empty


def _cell_full(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def digest(value: Any) -> bytes:
    """The stable 32-byte digest of ``value`` (see the module docstring)."""
    walker = _Walker()
    try:
        return sha256(walker.d(value)).digest()
    except RecursionError:
        raise walker.fail(value, "nested too deeply") from None


def hexdigest(value: Any) -> str:
    return digest(value).hex()
