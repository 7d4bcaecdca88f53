"""A worker reads its own entry of a sweep spec without parsing the whole index; what it
reads is what the parsed index says, whatever the run folders' names."""

from __future__ import annotations

import json
import os

import pytest

from chester.target import sweepspec

#: names that the lookup in the index's text must not confuse: prefixes of each other,
#: names holding what JSON escapes, the text the index puts around a key, non-ASCII
NAMES = ["/r/1", "/r/10", "/r/1/0", "/r/a,b", '/r/q"uote', "/r/back\\slash", '/r/x":[1,2,3,4],"',
         "/r/ü né", "/r/tab\there", "/r/{brace}", "/r/1_run", "relative/run", "/r/x:[9]"]


def _spec(tmp_path, names):
    entries = [(name, json.dumps({"n": i}).encode(), json.dumps({"token": f"t{i}"}).encode(),
                b"p" * (i + 1)) for i, name in enumerate(names)]
    path = tmp_path / "runs.spec"
    sweepspec.write(path, b"FN", entries)
    return path, {os.path.normpath(e[0]): (b"FN", *e[1:]) for e in entries}


def _fresh():
    """As in a new worker process: no spec read before."""
    sweepspec._LAST_INDEX[:] = [None, None]


@pytest.mark.parametrize("name", NAMES)
def test_a_single_read_gets_the_runs_own_entry(tmp_path, name):
    path, want = _spec(tmp_path, NAMES)
    _fresh()
    assert sweepspec.read_entry(path, name) == want[os.path.normpath(name)]


def test_every_entry_read_in_one_process_matches_the_index(tmp_path):
    """A queue runner reads many entries of one spec: the first found in the text, the
    others from the index parsed once."""
    path, want = _spec(tmp_path, NAMES)
    _fresh()
    for name in reversed(NAMES):
        assert sweepspec.read_entry(path, name) == want[os.path.normpath(name)]


def test_a_plain_run_folder_is_found_without_parsing_the_index(tmp_path, monkeypatch):
    names = [f"/data/train/exp/{i}_exp_i_{i}" for i in range(1000)]
    path, want = _spec(tmp_path, names)

    def no_parse(_text):
        raise AssertionError("the index was parsed")

    _fresh()
    monkeypatch.setattr(sweepspec.json, "loads", no_parse)
    for name in (names[0], names[1], names[999], names[500]):
        _fresh()
        assert sweepspec.read_entry(path, name) == want[name]


@pytest.mark.parametrize("name", ["/r/2", "/r/", "/r", "/r/1/", "r/1", "/r/x"])
def test_a_folder_the_spec_does_not_hold_is_said(tmp_path, name):
    path, want = _spec(tmp_path, NAMES)
    _fresh()
    key = os.path.normpath(name)
    if key in want:  # "/r/1/" is "/r/1"
        assert sweepspec.read_entry(path, name) == want[key]
        return
    with pytest.raises(sweepspec.SpecError, match="holds no run in"):
        sweepspec.read_entry(path, name)


def test_an_empty_spec_holds_no_run(tmp_path):
    path = tmp_path / "runs.spec"
    sweepspec.write(path, b"FN", [])
    _fresh()
    with pytest.raises(sweepspec.SpecError, match="holds no run in"):
        sweepspec.read_entry(path, "/r/1")


def test_a_spec_replaced_in_place_is_read_anew(tmp_path):
    """A resumed launch writes the spec again: the next read takes the new file's entry."""
    path, _ = _spec(tmp_path, ["/r/1", "/r/2"])
    _fresh()
    sweepspec.read_entry(path, "/r/1")
    sweepspec.read_entry(path, "/r/2")  # the index is now parsed and kept
    sweepspec.write(path, b"NEW", [("/r/1", b"{}", b'{"token":"t9"}', b"v")])
    assert sweepspec.read_entry(path, "/r/1") == (b"NEW", b"{}", b'{"token":"t9"}', b"v")
    with pytest.raises(sweepspec.SpecError, match="holds no run in"):
        sweepspec.read_entry(path, "/r/2")
