"""What a launch accepts, refuses, and how it recognises the same sweep again: fingerprints,
names, folders and arguments, all checked before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chester.errors import UserError
from chester.launcher import launch
from chester.store import Store
from chester.testing import ConformanceEnv


def _noop(variant, log_dir, exp_name):
    return None


class Cfg:
    """An object with the default repr (its memory address)."""

    def __init__(self, lr, tags):
        self.lr = lr
        self.tags = tags


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


@pytest.fixture
def env(local_env):
    return local_env


def _nothing_written(env):
    """No sweep in the store and no run folder on disk."""
    if env.config.store_path.exists():
        assert Store(env.config.store_path).sweeps() == []
    data = env.project / "data"
    assert not data.exists() or not any(p.is_dir() for p in data.rglob("*") if
                                        p.parent.name not in ("data", "train")), \
        list(data.rglob("*"))


# -- item 1: a fingerprint that is the same in every process ---------------------------------
FP_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from test_launch_input import Cfg, Slotted
    from chester.fingerprint import hexdigest
    from collections import OrderedDict, defaultdict
    value = {"tags": {"a", "b", "c", "d", "e"}, "frozen": frozenset({"x", "y", "z"}),
             "cfg": Cfg(0.1, {"p", "q"}), "slot": Slotted({"k": {"m", "n"}}, (1, 2.5)),
             "nested": {"z": 1, "a": [1, {"y", "x"}]}, "od": OrderedDict(b=1, a=2),
             "dd": defaultdict(list, {"q": [1], "p": [2]}), "fn": lambda x, k=3: x * k,
             "bytes": b"\\x00\\xff", "big": 2 ** 100, "nan": float("nan")}
    if sys.argv[2] == "reversed":  # the same data, dicts filled in the other order
        value = dict(reversed(list(value.items())))
        value["nested"] = {"a": [1, {"x", "y"}], "z": 1}
    print(hexdigest(value))
""")


def test_fingerprint_is_the_same_in_every_process_whatever_the_order(tmp_path):
    (tmp_path / "fp.py").write_text(FP_SCRIPT)
    here = str(Path(__file__).parent)
    out = set()
    for seed, order in [("1", "as-is"), ("2", "reversed"), ("3", "as-is"), ("random", "reversed")]:
        r = subprocess.run([sys.executable, str(tmp_path / "fp.py"), here, order],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        out.add(r.stdout.strip())
    assert len(out) == 1, out


def test_fingerprint_tells_different_values_apart_and_refuses_what_pickle_cannot_store():
    from chester.fingerprint import UnstableValue, hexdigest

    assert hexdigest({"a": 1}) != hexdigest({"a": 1.0}) != hexdigest({"a": True})
    assert hexdigest({"s": {"a", "b"}}) != hexdigest({"s": {"a", "c"}})
    assert hexdigest(Cfg(1, {"x"})) == hexdigest(Cfg(1, {"x"}))
    assert hexdigest(Cfg(1, {"x"})) != hexdigest(Cfg(2, {"x"}))
    assert hexdigest([1, [2]]) != hexdigest([[1], 2]) != hexdigest((1, [2]))
    loop: list = [1]
    loop.append(loop)
    assert hexdigest(loop) == hexdigest(loop)
    with open(__file__) as f, pytest.raises(UnstableValue) as ei:
        hexdigest({"handle": [f]})
    assert "['handle'][0]" in str(ei.value) and "\n" not in str(ei.value)


RELAUNCH = textwrap.dedent("""
    import os, sys, chester

    class Cfg:
        def __init__(self, lr):
            self.lr = lr

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "ran.txt"), "a") as f:
            f.write(repr(sorted(variant["tags"])) + "\\n")

    sweep = chester.launch(train, [{"tags": {"a", "b", "c", "d"}, "cfg": Cfg(lr), "lr": lr}
                                   for lr in (0.1, 0.2)], exp_prefix="again")
    sweep.wait(timeout=60, poll_interval=0.2, progress=False)
    print("\\n".join(r.name for r in sweep.runs))
""")


def test_running_a_launch_with_sets_and_objects_again_reattaches(env):
    (env.project / "again.py").write_text(RELAUNCH)
    names = []
    for seed in ("1", "2", "3"):
        r = subprocess.run([sys.executable, "again.py"], cwd=env.project, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        names.append(r.stdout.split())
    assert names[0] == names[1] == names[2] and len(names[0]) == 2
    assert not any("0x" in n for n in names[0]), names[0]
    store = Store(env.config.store_path)
    assert len(store.sweeps("again")) == 1
    for run in store.runs():
        assert (Path(run.local_dir) / "ran.txt").read_text().count("\n") == 1


def test_run_names_never_hold_a_memory_address(env):
    sweep = launch(_noop, [{"cfg": Cfg(lr, set())} for lr in (1, 2)], exp_prefix="names",
                   config=env.config, dry_run=True)
    names = [r.name for r in sweep.runs]
    assert len(set(names)) == 2 and not any("0x" in n or " at " in n for n in names), names


# -- item 2: one folder per run, never a folder already there --------------------------------
@pytest.mark.parametrize("names", [["same", "same"], ["a b", "a-b"], ["Run", "run"],
                                   ["x/y", "x-y"]])
def test_names_that_become_one_folder_are_refused_before_anything_is_written(env, names):
    with pytest.raises(UserError) as ei:
        launch(_noop, [{"a": 1}, {"a": 2}], exp_prefix="dup", exp_names=names,
               config=env.config)
    assert "share the folder" in str(ei.value)
    _nothing_written(env)


def test_two_run_dirs_on_one_folder_are_refused(env):
    with pytest.raises(UserError):
        launch(_noop, [{"a": 1}, {"a": 2}], exp_prefix="dup", config=env.config,
               run_dirs=["out/r", "out/./r"])
    _nothing_written(env)
    launch(_noop, [{"a": 1}], exp_prefix="one", config=env.config, run_dirs=["out/r"])
    with pytest.raises(UserError, match="belongs to the earlier run"):
        launch(_noop, [{"a": 1}], exp_prefix="two", config=env.config,
               run_dirs=["out/x/../r"], dry_run=True)


def test_a_run_folder_on_disk_is_never_reused(env):
    taken = env.project / "data" / "train" / "reuse" / "mine"
    taken.mkdir(parents=True)
    (taken / "precious.txt").write_text("keep")
    with pytest.raises(UserError) as ei:
        launch(_noop, [{"a": 1}], exp_prefix="reuse", exp_names=["mine"], config=env.config)
    assert "already exists" in str(ei.value)
    assert Store(env.config.store_path).sweeps() == []
    # a new launch under other names (or auto names) goes ahead and leaves it alone
    s = launch(_noop, [{"a": 1}], exp_prefix="reuse", exp_names=["other"], config=env.config)
    s.wait(timeout=60, poll_interval=0.2, progress=False)
    assert (taken / "precious.txt").read_text() == "keep"
    # the same names again, not the same sweep (resume=False): the folder is the first run's
    with pytest.raises(UserError) as ei:
        launch(_noop, [{"a": 1}], exp_prefix="reuse", exp_names=["other"], config=env.config,
               resume=False)
    assert "belongs to the earlier run 'other'" in str(ei.value)
    assert len(Store(env.config.store_path).sweeps()) == 1


# -- item 6: names the layout and the queue can carry ----------------------------------------
@pytest.mark.parametrize("kw, word", [
    ({"exp_prefix": "two\nlines"}, "exp_prefix"),
    ({"exp_prefix": "tab\there"}, "exp_prefix"),
    ({"exp_prefix": ".."}, "exp_prefix"),
    ({"exp_prefix": "a/b"}, "exp_prefix"),
    ({"exp_prefix": ""}, "exp_prefix"),
    ({"exp_prefix": "x" * 300}, "exp_prefix"),
    ({"sub_dir": "../../x"}, "sub_dir"),
    ({"sub_dir": "a/../../b"}, "sub_dir"),
    ({"sub_dir": "/etc"}, "sub_dir"),
    ({"sub_dir": "ok\nno"}, "sub_dir"),
    ({"exp_names": ["fine", "new\nline"]}, "exp_name"),
    ({"log_dir": "logs\nhere"}, "log_dir"),
    ({"env": {"A=B": "x"}}, "env"),
    ({"env": {"A": 1}}, "env"),
    ({"env": {"A": "\ud800"}}, "env"),
    ({"exp_prefix": "lone\ud800"}, "exp_prefix"),
    ({"sub_dir": "x/\ud800"}, "sub_dir"),
    ({"resources": [{"gpus": 1}]}, "resources"),
    ({"resources": 5}, "resources"),
    ({"resume": "sometimes"}, "resume"),
    ({"order": "random"}, "order"),
])
def test_bad_arguments_are_one_line_and_leave_nothing_behind(env, kw, word):
    kw.setdefault("exp_prefix", "bad")
    with pytest.raises(UserError) as ei:
        launch(_noop, [{"a": 1}, {"a": 2}], config=env.config, **kw)
    msg = str(ei.value)
    assert word in msg and "\n" not in msg, msg
    _nothing_written(env)
    assert not Path("/x").exists() and not (env.project / "x").exists()


@pytest.mark.parametrize("value", [0, -5])
def test_max_parallel_below_one_is_refused(tmp_path, value):
    env = ConformanceEnv.create(tmp_path, backend="local",
                                config={"backends": {"local": {"type": "local",
                                                               "max_parallel": value}}})
    with pytest.raises(UserError) as ei:
        launch(_noop, [{"a": 1}], exp_prefix="mp", config=env.config)
    assert "max_parallel" in str(ei.value) and "at least 1" in str(ei.value)
    _nothing_written(env)


def test_a_value_without_a_fingerprint_is_refused_unless_resume_is_false(env):
    from chester.fingerprint import UnstableValue

    with open(__file__) as f:
        with pytest.raises(UnstableValue):
            launch(_noop, [{"f": f}], exp_prefix="unstable", config=env.config, dry_run=True)
        _nothing_written(env)


def test_variant_json_is_written_for_objects(env):
    s = launch(_noop, [{"cfg": Cfg(1, {"a"})}], exp_prefix="vj", config=env.config)
    s.wait(timeout=60, poll_interval=0.2, progress=False)
    vj = json.loads((Path(s.runs[0].log_dir) / "variant.json").read_text())
    assert vj["exp_name"] == s.runs[0].name


def test_a_lone_surrogate_in_a_value_reaches_the_function(env):
    s = launch(_write_variant, [{"x": "a\ud800b", "k\udcff": ["\udfff"]}],
               exp_prefix="sur", config=env.config)
    assert s.wait(timeout=60, poll_interval=0.2, progress=False) == {s.runs[0].name: "succeeded"}
    import pickle

    got = pickle.loads((Path(s.runs[0].log_dir) / "got.pkl").read_bytes())
    assert got == {"x": "a\ud800b", "k\udcff": ["\udfff"]}
    assert json.loads((Path(s.runs[0].log_dir) / "variant.json").read_text())["x"] == "a\ud800b"


def _write_variant(variant, log_dir, exp_name):
    import pickle

    with open(os.path.join(log_dir, "got.pkl"), "wb") as f:
        pickle.dump(dict(variant), f)


class _PickyBackend:
    """A backend that refuses its resources when it prepares (as a scheduler backend may)."""

    @staticmethod
    def _options():
        import attrs

        @attrs.frozen
        class PickyOptions:
            pass

        return PickyOptions

    from chester.plugins import hookimpl as _hookimpl

    @_hookimpl
    def chester_backends(self):
        from chester.types import BackendSpec, Capabilities

        return [BackendSpec(name="picky", summary="refuses GPUs at prepare",
                            options_cls=self._options(), capabilities=Capabilities())]

    @_hookimpl
    def chester_prepare(self, backend, runs, staging_dir):
        raise UserError("resources.gpus: this backend has no GPUs (drop `gpus`)")


def test_a_launch_that_fails_before_submitting_leaves_no_sweep_and_no_folder(tmp_path):
    from chester.dispatch import Dispatcher
    from chester.plugins import build_plugin_manager

    env = ConformanceEnv.create(tmp_path, backend="picky",
                                config={"backends": {"picky": {"type": "picky"}}})
    mgr = build_plugin_manager()
    mgr.register(_PickyBackend(), name="picky-plugin")
    with pytest.raises(UserError, match="no GPUs"):
        launch(_noop, [{"a": 1}, {"a": 2}], backend="picky", exp_prefix="orphan",
               config=env.config, dispatcher=Dispatcher(manager=mgr),
               resources={"gpus": 1})
    _nothing_written(env)
    assert not (env.project / "data" / "train" / "orphan").exists()
    assert Store(env.config.store_path).runs() == []


def test_a_dry_runs_staging_folder_goes_with_its_handle(env, tmp_path, monkeypatch):
    """A dry run keeps what it rendered readable (``sweep.prepared``) while the handle lives;
    the staging folder goes with the handle, and ``chester launch --dry-run`` leaves none."""
    import gc
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    sweep = launch(_noop, [{"a": 1}], exp_prefix="dryclean", config=env.config, dry_run=True)
    staged = Path(sweep.prepared.staging_dir)
    assert staged.parent == tmp and staged.is_dir()
    del sweep
    gc.collect()
    assert list(tmp.iterdir()) == []
    r = subprocess.run([sys.executable, "-m", "chester.cli", "launch", "--dry-run", "-p",
                        "drycli", "--", "python", "train.py", "a=1,2"], cwd=env.project,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TMPDIR": str(tmp),
                            "CHESTER_CONFIG_PATH": str(env.project / "chester.yaml")})
    assert r.returncode == 0 and "dry run" in r.stdout, r.stdout + r.stderr
    assert list(tmp.iterdir()) == []


def test_a_launch_pauses_the_cycle_collector_and_gives_it_back_as_it_was(env):
    """No collection runs inside a 1,000-run launch; after it (or after one that failed)
    the collector is as the caller had it, on or off."""
    import gc

    seen: list[str] = []

    def counting(phase, info):
        if phase == "start":
            seen.append("collection")

    variants = [{"i": i} for i in range(1000)]
    gc.collect()  # the count starts afresh: none is due as the call begins
    gc.callbacks.append(counting)
    try:
        sweep = launch(_noop, variants, backend="local", exp_prefix="gc", config=env.config,
                       dry_run=True)  # kept: freeing it cleans its folder (which may collect)
        assert seen == [] and gc.isenabled() and len(sweep.runs) == 1000
        with pytest.raises(UserError):
            launch(_noop, [{"i": 1}], backend="local", exp_prefix="gc", config=env.config,
                   resources=[{}, {}])  # two resource mappings for one variant
        assert gc.isenabled()
        gc.disable()
        try:
            launch(_noop, [{"i": 2}], backend="local", exp_prefix="gc2", config=env.config,
                   dry_run=True)
            assert not gc.isenabled()  # the caller's choice stays
        finally:
            gc.enable()
    finally:
        gc.callbacks.remove(counting)
