"""The sweep model: ``VariantGenerator`` with the seed's API, minus its bugs."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from chester.target.attrdict import MARKERS, AttrDict


class VariantDict(AttrDict):
    """A variant that knows which keys are hidden; ``dump()`` leaves them out (and the
    first/last markers of :meth:`VariantGenerator.variants`)."""

    def __init__(self, d: dict, hidden_keys: Sequence[str]):
        super().__init__(d)
        object.__setattr__(self, "_hidden_keys", list(hidden_keys))

    def dump(self) -> dict:
        return {k: v for k, v in self.items() if k not in self._hidden_keys and k not in MARKERS}

    def __reduce__(self) -> Any:
        return (VariantDict, (dict(self), self._hidden_keys))


def variant(*args: Any, **kwargs: Any) -> Any:
    """Declare a sweep axis as a method of a ``VariantGenerator`` subclass.

    Works bare (``@variant``) and with options (``@variant(hide=True)``). The method's
    parameters (after ``self``) name the keys it depends on; it returns the list of values.
    """

    def _mark(fn: Callable) -> Callable:
        fn.__chester_variant__ = dict(kwargs)  # type: ignore[attr-defined]
        return fn

    if len(args) == 1 and not kwargs and callable(args[0]):
        return _mark(args[0])
    if args:
        raise TypeError("@variant takes only keyword options, such as hide=True")
    return _mark


class VariantGenerator:
    """A parameter sweep: the cartesian product of the values of every key.

    ``vg.add("lr", [0.1, 0.01])`` adds an axis; a callable whose parameters name other keys
    gives values that depend on them: ``vg.add("batch", lambda model: [32] if model == "big"
    else [64, 128])``. Order is deterministic: keys in dependency order (insertion order among
    free keys), the last key varying fastest.
    """

    def __init__(self) -> None:
        self._variants: list[tuple[str, Any, dict]] = []
        self._derivations: list[tuple[str, Callable[[AttrDict], Any]]] = []
        for name, member in inspect.getmembers(type(self)):
            cfg = getattr(member, "__chester_variant__", None)
            if cfg is not None and callable(member):
                bound = getattr(self, name)
                # an axis that depends on nothing is just its list of values
                vals = list(bound()) if not _param_names(bound) else bound
                self._variants.append((name, vals, dict(cfg)))
        # declaration order, as in the class body
        lines = {name: _source_line(getattr(type(self), name)) for name, _v, _c in self._variants}
        self._variants.sort(key=lambda t: lines[t[0]])

    # -- building -------------------------------------------------------------------------
    def add(self, key: str, vals: Any, **cfg: Any) -> VariantGenerator:
        """Add a key with a list of values, or a callable of other keys returning one."""
        if not isinstance(key, str) or not key:
            raise ValueError("variant keys must be non-empty strings")
        if any(k == key for k, _, _ in self._variants):
            raise ValueError(f"variant key {key!r} was already added; use update() to change it")
        unknown = set(cfg) - {"hide"}
        if unknown:
            raise TypeError(f"unknown option(s) for add(): {', '.join(sorted(unknown))}")
        if not callable(vals):
            vals = list(vals) if not isinstance(vals, (str, bytes)) else [vals]
        self._variants.append((key, vals, dict(cfg)))
        return self

    def update(self, key: str, vals: Any, **cfg: Any) -> VariantGenerator:
        """Replace a key's values (or add the key if it is new)."""
        for i, (k, _v, old_cfg) in enumerate(self._variants):
            if k == key:
                if not callable(vals):
                    vals = list(vals) if not isinstance(vals, (str, bytes)) else [vals]
                self._variants[i] = (key, vals, {**old_cfg, **cfg})
                return self
        return self.add(key, vals, **cfg)

    def derive(self, key: str, fn: Callable[[AttrDict], Any]) -> VariantGenerator:
        """A key computed from each whole variant: ``fn(variant)`` returns its one value
        (not a list), as upstream chester 2.0's ``derive``. Derivations apply in the order
        they were added, after the sweep is expanded, so one may read the keys of
        :meth:`add` and of earlier derivations. Derived keys are not sweep axes: they are
        never in :meth:`variations` (nor run names)."""
        if not isinstance(key, str) or not key:
            raise ValueError("variant keys must be non-empty strings")
        if not callable(fn):
            raise TypeError(f"derive({key!r}, fn): fn must be a function of the variant")
        self._derivations.append((key, fn))
        return self

    # -- reading --------------------------------------------------------------------------
    @property
    def _hidden_keys(self) -> list[str]:
        return [k for k, _v, cfg in self._variants if cfg.get("hide")]

    def keys(self) -> list[str]:
        return [k for k, _v, _c in self._variants]

    def variations(self) -> list[str]:
        """Keys that take more than one value: the ones that name a run."""
        return [k for k, v, cfg in self._variants
                if isinstance(v, list) and len(v) > 1 and not cfg.get("hide")]

    def _ordered(self) -> list[tuple[str, Any, list[str]]]:
        keys = {k for k, _v, _c in self._variants}
        deps: dict[str, list[str]] = {}
        for k, v, _c in self._variants:
            if callable(v):
                names = _param_names(v)
                missing = [n for n in names if n not in keys]
                if missing:
                    raise ValueError(f"variant {k!r} depends on unknown key(s): {', '.join(missing)}")
                deps[k] = names
            else:
                deps[k] = []
        done: list[str] = []
        remaining = [(k, v) for k, v, _c in self._variants]
        out: list[tuple[str, Any, list[str]]] = []
        while remaining:
            ready = [(k, v) for k, v in remaining if all(d in done for d in deps[k])]
            if not ready:
                cycle = "; ".join(f"{k} depends on {', '.join(deps[k])}" for k, _ in remaining)
                raise ValueError(f"variant keys depend on each other in a cycle: {cycle}")
            for k, v in ready:
                out.append((k, v, deps[k]))
                done.append(k)
            remaining = [(k, v) for k, v in remaining if k not in done]
        return out

    def ivariants(self) -> Iterator[AttrDict]:
        """Yield every variant in order (lazily)."""
        ordered = self._ordered()

        def rec(i: int, cur: dict) -> Iterator[dict]:
            if i == len(ordered):
                yield dict(cur)
                return
            key, vals, deps = ordered[i]
            values = vals(**{d: cur[d] for d in deps}) if callable(vals) else vals
            for val in values:
                cur[key] = val
                yield from rec(i + 1, cur)
            cur.pop(key, None)

        if not ordered:
            return
        for d in rec(0, {}):
            v = AttrDict(d)
            for key, fn in self._derivations:
                v[key] = fn(v)
            yield v

    def variants(self, randomized: bool = False, seed: int | None = None) -> list[AttrDict]:
        """All variants as a list of ``AttrDict``; ``randomized`` shuffles (optionally seeded).

        As in the earlier chester, the first variant carries ``chester_first_variant=True``
        and the last ``chester_last_variant=True`` (one variant carries both; set after
        shuffling). They mark a place in this list, not what a run is: chester keeps them
        out of fingerprints, run names, ``variant.json`` and a command's arguments.
        :meth:`ivariants` (and ``chester.launch(fn, vg)``) yield the variants without them.
        """
        out = list(self.ivariants())
        if randomized:
            random.Random(seed).shuffle(out)
        if out:
            out[0][MARKERS[0]] = True
            out[-1][MARKERS[1]] = True
        return out

    @property
    def size(self) -> int:
        """How many variants there are (counted without materialising them when possible)."""
        if all(not callable(v) for _k, v, _c in self._variants):
            n = 1
            for _k, v, _c in self._variants:
                n *= len(v)
            return n if self._variants else 0
        return sum(1 for _ in self.ivariants())

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[AttrDict]:
        return self.ivariants()

    def __getitem__(self, key: str) -> Any:
        """The values declared for ``key`` (a list or a callable)."""
        for k, v, _c in self._variants:
            if k == key:
                return v
        raise KeyError(key)

    def variant_dict(self, v: dict) -> VariantDict:
        return VariantDict(v, self._hidden_keys)

    def to_name_suffix(self, v: dict) -> str:
        hidden = set(self._hidden_keys)
        return "_".join(f"{k}_{v[k]}" for k in v if k not in hidden)


def _param_names(fn: Callable) -> list[str]:
    sig = inspect.signature(fn)
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _source_line(fn: Any) -> int:
    try:
        return inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return 0


def expand(variants: Any) -> list[dict]:
    """Turn a VariantGenerator, a list of dicts, or one dict into a list of plain dicts.

    A generator gives its variants without the markers of :meth:`VariantGenerator.variants`;
    a list is taken as it is (markers included: the function gets exactly what was given)."""
    if isinstance(variants, VariantGenerator):
        return [dict(v) for v in variants.ivariants()]
    if isinstance(variants, dict):
        return [dict(variants)]
    return [dict(v) for v in variants]


__all__ = ["AttrDict", "VariantDict", "VariantGenerator", "expand", "variant"]
