"""Backends as classes on :class:`chester.remote.backend.Backend`, registered as instances (one
per plugin manager); plain-function modules still work; a retried ``chester_logs`` goes on
from the byte the failed attempt wrote up to, counted in the log's raw bytes."""

from __future__ import annotations

import io
from pathlib import Path

import attrs
import pytest

from chester.plugin.dispatch import Dispatcher, retry_scope
from chester.plugin.errors import TransientBackendError
from chester.plugin.manager import build_plugin_manager, hookimpl
from chester.plugin.records import BackendConfig, BackendSpec, RunHandle, RunStatus
from chester.remote.backend import Backend, hook_function
from chester.remote.follow import LogCursor, follow

from .helpers import write_plugin_dist

CLASSY = '''
import attrs
from chester.plugin.manager import hookimpl
from chester.plugin.records import BackendSpec, RunStatus
from chester.remote.backend import Backend


@attrs.frozen(kw_only=True)
class ClassyOptions:
    pass


class ClassyBackend(Backend):
    name = "classy"

    def __init__(self):
        super().__init__()
        self.polls = 0  # state on the instance

    def spec(self):
        return BackendSpec(name=self.name, summary="a class", options_cls=ClassyOptions)

    @hookimpl
    def chester_status(self, backend, handles):
        self.polls += 1
        return {h.token: RunStatus(state="running") for h in handles}
'''

PLAIN = '''
import attrs
from chester.plugin.manager import hookimpl
from chester.plugin.records import BackendSpec, RunStatus


@attrs.frozen(kw_only=True)
class PlainOptions:
    pass


@hookimpl
def chester_backends():
    return [BackendSpec(name="plainfns", summary="functions", options_cls=PlainOptions)]


@hookimpl
def chester_status(backend, handles):
    return {h.token: RunStatus(state="queued") for h in handles}
'''


@attrs.frozen(kw_only=True)
class NoOptions:
    pass


def _cfg(name: str) -> BackendConfig:
    return BackendConfig(name=name, type=name, options=NoOptions(), project_path=Path("/tmp"),
                         log_dir=Path("/tmp/data"))


def _handle(token: str = "t1") -> RunHandle:
    return RunHandle(run_id=1, token=token, backend="x", local_dir="/tmp/r",
                     remote_dir="/tmp/r")


def test_a_class_entry_point_is_one_instance_per_manager_and_plain_functions_still_work(
        tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_plugin_dist(site, "chester-backend-classy", {"classy": "chester_classy:ClassyBackend"},
                      {"chester_classy": CLASSY})
    write_plugin_dist(site, "chester-backend-plainfns", {"plainfns": "chester_plainfns"},
                      {"chester_plainfns": PLAIN})
    monkeypatch.syspath_prepend(str(site))
    for m in ("chester_classy", "chester_plainfns"):
        monkeypatch.delitem(__import__("sys").modules, m, raising=False)
    one, two = build_plugin_manager(), build_plugin_manager()
    for mgr in (one, two):
        assert {"classy", "plainfns"} <= set(mgr.backends())
        for name in ("classy", "plainfns"):
            rec = mgr.records[name]
            assert rec.status == "active" and rec.backends == (name,), rec
            assert "chester_status" in rec.hooks
        assert mgr.records["classy"].module == "chester_classy"
    a, b = one.get_backend("classy").plugin, two.get_backend("classy").plugin
    assert type(a).__name__ == "ClassyBackend" and a is not b
    h = _handle()
    got = Dispatcher(manager=one).call("chester_status", _cfg("classy"), handles=[h])
    assert got[h.token].state.value == "running"
    assert (a.polls, b.polls) == (1, 0)  # the state is the instance's, not the module's
    got = Dispatcher(manager=one).call("chester_status", _cfg("plainfns"), handles=[h])
    assert got[h.token].state.value == "queued"


LOG = b"".join(f"line {i:02d} \u00e9\u2603\U0001f600\n".encode() + (b"\xff" if i == 3 else b"")
               for i in range(12))


class Streaming(Backend):
    """Copies ``LOG`` in chunks through ``chester.remote.follow``; the link drops (a
    ``TransientBackendError``) after ``drops`` chunks, once per drop."""

    name = "streaming"

    def __init__(self, drops: list[int], chunk: int = 7) -> None:
        super().__init__()
        self.drops, self.chunk, self.starts = drops, chunk, []

    def spec(self) -> BackendSpec:
        return BackendSpec(name=self.name, summary="", options_cls=NoOptions)

    @hookimpl
    def chester_logs(self, backend, handle, follow, stream, out):
        cursor = self.log_cursor(handle, stream, out)
        self.starts.append(cursor.offset)
        reads = [0]

        def read(offset: int) -> bytes:
            reads[0] += 1
            if self.drops and reads[0] > self.drops[0]:
                self.drops.pop(0)
                raise TransientBackendError("the link dropped")
            return LOG[offset:offset + self.chunk]

        return follow_all(read, cursor)


def follow_all(read, cursor: LogCursor) -> bool:
    while True:
        chunk = read(cursor.offset)
        if not chunk:
            break
        cursor.write(chunk)
    cursor.close()
    return True


def _dispatcher(plugin: Backend) -> Dispatcher:
    mgr = build_plugin_manager(load_entry_points=False)
    mgr.register(plugin, plugin.name)
    return Dispatcher(manager=mgr, sleep=lambda s: None)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_a_retried_logs_call_goes_on_from_the_byte_it_had_written(binary):
    plugin = Streaming(drops=[2, 3, 1])
    disp = _dispatcher(plugin)
    buf = io.BytesIO()
    out = io.TextIOWrapper(buf, encoding="utf-8") if binary else io.StringIO()
    disp.call("chester_logs", _cfg("streaming"), handle=_handle(), follow=True,
              stream="stdout", out=out)
    out.flush()
    if binary:  # an output with a buffer gets the bytes as they are
        assert buf.getvalue() == LOG
    else:
        assert out.getvalue() == LOG.decode("utf-8", "replace")
    # three drops: each attempt began where the last one stopped, in bytes
    assert plugin.starts == [0, 14, 35, 42]
    # the next call is a call of its own: from byte 0
    plugin.starts.clear()
    out = io.StringIO()
    disp.call("chester_logs", _cfg("streaming"), handle=_handle(), follow=False,
              stream="stdout", out=out)
    assert plugin.starts == [0] and out.getvalue() == LOG.decode("utf-8", "replace")


def test_a_cut_character_is_written_whole_once_after_a_retry():
    """A drop between the bytes of one character: it is decoded whole, once."""
    plugin = Streaming(drops=[1], chunk=len("line 00 ") + 1)  # the first chunk ends in é
    out = io.StringIO()
    _dispatcher(plugin).call("chester_logs", _cfg("streaming"), handle=_handle(),
                             follow=False, stream="stdout", out=out)
    assert out.getvalue() == LOG.decode("utf-8", "replace")


def test_a_write_that_raises_counts_nothing_and_is_written_again():
    class Once(io.StringIO):
        failed = False

        def write(self, text):
            if not self.failed and self.tell() > 20:
                self.failed = True
                raise TransientBackendError("injected")
            return super().write(text)

    out = Once()
    cursor = LogCursor(out)
    before = -1
    with pytest.raises(TransientBackendError):
        for i in range(0, len(LOG), 5):
            before = cursor.offset
            cursor.write(LOG[i:i + 5])
    assert out.failed and cursor.offset == before  # the failed write is not counted
    for i in range(cursor.offset, len(LOG), 5):
        cursor.write(LOG[i:i + 5])
    cursor.close()
    assert out.getvalue() == LOG.decode("utf-8", "replace")


def test_follow_goes_on_from_a_cursor_and_the_scope_is_one_call():
    out = io.StringIO()
    cursor = LogCursor(out)
    cursor.write(LOG[:10])
    follow(lambda off: LOG[off:], lambda: True, cursor, follow=False)
    assert out.getvalue() == LOG.decode("utf-8", "replace")
    assert retry_scope() is None  # outside a dispatcher call
    seen = []

    class Scoped(Backend):
        name = "scoped"

        def spec(self):
            return BackendSpec(name=self.name, summary="", options_cls=NoOptions)

        @hookimpl
        def chester_status(self, backend, handles):
            seen.append(retry_scope())
            if len(seen) == 1:
                raise TransientBackendError("once")
            return {}

    disp = _dispatcher(Scoped())
    disp.call("chester_status", _cfg("scoped"), handles=[])
    disp.call("chester_status", _cfg("scoped"), handles=[])
    assert seen[0] is seen[1] and seen[2] is not seen[1] and seen[0].hook == "chester_status"


def test_the_hooks_keep_their_module_level_names():
    made: list[Backend] = []

    class Module(Backend):
        name = "m"

        def __init__(self):
            super().__init__()
            made.append(self)

        def spec(self):
            return BackendSpec(name=self.name, summary="", options_cls=NoOptions)

        @hookimpl
        def chester_status(self, backend, handles):
            return {"made": RunStatus(state="running", host=str(made.index(self)))}

    a = hook_function(Module, "chester_status", "m")(backend=_cfg("m"), handles=[])
    b = hook_function(Module, "chester_status", "m")(_cfg("m"), [])
    # a new instance each call: nothing kept from one call to the next
    assert (a["made"].host, b["made"].host) == ("0", "1") and made[0] is not made[1]
    with pytest.raises(AttributeError, match="module 'm' has no attribute 'nope'"):
        hook_function(Module, "nope", "m")
    import chester_backend_local.plugin as local

    assert local.chester_cancel.__name__ == "chester_cancel"
    with pytest.raises(AttributeError):
        local.chester_nothing  # noqa: B018


def test_a_backend_without_a_spec_says_so():
    class NoSpec(Backend):
        name = "nospec"

    mgr = build_plugin_manager(load_entry_points=False)
    mgr.register(NoSpec(), "nospec")
    assert mgr.backends() == {}
    assert "must define spec()" in (mgr.records["nospec"].error or "")
