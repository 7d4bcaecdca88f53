"""chester's modules moved into subpackages (chester.target, .variants, .plugin, .launcher,
.compat, .remote); what was written for the flat layout keeps working: old import paths,
`python -m` of the old names, pickles and digests made by earlier versions."""

import importlib
import json
import pickle
import subprocess
import sys

import pytest

import chester

OLD_TO_NEW = sorted(chester._MOVED.items())


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("old,new", OLD_TO_NEW)
def test_an_old_module_name_is_the_new_module(old, new):
    """Imported first by its old name or by its new one, in a fresh process, a moved module
    is one module object under both names, known by its new name."""
    code = f"""
import importlib, json, sys
first, second = sys.argv[1:] if len(sys.argv) > 1 else ({old!r}, {new!r})
a = importlib.import_module(first)
b = importlib.import_module(second)
print(json.dumps([a is b, sys.modules[{old!r}] is sys.modules[{new!r}], a.__name__,
                  a.__spec__.name]))
"""
    for order in ([old, new], [new, old]):
        r = subprocess.run([sys.executable, "-c", code, *order], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [True, True, new, new]
    assert importlib.import_module(old) is importlib.import_module(new)


def test_from_imports_of_old_names_give_the_same_objects():
    from chester import types, worker
    from chester.command import Command
    from chester.plugin.records import State as NewState
    from chester.target.command import Command as NewCommand
    from chester.types import State

    assert State is NewState and Command is NewCommand
    assert types is sys.modules["chester.plugin.records"]
    assert worker is sys.modules["chester.target.worker"]
    # as attributes of chester too, imported or not
    assert chester.sweeps is sys.modules["chester.launcher.sweeps"]
    assert chester.testing is sys.modules["chester.plugin.testing"]


def test_the_packages_keep_the_old_modules_public_names():
    """chester.target, chester.variants and chester.launcher were modules: as packages they
    give the same names (chester.target's tool functions and chester.launcher's launch code
    on first use only)."""
    from chester.launcher import launch, relaunch, write_run_folder, write_sweep_spec
    from chester.launcher.launching import launch as real_launch
    from chester.plugin.records import RunStatus
    from chester.target import ORPHAN_GRACE_S, cancel_many, follow, probe, to_status
    from chester.target.tool import probe as real_probe
    from chester.variants import AttrDict, VariantDict, VariantGenerator, expand, variant

    assert launch is real_launch and probe is real_probe and ORPHAN_GRACE_S > 0
    assert callable(relaunch) and callable(write_run_folder) and callable(write_sweep_spec)
    assert callable(cancel_many) and callable(follow)
    assert to_status({"state": "running", "host": "h"}) == RunStatus(state="running", host="h")
    assert VariantGenerator is chester.VariantGenerator and variant is chester.variant
    assert AttrDict is chester.AttrDict and issubclass(VariantDict, AttrDict)
    assert expand({"a": 1}) == [{"a": 1}]
    with pytest.raises(AttributeError):
        chester.target.nothing_here  # noqa: B018


def test_importing_the_packages_loads_nothing_heavy():
    """`import chester` and the light subpackages stay lazy: no attrs, structlog, rich or
    pluggy, and chester.launcher.sweeps alone does not load the launch code."""
    r = _fresh("import sys, chester, chester.target, chester.launcher, chester.plugin, "
               "chester.compat\n"
               "print(sorted(m for m in ('attrs', 'structlog', 'rich', 'pluggy', "
               "'chester.target.tool', 'chester.launcher.launching') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    r = _fresh("import sys, chester.launcher.sweeps\n"
               "print('chester.launcher.launching' in sys.modules)")
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("module", ["chester.worker", "chester.runner", "chester.target",
                                    "chester.target.worker", "chester.target.runner",
                                    "chester.auto_pull", "chester.compat.auto_pull"])
def test_python_dash_m_runs_old_and_new_names(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:")


def test_python_dash_m_of_the_old_worker_name_runs_a_run(tmp_path):
    """`python -m chester.worker RUN_DIR` (what an earlier launcher's job scripts say) runs
    the run with the worker's code, and the run's chester.preempted() is that worker's."""
    import cloudpickle

    from chester.target import rundir as rd

    run_dir = tmp_path / "1_run"
    (run_dir / ".chester").mkdir(parents=True)
    rd.write_json_atomic(run_dir / rd.RUN_JSON, {"token": "t", "name": "1_run", "attempt": 1})

    def fn(variant, log_dir, exp_name):
        import sys as _s

        import chester as _c

        with open(log_dir + "/out.json", "w") as f:
            f.write(__import__("json").dumps({
                "main": _s.modules["__main__"] is _s.modules["chester.target.worker"]
                is _s.modules["chester.worker"], "preempted": _c.preempted(),
                "v": variant["v"]}))

    with open(run_dir / rd.PAYLOAD, "wb") as f:
        f.write(cloudpickle.dumps(fn))
        f.write(cloudpickle.dumps({"v": "x'$(y)"}))
    r = subprocess.run([sys.executable, "-m", "chester.worker", str(run_dir)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads((run_dir / "out.json").read_text()) == {
        "main": True, "preempted": False, "v": "x'$(y)"}


# Pickles made by chester 0.3.0 before the move (pickle protocol 4), as run payloads and
# anything else that stored them hold them.
OLD_COMMAND = (
    b"\x80\x04\x95\x83\x00\x00\x00\x00\x00\x00\x00\x8c\x0fchester.command\x94\x8c\x07Command"
    b"\x94\x93\x94)\x81\x94}\x94(\x8c\x04argv\x94]\x94(\x8c\x06python\x94\x8c\x08train.py\x94"
    b"\x8c\x03--x\x94e\x8c\nargs_style\x94\x8c\x05hydra\x94\x8c\x0bhydra_flags\x94}\x94\x8c"
    b"\x01v\x94\x88s\x8c\x08run_args\x94\x88ub.")
OLD_ATTRDICT = (
    b"\x80\x04\x95W\x00\x00\x00\x00\x00\x00\x00\x8c\x10chester.attrdict\x94\x8c\x08AttrDict"
    b"\x94\x93\x94}\x94(\x8c\x02lr\x94G?\xb9\x99\x99\x99\x99\x99\x9a\x8c\x06nested\x94h\x02}"
    b"\x94\x8c\x01a\x94]\x94(K\x01\x8c\x01x\x94es\x85\x94R\x94u\x85\x94R\x94.")
OLD_VARIANTDICT = (
    b"\x80\x04\x956\x00\x00\x00\x00\x00\x00\x00\x8c\x10chester.variants\x94\x8c\x0bVariantDict"
    b"\x94\x93\x94}\x94\x8c\x01a\x94K\x01s]\x94h\x04a\x86\x94R\x94.")


def test_pickles_of_earlier_versions_load_in_a_fresh_process():
    code = """
import pickle, sys
from chester.target.attrdict import AttrDict
from chester.target.command import Command
from chester.variants.generator import VariantDict
cmd, ad, vd = (pickle.loads(bytes.fromhex(h)) for h in sys.argv[1:])
assert type(cmd) is Command and cmd.argv == ["python", "train.py", "--x"], vars(cmd)
assert cmd.args_style == "hydra" and cmd.hydra_flags == {"v": True}
assert type(ad) is AttrDict and type(ad.nested) is AttrDict and ad.nested.a == [1, "x"]
assert type(vd) is VariantDict and vd.dump() == {} and vd.a == 1
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code, OLD_COMMAND.hex(), OLD_ATTRDICT.hex(),
                        OLD_VARIANTDICT.hex()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    # and what is pickled now names the new modules
    from chester.target.attrdict import AttrDict

    assert b"chester.target.attrdict" in pickle.dumps(AttrDict(a=1))


def test_digests_of_chester_objects_are_those_of_earlier_versions():
    """A launch is found again by a digest of its variants: values holding chester's own
    classes or functions digest as they did before the move (the digests below are chester
    0.3.0's, before it), so running a launch again after upgrading reattaches to it."""
    from chester.plugin.records import State
    from chester.target.attrdict import AttrDict
    from chester.target.command import Command
    from chester.target.testing_functions import fn_write_result
    from chester.variants import VariantDict, fingerprint

    assert fingerprint.hexdigest({"opt": AttrDict(lr=0.1)}) == \
        "1711e28b342804b7f78a337aedefc6c9e7e186bb093cf2a1e100f2730cabe677"
    assert fingerprint.hexdigest({"v": VariantDict({"a": 1}, ["a"])}) == \
        "17418ef7a02e6862369173debcf09b686e61e9b23fced94a4a16a0fc8d0380fa"
    for obj, before in [(Command, "chester.command:Command"), (State, "chester.types:State"),
                        (AttrDict, "chester.attrdict:AttrDict"),
                        (VariantDict, "chester.variants:VariantDict"),
                        (fn_write_result, "chester.testing_functions:fn_write_result")]:
        assert fingerprint._qualname(obj) == before.encode()
