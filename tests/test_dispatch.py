"""Retries of network hooks: tenacity policy, submit rules, logging."""

from pathlib import Path

import attrs
import pytest
from structlog.testing import capture_logs

from chester.dispatch import Dispatcher
from chester.errors import BackendError, ConnectError, TransientBackendError
from chester.plugins import build_plugin_manager, hookimpl
from chester.types import BackendConfig, BackendSpec, Capabilities, RunStatus


@attrs.frozen(kw_only=True)
class Opts:
    pass


class Flaky:
    def __init__(self, errors, idempotent=False):
        self.errors = list(errors)
        self.calls = {"submit": 0, "status": 0}
        self.idempotent = idempotent

    @hookimpl
    def chester_backends(self):
        return [BackendSpec(name="flaky", summary="", options_cls=Opts,
                            capabilities=Capabilities(idempotent_submit=self.idempotent))]

    def _maybe_fail(self):
        if self.errors:
            raise self.errors.pop(0)

    @hookimpl
    def chester_status(self, handles):
        self.calls["status"] += 1
        self._maybe_fail()
        return {"x": RunStatus(state="running")}

    @hookimpl
    def chester_submit(self, prepared):
        self.calls["submit"] += 1
        self._maybe_fail()
        return []


CFG = BackendConfig(name="flaky", type="flaky", options=Opts(), project_path=Path("/tmp"),
                    log_dir=Path("/tmp"))


def _disp(plugin):
    mgr = build_plugin_manager(load_entry_points=False)
    mgr.register(plugin, "flaky")
    sleeps = []
    return Dispatcher(manager=mgr, sleep=sleeps.append), sleeps


def test_status_is_retried_on_transient_errors_with_backoff_and_logs():
    p = Flaky([TransientBackendError("link dropped"), TransientBackendError("again")])
    d, sleeps = _disp(p)
    with capture_logs() as logs:
        assert d.call("chester_status", CFG, handles=[])["x"].state.value == "running"
    assert p.calls["status"] == 3
    assert len(sleeps) == 2 and all(s > 0 for s in sleeps)
    retries = [entry for entry in logs if entry["event"] == "retrying"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["op"] == "chester_status" and retries[0]["backend"] == "flaky"


def test_permanent_errors_are_not_retried():
    p = Flaky([BackendError("auth failed")])
    d, sleeps = _disp(p)
    with pytest.raises(BackendError, match="auth failed"):
        d.call("chester_status", CFG, handles=[])
    assert p.calls["status"] == 1 and sleeps == []


def test_attempts_are_bounded_and_the_last_error_is_raised():
    p = Flaky([TransientBackendError(f"e{i}") for i in range(10)])
    d, _ = _disp(p)
    with pytest.raises(TransientBackendError, match="e4"):
        d.call("chester_status", CFG, handles=[])
    assert p.calls["status"] == 5


def test_submit_with_unknown_outcome_is_not_retried_unless_idempotent():
    p = Flaky([TransientBackendError("timed out after sending")])
    d, _ = _disp(p)
    with pytest.raises(TransientBackendError):
        d.call("chester_submit", CFG, prepared=None)
    assert p.calls["submit"] == 1
    p2 = Flaky([TransientBackendError("timed out after sending")], idempotent=True)
    d2, _ = _disp(p2)
    d2.call("chester_submit", CFG, prepared=None)
    assert p2.calls["submit"] == 2


def test_submit_that_never_reached_the_target_is_retried():
    p = Flaky([ConnectError("connection refused")])
    d, _ = _disp(p)
    d.call("chester_submit", CFG, prepared=None)
    assert p.calls["submit"] == 2
