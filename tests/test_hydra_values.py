"""``args_style="hydra"`` writes each value so that Hydra's own override parser
(hydra-core's ``OverridesParser``, the oracle here) reads back exactly that value."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chester.command import Command, CommandError
from chester.hydra_grammar import hydra_value

from .helpers import same

pytest.importorskip("hydra")

from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.errors import HydraException  # noqa: E402

PARSER = OverridesParser.create()


def _hydra_holds(key: str) -> bool:
    """Hydra's grammar can write ``key`` as a dict key that reads back as this string."""
    from hydra._internal.grammar.utils import escape_special_characters

    try:
        got = PARSER.parse_override(f"x={{{escape_special_characters(key)}:1}}").value()
    except HydraException:
        return False
    return list(got) == [key]


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=16)
_NASTY = st.text(st.sampled_from(list("'\"\\,=[]{}():$ \t\n#ab1.-_+@/*?|~ü☃")), max_size=12)
_WORDS = st.sampled_from(["", "true", "False", "NULL", "nan", "-inf", "1e-3", "1_000", "0",
                          "1.", ".5", "${a}", "${oc.env:HOME,x}", "${a:${b}}", "a=b", "it's",
                          "a,b", "[1,2]", "x\\", "\\'", " lead", "trail ", "ünï", "-"])
_STRINGS = st.one_of(_TEXT, _NASTY, _WORDS)
_SCALARS = st.one_of(_STRINGS, st.integers(), st.floats(), st.booleans(), st.none())
_KEYS = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
                  .filter(_hydra_holds),
                  st.text(st.sampled_from(list("ab1_-/+.$%*@?|\\()[]{}:=, \t")), min_size=1,
                          max_size=6).filter(_hydra_holds),
                  st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=10)


def _nest(overrides_: list[str]) -> dict:
    """The config a list of ``key=value`` overrides sets, as Hydra's parser reads them."""
    out: dict = {}
    for ov in overrides_:
        o = PARSER.parse_override(ov)
        assert not o.is_sweep_override(), ov
        *parents, last = o.key_or_group.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = o.value()
    return out


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
@given(VALUES, st.text(st.characters(blacklist_categories=("Cs",),
                                     blacklist_characters="\x00"), min_size=1, max_size=30))
def test_hydra_style_values_round_trip_through_hydras_parser(value, log_dir):
    argv = Command(["app"], "hydra").build({"k": value, "++n.m": value}, log_dir, "run")
    *given, run_dir = argv[1:]
    got = _nest(given)
    assert same(got["k"], value), (value, given)
    assert same(got["n"]["m"], value), (value, given)
    assert run_dir.startswith("hydra.run.dir=")
    assert PARSER.parse_override(run_dir).value() == log_dir
    # one value, written whole, reads back too
    assert same(PARSER.parse_override(f"k={hydra_value(value)}").value(), value)


def test_hydra_style_regressions_that_split_or_broke_runs():
    c = Command(["app"], "hydra", run_args=False)
    argv = c.build({"xs": ["x,y", "z"], "s": "a,b", "q": "it's", "i": "${oc.env:HOME}",
                    "e": "", "t": "true", "f": "1e-3"}, "/l", "n")
    assert argv == ["app", "xs=['x,y',z]", "s='a,b'", "q=\"it's\"", "i=${oc.env:HOME}",
                    "e=''", "t='true'", "f='1e-3'"]
    assert _nest(argv[1:]) == {"xs": ["x,y", "z"], "s": "a,b", "q": "it's",
                               "i": "${oc.env:HOME}", "e": "", "t": "true", "f": "1e-3"}


def test_what_hydra_cannot_hold_is_refused():
    c = Command(["app"], "hydra", run_args=False)
    with pytest.raises(CommandError, match="the dict key 'ü' cannot be written"):
        c.build({"d": {1: {"ü": 1}}}, "/l", "n")
    with pytest.raises(CommandError, match="the dict key '1' cannot be written"):
        c.build({"d": {1: {"1": 1}}}, "/l", "n")
    with pytest.raises(CommandError, match="the variant key 'a b' is not a Hydra override key"):
        c.build({"a b": 1}, "/l", "n")
