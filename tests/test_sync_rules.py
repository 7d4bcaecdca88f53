"""The project-file rules compiled once (:func:`chester.remote.sync.compile_rules`, what
the code digest and object-store snapshots walk with) decide every path as rsync's
semantics in :func:`chester.remote.sync.decide` do."""

from __future__ import annotations

import itertools

from chester.remote.sync import compile_rules, decide, rules, select_files

PATTERNS = ["data/", "/data", "/data/", "*.pyc", "*", "*.tar.gz", "ckpt?", "[abc]x", "[!a]y",
            "**/cache", "a/**/b", "/out*/", "src/*.py", "model.pt", "log*", "x/", "**x", "a**b",
            "/a/b", "?", "*/"]
PATHS = ["data", "sub/data", "data/x.py", "a.pyc", "dir.pyc", "m.tar.gz", "ckpt1", "ckpt12",
         "ax", "dx", "ay", "by", "z/cache", "cache", "a/q/r/b", "a/b", "out1", "x/out2",
         "src/t.py", "lib/src/t.py", "src/sub/t.py", "model.pt", "w/model.pt", "logs",
         "x", "q/x", "ab", "a_b", "a/c/b", "k", "", "café/ü.py"]


def test_compiled_rules_decide_as_the_rules_do():
    for include, exclude in itertools.product(
            [[], ["*.py"], ["data/x.py", "*/"], ["/a/b"]],
            [[p] for p in PATTERNS] + [PATTERNS[:5], PATTERNS[5:], ["*"]]):
        rule_list = rules(include, exclude)
        sent = compile_rules(rule_list)
        for rel, is_dir in itertools.product(PATHS, (False, True)):
            assert sent(rel, is_dir) == decide(rule_list, rel, is_dir), \
                (include, exclude, rel, is_dir)


def test_select_files_walks_with_the_compiled_rules(tmp_path):
    for rel in ("keep.py", "skip.pyc", "data/big.bin", "src/a.py", "src/data/b.py",
                ".git/HEAD", "__pycache__/x.pyc"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    got = [rel for rel, _ in select_files(tmp_path, [], ["/data/"])]
    assert got == ["keep.py", "src/a.py", "src/data/b.py"]
