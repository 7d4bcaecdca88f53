"""``chester launch`` reads its sweeps with Hydra's override grammar, as hydra-core's own
parser (``OverridesParser``, the oracle here) reads them, and each run's program receives
its element as typed or written for Hydra."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chester import overrides
from chester.command import Command
from chester.errors import UserError

from .helpers import same

pytest.importorskip("hydra")

from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.core.override_parser.types import QuotedString  # noqa: E402
from hydra.errors import HydraException  # noqa: E402

PARSER = OverridesParser.create()


def _plain(v):
    if isinstance(v, QuotedString):
        return v.text
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    return v


def hydra_reads(override: str) -> list:
    """The values Hydra's parser gives for one override: its sweep's elements, or the one
    value."""
    o = PARSER.parse_override(override)
    if o.is_sweep_override():
        return [_plain(v) for v in o.sweep_iterator()]
    return [o.value()]


# -- chester launch: reading the command line ------------------------------------------

@pytest.mark.parametrize("token, values, typed", [
    (r"+x=a\,b", ["a,b"], [r"a\,b"]),
    ("x='a,b'", ["a,b"], ["'a,b'"]),
    ("x='a,b',c", ["a,b", "c"], ["'a,b'", "c"]),
    ("x=\"it's\"", ["it's"], ["\"it's\""]),
    ("x=range(1,3)", [1, 2], [None, None]),
    ("x=range(0,1,0.25)", [0.0, 0.25, 0.5, 0.75], [None] * 4),
    ("x=choice(a,'b c')", ["a", "b c"], [None, None]),
    ("x=sort(3,1,2)", [1, 2, 3], [None] * 3),
    ("x=1e-3,1e-4", [1e-3, 1e-4], ["1e-3", "1e-4"]),
    ("x=1,true,null,abc,1_000", [1, True, None, "abc", 1000], ["1", "true", "null", "abc",
                                                               "1_000"]),
    ("x=[1,2],{a:1}", [[1, 2], {"a": 1}], ["[1,2]", "{a:1}"]),
    ("x=[1,'a,b']", [[1, "a,b"]], ["[1,'a,b']"]),
    ("x=str(1),2", ["1", 2], ["str(1)", "2"]),
    ("x=a b, c", ["a b", "c"], ["a b", "c"]),
    ("x=", [""], [""]),
    ("x= 1", [1], ["1"]),
    ("x=${oc.env:HOME}", ["${oc.env:HOME}"], ["${oc.env:HOME}"]),
    ("~db=mysql,pg", ["mysql", "pg"], ["mysql", "pg"]),
    ("db@backup=a", ["a"], ["a"]),
    ("hydra/launcher=basic", ["basic"], ["basic"]),
])
def test_the_command_line_is_read_as_hydra_reads_it(token, values, typed):
    (_, keys) = overrides.parse_command(["python", "app.py", token])
    (sw,) = keys
    assert sw.key == token.split("=", 1)[0]
    got = [e.value for e in sw.elements]
    assert same(got, values), got
    assert same(got, hydra_reads(token))  # the oracle agrees
    assert [e.typed for e in sw.elements] == typed
    one = len(values) == 1 and typed[0] is not None
    assert sw.given == (token.split("=", 1)[1] if one else None)


def test_tokens_that_are_not_overrides_are_the_program():
    program, keys = overrides.parse_command(
        ["python", "train.py", "--lr=1", "-m", "~db", "a b=1", "=x", "x:y=1", "lr=0.1"])
    assert program == ["python", "train.py", "--lr=1", "-m", "~db", "a b=1", "=x", "x:y=1"]
    assert [k.key for k in keys] == ["lr"]


@pytest.mark.parametrize("token, message", [
    ("msg=it's", r"\"msg=it's\" is not a Hydra override \(token recognition error.*"
                 r"put a value holding quotes"),
    ("x=1,,2", "is not a Hydra override"),
    ("x=[1,2", "is not a Hydra override"),
    ("x=foo(1)", "Unknown function 'foo'"),
    ("x=glob(*)", r"glob\(\) picks options of a config group"),
    ("x=interval(0,1)", r"interval\(\) is a continuous range"),
    ("x=tag(a,interval(0,1))", r"interval\(\) is a continuous range"),
    ("x=range(3,1)", "sweeps over no values"),
    ("x=range(1,4,0)", r"'x=range\(1,4,0\)' cannot be swept \(range\(\) arg 3 must not be zero"),
    ("x=range(0,1,0.0)", r"cannot be swept \(Invalid range values"),
    ("x=[choice(1,2)]", "a sweep inside a list"),
    ("x=choice(1,2),3", "a sweep inside a list, a dict or another sweep"),
])
def test_what_a_sweep_cannot_use_is_refused_in_one_line(token, message):
    with pytest.raises(UserError, match=message) as info:
        overrides.parse_command(["python", "app.py", token])
    assert "\n" not in str(info.value)


def test_keys_given_twice_and_empty_commands_are_refused():
    with pytest.raises(UserError, match="given twice"):
        overrides.parse_command(["python", "t.py", "lr=1", "lr=2"])
    with pytest.raises(UserError, match="needs a command"):
        overrides.parse_command([])
    with pytest.raises(UserError, match="swept both"):
        overrides.combine(overrides.parse_command(["p", "lr=1"])[1],
                          [overrides.Swept("lr", [overrides.Element(2, None)], None)])


SIMPLE = "abefnrtuilAEFINRTUL019_.+-/"


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.text(st.sampled_from(SIMPLE), max_size=8), min_size=1, max_size=4))
def test_simple_values_read_without_hydra_are_read_as_hydra_reads_them(parts):
    """Values of letters, digits, ``_ - + . /`` and commas are read without importing
    hydra-core; they must read exactly as hydra-core reads them (or be refused by it)."""
    text = ",".join(parts)
    try:
        expected = hydra_reads(f"x={text}")
    except HydraException:
        with pytest.raises(UserError):
            overrides.read_value("x", text)
        return
    got = overrides.read_value("x", text)
    assert same([e.value for e in got.elements], expected), (text, got)


KEY_CHARS = "ab_-$.0/1@+~Z: "


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(st.sampled_from(KEY_CHARS), min_size=1, max_size=9))
def test_a_token_is_an_override_exactly_when_hydra_reads_its_key(key):
    try:
        o = PARSER.parse_override(f"{key}=1")
        hydra_ok = o.get_key_element() == key and o.key_or_group != ""
    except HydraException:
        hydra_ok = False
    program, keys = overrides.parse_command(["p", f"{key}=1"])
    assert bool(keys) == hydra_ok, key


def test_sweep_files_read_strings_with_the_grammar_and_lists_as_values(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("seed: range(1,3)\nmsg: \"'a,b'\"\nlr: 1e-3,1e-4\nopt: [sgd, 'a,b', 1e-3]\n"
                 "depth: 3\nflag: null\n")
    got = {s.key: [e.value for e in s.elements] for s in overrides.load_sweep_file(f)}
    assert got == {"seed": [1, 2], "msg": ["a,b"], "lr": [1e-3, 1e-4],
                   "opt": ["sgd", "a,b", "1e-3"], "depth": [3], "flag": [None]}
    f.write_text("x: glob(*)\n")
    with pytest.raises(UserError, match=r"s.yaml: x: 'glob\(\*\)': glob\(\) picks"):
        overrides.load_sweep_file(f)
    f.write_text("a b: 1\n")
    with pytest.raises(UserError, match="'a b' is not a Hydra override key"):
        overrides.load_sweep_file(f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must map keys"):
        overrides.load_sweep_file(f)
    f.write_text("lr: []\n")
    with pytest.raises(UserError, match="empty list"):
        overrides.load_sweep_file(f)
    with pytest.raises(UserError, match="cannot read the sweep file"):
        overrides.load_sweep_file(tmp_path / "missing.yaml")


def test_each_run_receives_its_element_as_typed_or_written_for_hydra():
    program, keys = overrides.parse_command(
        ["python", "app.py", r"+x=a\,b", "lr=1e-3,0.5", "y=range(1,3)", "z='a,b',c",
         "w=choice([1,'a b'],{k:v})", "n=true"])
    variants = overrides.combine(keys)
    assert len(variants) == 2 * 2 * 2 * 2
    assert variants[0] == {"+x": "a,b", "lr": 1e-3, "y": 1, "z": "a,b", "w": [1, "a b"],
                           "n": True}
    hydra = Command(program, "hydra", run_args=False,
                    texts=overrides.texts(keys, style="hydra"))
    argparse = Command(program, "argparse", run_args=False,
                       texts=overrides.texts(keys, style="argparse"))
    v = {"+x": "a,b", "lr": 0.5, "y": 2, "z": "c", "w": {"k": "v"}, "n": True}
    argv = hydra.build(v, "/l", "n")
    assert argv == ["python", "app.py", r"+x=a\,b", "lr=0.5", "y=2", "z=c", "w={k:v}", "n=true"]
    for override, value in zip(argv[2:], v.values(), strict=True):
        assert same(hydra_reads(override), [value]), override
    assert hydra.build(variants[0], "/l", "n")[2:6] == [r"+x=a\,b", "lr=1e-3", "y=1", "z='a,b'"]
    assert argparse.build(variants[0], "/l", "n") == [
        "python", "app.py", "--+x", "a,b", "--lr", "1e-3", "--y", "1", "--z", "a,b",
        "--w", "[1,'a b']", "--n", "true"]


def test_command_texts_match_values_by_type():
    c = Command(["app"], "hydra", run_args=False,
                texts={"x": [(1, "01-as-typed"), (1.5, "1.50")], "d": []})
    assert c.build({"x": 1}, "/l", "n") == ["app", "x=01-as-typed"]
    assert c.build({"x": True}, "/l", "n") == ["app", "x=true"]
    assert c.build({"x": 1.0}, "/l", "n") == ["app", "x=1.0"]
    assert c.build({"x": 1.5}, "/l", "n") == ["app", "x=1.50"]
    # a key with texts is one override: a dict is not given key by key
    assert c.build({"d": {"a": 1}}, "/l", "n") == ["app", "d={a:1}"]
    assert Command(["app"], "hydra", run_args=False).build({"d": {"a": 1}}, "/l", "n") == \
        ["app", "d.a=1"]
