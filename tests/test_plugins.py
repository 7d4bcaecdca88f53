"""Plugin loading, routing, conflicts, blocking and failures."""

import json
import os
import sys
import time

import attrs
import pytest

from chester.dispatch import Dispatcher
from chester.errors import HookNotImplementedError, PluginConflictError, UnknownBackendError
from chester.plugins import build_plugin_manager, hookimpl
from chester.types import BackendConfig, BackendSpec, Capabilities, RunStatus

from .helpers import make_project, run_chester, write_plugin_dist


@attrs.frozen(kw_only=True)
class NoOptions:
    pass


class FakeBackend:
    """A backend plugin registered in-process; records the calls it receives."""

    def __init__(self, name):
        self.name = name
        self.calls = []

    @hookimpl
    def chester_backends(self):
        return [BackendSpec(name=self.name, summary="fake", options_cls=NoOptions)]

    @hookimpl
    def chester_status(self, backend, handles):
        self.calls.append(("status", backend.name))
        return {"t": RunStatus(state="running")}


def _cfg(name):
    from pathlib import Path

    return BackendConfig(name=name, type=name, options=NoOptions(), project_path=Path("/tmp"),
                         log_dir=Path("/tmp/data"))


def test_local_backend_is_installed():
    mgr = build_plugin_manager()
    rec = mgr.records["local"]
    assert rec.status == "active"
    assert rec.distribution == "chester-backend-local"
    assert "local" in mgr.backends()


def test_hooks_reach_only_the_owning_backend_and_observers_see_all():
    mgr = build_plugin_manager(load_entry_points=False)
    a, b = FakeBackend("alpha"), FakeBackend("beta")
    seen = []

    class Observer:
        @hookimpl(wrapper=True)
        def chester_status(self, backend):
            seen.append(backend.name)
            return (yield)

    mgr.register(a, "alpha")
    mgr.register(b, "beta")
    mgr.register(Observer(), "observer")
    disp = Dispatcher(manager=mgr)
    assert disp.call("chester_status", _cfg("beta"), handles=[])["t"].state.value == "running"
    assert b.calls == [("status", "beta")] and a.calls == []
    disp.call("chester_status", _cfg("alpha"), handles=[])
    assert a.calls == [("status", "alpha")]
    assert seen == ["beta", "alpha"]


def test_missing_hook_is_a_clear_error():
    mgr = build_plugin_manager(load_entry_points=False)
    mgr.register(FakeBackend("alpha"), "alpha")
    with pytest.raises(HookNotImplementedError, match="alpha.*chester_cancel"):
        Dispatcher(manager=mgr).call("chester_cancel", _cfg("alpha"), handles=[])


def test_two_plugins_claiming_one_name_names_both_distributions():
    mgr = build_plugin_manager(load_entry_points=False)
    mgr.register(FakeBackend("dup"), "one", distribution="chester-backend-one")
    mgr.register(FakeBackend("dup"), "two", distribution="chester-backend-two")
    with pytest.raises(PluginConflictError) as err:
        mgr.get_backend("dup")
    assert "chester-backend-one" in str(err.value) and "chester-backend-two" in str(err.value)


def test_unknown_backend_lists_installed_and_package():
    mgr = build_plugin_manager()
    with pytest.raises(UnknownBackendError) as err:
        mgr.get_backend("nosuch")
    msg = str(err.value)
    assert "local" in msg and "pip install" not in msg  # no such package exists
    with pytest.raises(UnknownBackendError) as err:
        mgr.get_backend("locl")
    assert "did you mean 'local'?" in str(err.value)
    from chester.plugin.manager import unknown_backend_message

    # one of chester's own backends, not installed: its package is named
    assert unknown_backend_message("ec2", ["local"]).endswith(
        "install it with: pip install chester-backend-ec2")


def test_broken_plugin_is_listed_as_error_and_local_still_runs(tmp_path):
    site = tmp_path / "site"
    write_plugin_dist(site, "chester-backend-broken", {"broken": "chester_broken_plugin"},
                      {"chester_broken_plugin": "raise ImportError('missing dependency xyz')\n"})
    project = make_project(tmp_path / "proj")
    env = {"PYTHONPATH": str(site)}
    out = run_chester(["plugins", "list", "--json"], cwd=project, env=env)
    assert out.returncode == 0, out.stderr
    recs = {r["name"]: r for r in json.loads(out.stdout)}
    assert recs["broken"]["status"] == "error"
    assert "missing dependency xyz" in recs["broken"]["error"]
    assert recs["local"]["status"] == "active"
    # a sweep still runs on the local backend with the broken plugin installed
    (project / "job.py").write_text(
        "import chester\n"
        "def f(v, d, n):\n    open(d + '/ok', 'w').write('1')\n"
        "s = chester.launch(f, [{'a': 1}], exp_prefix='withbroken')\n"
        "print(s.wait(timeout=60, pull=False, progress=False))\n")
    import subprocess

    r = subprocess.run([sys.executable, "job.py"], cwd=project, env={**os.environ, **env},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "succeeded" in r.stdout
    # asking for the broken backend says what is wrong and how to fix it
    bad = run_chester(["status"], cwd=project, env={**env})
    assert bad.returncode == 0
    (project / "chester.yaml").write_text("backends:\n  b:\n    type: broken\n")
    r2 = subprocess.run([sys.executable, "-c", "import chester; chester.launch(print, [{}], backend='b')"],
                        cwd=project, env={**os.environ, **env}, capture_output=True, text=True)
    assert "failed to load" in r2.stderr and "missing dependency xyz" in r2.stderr


def test_disable_plugins_blocks_by_name(tmp_path):
    project = make_project(tmp_path / "proj")
    out = run_chester(["plugins", "list", "--json"], cwd=project,
                      env={"CHESTER_DISABLE_PLUGINS": "local"})
    recs = {r["name"]: r for r in json.loads(out.stdout)}
    assert recs["local"]["status"] == "blocked"
    out = run_chester(["plugins", "list"], cwd=project)
    assert "local" in out.stdout and "active" in out.stdout


def test_plugins_list_json_fields(tmp_path):
    out = run_chester(["plugins", "list", "--json"], cwd=make_project(tmp_path / "p"))
    rec = {r["name"]: r for r in json.loads(out.stdout)}["local"]
    assert set(rec) == {"name", "distribution", "version", "module", "status", "backends",
                        "hooks", "error"}
    import chester

    assert rec["version"] == chester.__version__
    assert rec["backends"] == ["local"]
    assert "chester_submit" in rec["hooks"]


def test_capabilities_default_is_not_idempotent():
    assert Capabilities().idempotent_submit is False


def test_lazy_module_runs_on_first_use(tmp_path, monkeypatch):
    from chester.plugins import lazy_module

    (tmp_path / "chester_lazy_probe.py").write_text(
        "import os\nos.environ['CHESTER_LAZY_PROBE'] = 'ran'\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CHESTER_LAZY_PROBE", raising=False)
    monkeypatch.delitem(sys.modules, "chester_lazy_probe", raising=False)
    mod = lazy_module("chester_lazy_probe")
    assert "CHESTER_LAZY_PROBE" not in os.environ
    assert mod.VALUE == 42 and os.environ["CHESTER_LAZY_PROBE"] == "ran"
    assert lazy_module("chester_lazy_probe") is sys.modules["chester_lazy_probe"]
    with pytest.raises(ModuleNotFoundError):
        lazy_module("chester_no_such_module_here")


def test_registering_a_plugin_leaves_its_lazy_modules_unloaded(tmp_path, monkeypatch):
    """pluggy looks at every attribute of a plugin module; a lazy helper must survive it."""
    from chester.plugins import lazy_module

    (tmp_path / "chester_lazy_heavy.py").write_text(
        "import os\nos.environ['CHESTER_LAZY_HEAVY'] = 'ran'\ndef f():\n    return 7\n")
    (tmp_path / "chester_lazy_plugin.py").write_text(
        "from chester.plugins import hookimpl, lazy_module\n"
        "heavy = lazy_module('chester_lazy_heavy')\n"
        "@hookimpl\ndef chester_backends():\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CHESTER_LAZY_HEAVY", raising=False)
    for m in ("chester_lazy_heavy", "chester_lazy_plugin"):
        monkeypatch.delitem(sys.modules, m, raising=False)
    import chester_lazy_plugin

    cpm = build_plugin_manager(load_entry_points=False)
    cpm.register(chester_lazy_plugin, "lazy")
    assert cpm.records["lazy"].hooks == ("chester_backends",)
    assert "CHESTER_LAZY_HEAVY" not in os.environ
    assert chester_lazy_plugin.heavy.f() == 7 and os.environ["CHESTER_LAZY_HEAVY"] == "ran"
    assert lazy_module("chester_lazy_heavy") is sys.modules["chester_lazy_heavy"]


def test_the_entry_point_scan_finds_what_importlib_metadata_finds(tmp_path, monkeypatch):
    """chester reads sys.path's distributions itself (importing importlib.metadata costs
    more than the rest of discovery); it finds the same entry points, the same first
    distribution of a name, and hands a zip on sys.path to importlib.metadata."""
    from importlib import metadata

    from chester import plugins

    a, b = tmp_path / "a", tmp_path / "b"
    write_plugin_dist(a, "chester-backend-twice", {"twice": "mod_a:Plugin"}, version="2.0")
    write_plugin_dist(b, "chester_backend.twice", {"twice": "mod_b:Plugin"}, version="1.0")
    write_plugin_dist(a, "Odd.Name", {"odd": "pkg.sub:obj.attr [extra]"})
    info = b / "other-1.0.dist-info"
    info.mkdir()
    (info / "entry_points.txt").write_text(
        "# a comment\n[console_scripts]\nother = other:main\n\n[chester]\n# another\n"
        "  spaced   =   spaced.mod : plugin  \n[chester.extra]\nnot = this:one\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other\nVersion: 1.0\n")
    (b / "legacy-0.1.egg-info").write_text("Name: legacy\n")  # an egg-info file: no entry points
    monkeypatch.setattr(sys, "path", [str(a), str(tmp_path / "missing"), *sys.path, str(b)])

    def ours():
        return sorted((e.name, e.value, plugins._name_version(e)) for e in plugins._entry_points())

    def theirs():
        eps = {}
        for ep in metadata.entry_points(group="chester"):
            eps.setdefault(ep.name, (ep.name, ep.value, (ep.dist.name, ep.dist.version)))
        return sorted(eps.values())

    assert plugins._scan_entry_points() is not None
    assert ours() == theirs()
    got = {n: (v, d) for n, v, d in ours()}
    assert got["twice"] == ("mod_a:Plugin", ("chester-backend-twice", "2.0"))
    assert got["odd"][0] == "pkg.sub:obj.attr [extra]" and got["spaced"][0] == "spaced.mod : plugin"
    assert "not" not in got
    # a zip on sys.path: importlib.metadata reads it, with the same answer
    import zipfile

    z = tmp_path / "plugins.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\n"
                    "Version: 1.0\n")
        zf.writestr("zipped-1.0.dist-info/entry_points.txt", "[chester]\nzipped = zmod:P\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(z)])
    assert plugins._scan_entry_points() is None
    assert ours() == theirs() and ("zipped", "zmod:P", ("zipped", "1.0")) in ours()


def test_an_entry_point_loads_module_and_attribute_path(tmp_path, monkeypatch):
    from chester import plugins

    (tmp_path / "ep_pkg").mkdir()
    (tmp_path / "ep_pkg" / "__init__.py").write_text("")
    (tmp_path / "ep_pkg" / "mod.py").write_text("class Outer:\n    class Inner:\n        x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = plugins.EntryPoint("t", "ep_pkg.mod : Outer.Inner [extra]")
    assert ep.load().x == 1
    assert plugins.EntryPoint("m", "ep_pkg.mod").load().__name__ == "ep_pkg.mod"
    with pytest.raises(ValueError, match="not module:attr"):
        plugins.EntryPoint("bad", "not a module path").load()


COUNTING_PLUGIN = """
import os
from chester.plugin.manager import hookimpl

with open(os.environ["COUNT_FILE"], "a") as f:  # one line each time this module is imported
    f.write("imported\\n")


@hookimpl
def chester_backends():
    return []
"""


def test_plugins_list_imports_no_plugin_while_nothing_changed(tmp_path):
    site = tmp_path / "site"
    write_plugin_dist(site, "chester-backend-counted", {"counted": "chester_counted"},
                      {"chester_counted": COUNTING_PLUGIN})
    count = tmp_path / "count"
    env = {"PYTHONPATH": str(site), "COUNT_FILE": str(count),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    project = make_project(tmp_path / "proj")

    def listed(*extra: str) -> dict:
        out = run_chester(["plugins", "list", "--json", *extra], cwd=project, env=env)
        assert out.returncode == 0, out.stderr
        return {r["name"]: r for r in json.loads(out.stdout)}

    def imports() -> int:
        return count.read_text().count("imported") if count.exists() else 0

    first = listed()
    assert first["counted"]["hooks"] == ["chester_backends"] and imports() == 1
    assert listed() == first and imports() == 1  # read as it was kept: not imported
    # the plugin's module changes (a hook more): listed anew, with it
    module = site / "chester_counted.py"
    module.write_text(COUNTING_PLUGIN + "\n\n@hookimpl\ndef chester_status(backend, handles):"
                                        "\n    return {}\n")
    os.utime(module, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    again = listed()
    assert again["counted"]["hooks"] == ["chester_backends", "chester_status"]
    assert imports() == 2
    # --verbose loads every plugin; a plugin blocked by name is listed so at once
    assert run_chester(["plugins", "list", "--verbose"], cwd=project, env=env).returncode == 0
    assert imports() == 3
    blocked = run_chester(["plugins", "list", "--json"], cwd=project,
                          env={**env, "CHESTER_DISABLE_PLUGINS": "counted"})
    assert {r["name"]: r for r in json.loads(blocked.stdout)}["counted"]["status"] == "blocked"
    # a plugin that fails to load is never kept: its error is read each time
    module.write_text("raise ImportError('missing dependency xyz')\n")
    os.utime(module, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    for _ in range(2):
        assert "missing dependency xyz" in listed()["counted"]["error"]


def test_chesters_plugin_manager_registers_what_pluggys_own_registers():
    """The manager build_plugin_manager makes looks closely only at the names that can be
    hooks: every kind of plugin still gets exactly the hooks pluggy's own manager gives it."""
    import types

    import pluggy

    from chester.plugin.hookspecs import PROJECT, ChesterSpecs
    from chester.plugin.manager import _PluginManager

    def chester_version_info():
        return "from the instance"

    class Base:
        @hookimpl
        def chester_backends(self):
            return []

        @property
        def chester_register_commands(self):  # never run: pluggy skips properties
            raise AssertionError("a property was read")

    class Plugin(Base):
        __slots__ = ("chester_on_event",)

        def __init__(self):
            self.chester_on_event = hookimpl(lambda event: None)  # in a slot
            self.chester_version_info = hookimpl(chester_version_info)  # in __dict__

        @staticmethod
        @hookimpl
        def chester_submit(backend, prepared):
            return []

        @classmethod
        @hookimpl
        def chester_status(cls, backend, handles):
            return {}

        def chester_cancel(self, backend, handles):  # no marker: not a hook
            return None

        not_a_hook = 3

    module = types.ModuleType("some_plugin_module")
    module.chester_cancel = hookimpl(lambda backend, handles: None)

    def hooks(cls):
        pm = cls(PROJECT)
        pm.add_hookspecs(ChesterSpecs)
        for i, plugin in enumerate([Plugin(), module, Plugin]):
            pm.register(plugin, name=f"p{i}")
        return {name: sorted((i.plugin_name, i.function.__name__, sorted(i.opts.items()))
                             for i in getattr(pm.hook, name).get_hookimpls())
                for name in dir(pm.hook) if not name.startswith("_")}

    got = hooks(_PluginManager)
    assert got == hooks(pluggy.PluginManager)
    assert {n for n, impls in got.items() if impls} >= {
        "chester_backends", "chester_submit", "chester_status", "chester_cancel",
        "chester_on_event", "chester_version_info"}
    assert not got.get("chester_register_commands")
    # and for every plugin installed here
    a, b = build_plugin_manager().pm, pluggy.PluginManager(PROJECT)
    b.add_hookspecs(ChesterSpecs)
    for name, plugin in a.list_name_plugin():
        b.register(plugin, name=name)
    assert {n: [i.function for i in getattr(a.hook, n).get_hookimpls()]
            for n in dir(a.hook) if not n.startswith("_")} == \
        {n: [i.function for i in getattr(b.hook, n).get_hookimpls()]
         for n in dir(b.hook) if not n.startswith("_")}
