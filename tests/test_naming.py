"""Remote paths map from local ones as in the seed: the project root is replaced."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from chester.naming import map_remote, remote_mapper


def test_run_folders_map_under_the_remote_root(tmp_path):
    project = tmp_path / "proj"
    (project / "data" / "train" / "exp").mkdir(parents=True)
    m = remote_mapper(project, "/scratch/me/proj/")
    assert m(project / "data" / "train" / "exp" / "1_a") == "/scratch/me/proj/data/train/exp/1_a"
    assert m(project) == "/scratch/me/proj/"
    assert m(tmp_path / "elsewhere" / "r") == str(tmp_path / "elsewhere" / "r")
    assert map_remote(project / "x", project, "/r") == "/r/x"


def test_symlinks_are_followed_like_the_seed(tmp_path):
    project = tmp_path / "proj"
    (project / "real").mkdir(parents=True)
    os.symlink(project / "real", project / "logs")  # a link inside the project
    os.symlink(project, tmp_path / "alias")  # the project reached through a link
    m = remote_mapper(tmp_path / "alias", "/r")
    assert m(project / "logs" / "1_a") == "/r/real/1_a"
    (project / "real" / "2_b").mkdir()
    os.symlink(project / "real" / "2_b", project / "real" / "3_c")  # the run folder is a link
    assert m(project / "real" / "3_c") == "/r/real/2_b"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["/", ".", "a", "b", "é", " ", ".."]), max_size=12).map("".join))
def test_last_component_is_a_posix_paths_name(path):
    from pathlib import PurePosixPath

    from chester.naming import last_component

    assert last_component(path) == PurePosixPath(path).name
