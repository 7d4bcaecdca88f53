"""chester's runtime on a real sshd host is never trusted half-written: a copy cut short
(what a disk that filled mid-upload left) is replaced by the next launch and by the next
status call, and the upload itself goes to a name of its own, renamed into place whole."""

from __future__ import annotations

import sys
import time

import cloudpickle

from chester.launcher import launch
from chester.remote import runtime
from chester.types import State

from .test_ssh_e2e import fast_dispatcher, host_path, make_config

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn_ok(variant, log_dir, exp_name):
    with open(f"{log_dir}/ok.txt", "w") as f:
        f.write(str(variant["i"]))


def _cut_short(path) -> bytes:
    whole = runtime.build().path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(whole[:len(whole) * 299_008 // 533_315])
    return whole


def _wait(sweep, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = sweep.status()
        if all(s.terminal for s in states.values()):
            return states
        time.sleep(0.3)
    raise AssertionError(f"runs did not end: {states}")


def test_a_runtime_cut_short_on_the_host_is_replaced_by_the_next_launch(tmp_path, sshd_hosts):
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    remote = cfg.backend("box").options.remote_dir
    on_host = host_path(sshd_hosts[0], runtime.build().remote_path(remote))
    whole = _cut_short(on_host)
    sweep = launch(fn_ok, [{"i": 1}, {"i": 2}], backend="box", exp_prefix="cut",
                   config=cfg, dispatcher=fast_dispatcher())
    states = _wait(sweep)
    assert set(states.values()) == {State.SUCCEEDED}, states
    assert on_host.read_bytes() == whole
    assert not list(on_host.parent.glob(".*.part"))  # nothing left under a temporary name


def test_a_runtime_cut_short_after_launch_is_replaced_by_status(tmp_path, sshd_hosts):
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    remote = cfg.backend("box").options.remote_dir
    sweep = launch(fn_ok, [{"i": 1}], backend="box", exp_prefix="later", config=cfg,
                   dispatcher=fast_dispatcher())
    assert set(_wait(sweep).values()) == {State.SUCCEEDED}
    on_host = host_path(sshd_hosts[0], runtime.build().remote_path(remote))
    whole = _cut_short(on_host)
    from chester_backend_ssh import plugin

    handles = [r.handle for r in sweep.rows()]
    got = plugin.chester_status(backend=cfg.backend("box"), handles=handles)
    assert {s.state for s in got.values()} == {State.SUCCEEDED}
    assert on_host.read_bytes() == whole


GO = """\
import sys, time
from pathlib import Path

import chester


def fn(variant, log_dir, exp_name):
    Path(log_dir, "ok.txt").write_text(str(variant["i"]))


Path("ready-" + sys.argv[1]).touch()
while not Path("go").exists():  # all three start their launch together
    time.sleep(0.005)
sweep = chester.launch(fn, [{"i": 0}, {"i": 1}], backend="box", exp_prefix=sys.argv[1])
states = sweep.wait(pull=False, timeout=120, poll_interval=0.3, progress=False)
print(sorted(s.value for s in states.values()))
"""


def test_three_first_launches_at_once_share_one_whole_runtime(tmp_path, sshd_hosts):
    """Three launchers reach a host with no runtime yet at the same moment: each upload goes
    to a name of its own and is renamed into place whole, so no run starts from a runtime
    another upload is still writing; every run succeeds and one whole copy stays."""
    import os
    import subprocess

    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    remote = cfg.backend("box").options.remote_dir
    on_host = host_path(sshd_hosts[0], runtime.build().remote_path(remote))
    assert not on_host.exists()
    (project / "go.py").write_text(GO)
    env = {k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"}
    procs = [subprocess.Popen([sys.executable, "go.py", f"first{k}"], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(3)]
    deadline = time.monotonic() + 60
    while len(list(project.glob("ready-*"))) < 3:  # the three wait for the word
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    (project / "go").touch()
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip().splitlines()[-1] == "['succeeded', 'succeeded']", (out, err)
    assert on_host.read_bytes() == runtime.build().path.read_bytes()
    assert not list(on_host.parent.glob(".*.part"))  # nothing left under a temporary name
