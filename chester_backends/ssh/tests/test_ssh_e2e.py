"""End-to-end tests of the ssh backend against real sshd hosts (testinfra's
``sshd_hosts``: two network namespaces, each with its own hostname and ``/remote``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import yaml
from chester_backend_ssh.plugin import sync_code, transport_for

from chester.config import load_config
from chester.dispatch import Dispatcher
from chester.errors import BackendError, ConnectError
from chester.launcher import launch
from chester.remote.ssh import SSHTarget, Transport

# the launched functions travel by value: the hosts cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])
CHESTER = str(Path(sys.executable).parent / "chester")


def fn_report(variant, log_dir, exp_name):
    import json as _j
    import os as _o
    import socket as _s
    import time as _t

    with open(_o.path.join(log_dir, "invocations.txt"), "a") as f:
        f.write(f"{_o.getpid()}\n")
    t0 = _t.time()
    _t.sleep(float(variant.get("sleep", 0)))
    names = variant.get("env_names", [])
    with open(_o.path.join(log_dir, "result.json"), "w") as f:
        _j.dump({"host": _s.gethostname(), "cwd": _o.getcwd(), "start": t0, "end": _t.time(),
                 "cuda": _o.environ.get("CUDA_VISIBLE_DEVICES"),
                 "env": {n: _o.environ.get(n) for n in names}, "i": variant.get("i")}, f)
    for name in variant.get("artefacts", []):
        with open(_o.path.join(log_dir, name), "w") as f:
            f.write(name)
    print(f"hello from {exp_name}", flush=True)


def make_config(tmp_path: Path, sshd_hosts, backends: dict, **top) -> tuple[Path, object]:
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / ".git").mkdir(exist_ok=True)
    (project / "train.py").write_text("print('code')\n")
    full = {"backends": {}, **top}
    for name, (index, opts) in backends.items():
        h = sshd_hosts[index]
        full["backends"][name] = {
            "type": "ssh", "host": h.alias, "remote_dir": f"/remote/{tmp_path.name}",
            "ssh_config": sshd_hosts.ssh_config,
            "connect_timeout": 3, **opts}
    (project / "chester.yaml").write_text(yaml.safe_dump(full))
    return project, load_config(project / "chester.yaml")


def fast_dispatcher() -> Dispatcher:
    return Dispatcher(sleep=lambda s: time.sleep(min(s, 1.0)))


def host_path(host, remote: str) -> Path:
    """Where a host's /remote path is visible from here."""
    assert remote.startswith("/remote/")
    return host.local_dir / remote[len("/remote/"):]


def test_two_hosts_each_run_once_on_its_host(tmp_path, sshd_hosts):
    project, cfg = make_config(tmp_path, sshd_hosts, {"gpu1": (0, {}), "gpu2": (1, {})})
    sweeps = {}
    for name in ("gpu1", "gpu2"):
        sweeps[name] = launch(fn_report, [{"i": i} for i in range(3)], backend=name,
                              exp_prefix=f"two-{name}", config=cfg,
                              dispatcher=fast_dispatcher())
    for name, index in (("gpu1", 0), ("gpu2", 1)):
        sw = sweeps[name]
        states = sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
        assert {s.value for s in states.values()} == {"succeeded"}, states
        for run in sw.runs:
            res = json.loads((run.log_dir / "result.json").read_text())
            assert res["host"] == sshd_hosts[index].hostname
            assert res["cwd"] == f"/remote/{tmp_path.name}"
            assert (run.log_dir / "invocations.txt").read_text().count("\n") == 1
            # the run folder lives in that host's private /remote, not on the other one
            assert (host_path(sshd_hosts[index], run.remote_dir) / ".done").exists()
            other = sshd_hosts[1 - index]
            assert not (host_path(other, run.remote_dir)).exists()
    # the code was synced to each host, chester's excludes honoured
    for index in (0, 1):
        root = sshd_hosts[index].local_dir / tmp_path.name
        assert (root / "train.py").exists()
        assert not (root / ".git").exists()


def test_env_prepare_secrets_gpus_and_queue(tmp_path, sshd_hosts, monkeypatch):
    monkeypatch.setenv("CHESTER_TEST_TOKEN", "s3cr3t 'quoted' $(nope)")
    secrets_file = tmp_path / "more.env"
    secrets_file.write_text("# comment\nDB_PASSWORD='pa ss'\nexport API_KEY=k-123\n")
    opts = {"env": {"MY_FLAG": "it's \"on\""}, "prepare_commands": ["export PREPARED=yes"],
            "secrets": ["CHESTER_TEST_TOKEN", str(secrets_file)],
            "max_parallel": 2, "gpus": ["0", "1"]}
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, opts)})
    (project / "prepare.sh").write_text("export FROM_PREPARE_SH=1\n")
    names = ["MY_FLAG", "PREPARED", "FROM_PREPARE_SH", "CHESTER_TEST_TOKEN", "DB_PASSWORD",
             "API_KEY"]
    sw = launch(fn_report, [{"i": i, "sleep": 1.0, "env_names": names} for i in range(4)],
                backend="box", exp_prefix="envs", config=cfg, dispatcher=fast_dispatcher())
    # no secret value in anything rendered
    prepared = sw.prepared
    for text in prepared.scripts.values():
        assert "s3cr3t" not in text and "pa ss" not in text and "k-123" not in text
    states = sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    results = [json.loads((r.log_dir / "result.json").read_text()) for r in sw.runs]
    for res in results:
        assert res["env"] == {"MY_FLAG": "it's \"on\"", "PREPARED": "yes",
                              "FROM_PREPARE_SH": "1",
                              "CHESTER_TEST_TOKEN": "s3cr3t 'quoted' $(nope)",
                              "DB_PASSWORD": "pa ss", "API_KEY": "k-123"}
        assert res["cuda"] in ("0", "1")
    # never more than 2 at a time, and the two concurrent ones had different GPUs
    events = sorted([(r["start"], 1, r["cuda"]) for r in results]
                    + [(r["end"], -1, r["cuda"]) for r in results])
    running, peak = 0, 0
    for _, d, _ in events:
        running += d
        peak = max(peak, running)
    assert peak <= 2
    # the secrets file was deleted on the host; nothing under chester's folder holds a value
    cdir = sshd_hosts[0].local_dir / tmp_path.name / ".chester"
    for p in cdir.rglob("*"):
        if p.is_file():
            assert not p.name.endswith(".secrets"), p
            data = p.read_bytes()
            assert b"s3cr3t" not in data and b"k-123" not in data, p
    # `chester config` shows names, never values
    out = subprocess.run([CHESTER, "config"], capture_output=True,
                         text=True, env={**os.environ,
                                         "CHESTER_CONFIG_PATH": str(project / "chester.yaml")})
    assert out.returncode == 0, out.stderr
    assert "s3cr3t" not in out.stdout and "k-123" not in out.stdout


def test_pull_patterns_and_incremental(tmp_path, sshd_hosts):
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    sw = launch(fn_report, [{"i": 0, "artefacts": ["best.pt", "last.pt", "curve.png", "m.txt"]}],
                backend="box", exp_prefix="pats", config=cfg, dispatcher=fast_dispatcher())
    sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=False)
    run = sw.runs[0]
    bare = sw.pull(bare=True)
    assert (run.log_dir / "m.txt").exists() and (run.log_dir / "result.json").exists()
    assert not (run.log_dir / "curve.png").exists() and not (run.log_dir / "best.pt").exists()
    assert bare[0].files > 0
    # skip *.pt except best.pt
    res = sw.pull(include=["best.pt"], exclude=["*.pt"])
    assert (run.log_dir / "best.pt").exists() and not (run.log_dir / "last.pt").exists()
    assert (run.log_dir / "curve.png").exists()
    assert res[0].files == 2  # best.pt, curve.png
    # a newer local file is never overwritten, even edited in the same second as the host
    # wrote it (the worst case for rsync's whole-second --update, made certain here)
    edit_in_the_same_second(run.log_dir / "m.txt", host_path(sshd_hosts[0], run.remote_dir) /
                            "m.txt", "edited locally")
    full = sw.pull()
    assert (run.log_dir / "last.pt").exists()
    assert (run.log_dir / "m.txt").read_text() == "edited locally"
    assert sum(r.files for r in full) == 1
    assert sum(r.files for r in sw.pull()) == 0


def edit_in_the_same_second(local: Path, remote: Path, text: str) -> None:
    """Write ``text`` into ``local`` and give it a time later than ``remote``'s, within the
    same second."""
    local.write_text(text)
    r = remote.stat().st_mtime_ns
    t = r + (10**9 - 1 - r % 10**9) // 2
    os.utime(local, ns=(t, t))
    assert t // 10**9 == r // 10**9 and t >= r


def test_pull_never_overwrites_a_file_changed_here_since_it_was_pulled(tmp_path, sshd_hosts):
    """Whatever the clocks' granularity: a file changed here after a pull brought it stays
    as it is at every later pull, until it is removed here; files not changed here still
    follow the host's, even rewritten there in the same second."""
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    odd = "odd *?[x]\\ name é.txt"  # rsync's wildcards, a backslash, UTF-8
    sw = launch(fn_report, [{"i": 0, "artefacts": ["notes.txt", "metrics.csv", odd]}],
                backend="box", exp_prefix="same-second", config=cfg,
                dispatcher=fast_dispatcher())
    sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    run = sw.runs[0]
    there = host_path(sshd_hosts[0], run.remote_dir)
    assert (run.log_dir / "notes.txt").read_text() == "notes.txt"
    for name in ("notes.txt", odd):
        edit_in_the_same_second(run.log_dir / name, there / name, "mine, edited here")
    # the host rewrites the files, in the same second as its first write
    for name in ("notes.txt", "metrics.csv", odd):
        before = (there / name).stat().st_mtime_ns
        (there / name).write_text(f"{name} from the host, longer")
        os.utime(there / name, ns=(before, before))
    for _ in range(2):
        got = sw.pull()
        for name in ("notes.txt", odd):
            assert (run.log_dir / name).read_text() == "mine, edited here", name
        assert (run.log_dir / "metrics.csv").read_text() == "metrics.csv from the host, longer"
    assert sum(r.files for r in got) == 0
    # removed here: the host's file comes home again
    (run.log_dir / "notes.txt").unlink()
    assert sum(r.files for r in sw.pull()) == 1
    assert (run.log_dir / "notes.txt").read_text() == "notes.txt from the host, longer"


def test_code_sync_dry_run_and_no_delete(tmp_path, sshd_hosts):
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {"extra_sync_dirs": ["data/assets"]})},
                               rsync_exclude=["*.ckpt"])
    (project / "data" / "assets").mkdir(parents=True)
    (project / "data" / "assets" / "vocab.txt").write_text("a b c")
    (project / "big.ckpt").write_text("x" * 1000)
    (project / "pkg").mkdir()
    (project / "pkg" / "mod.py").write_text("A = 1\n")
    (project / "data" / "old.txt").write_text("log dir: not code")
    bcfg = cfg.backend("box")
    with transport_for(bcfg) as tr:
        dry = sync_code(bcfg, tr, dry_run=True)
        assert dry.files == 4  # chester.yaml, train.py, pkg/mod.py, data/assets/vocab.txt
        assert dry.bytes > 0
        root = sshd_hosts[0].local_dir / tmp_path.name
        assert not root.exists() or not (root / "train.py").exists()
        # something of the user's on the host that is not in the project survives a sync
        tr.run(["mkdir", "-p", f"/remote/{tmp_path.name}/results"])
        tr.run(["touch", f"/remote/{tmp_path.name}/results/keep.me"])
        real = sync_code(bcfg, tr)
        assert real.files == 4 and real.invocations == 2
        again = sync_code(bcfg, tr)
        assert again.files == 0
    assert (root / "results" / "keep.me").exists()
    assert (root / "pkg" / "mod.py").exists()
    assert not (root / "big.ckpt").exists() and not (root / "data" / "old.txt").exists()
    assert (root / "data" / "assets" / "vocab.txt").read_text() == "a b c"


def test_logs_follow_and_cancel(tmp_path, sshd_hosts):
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    sw = launch(fn_report, [{"i": 0, "sleep": 1.5}], backend="box", exp_prefix="logs",
                config=cfg, dispatcher=fast_dispatcher())
    out = io.StringIO()
    sw.dispatcher.call("chester_logs", sw.backend, handle=sw.runs[0].handle, follow=True,
                       stream="stdout", out=out)
    assert "hello from" in out.getvalue()
    sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)


def test_errors_are_one_line_naming_backend_and_host(tmp_path, sshd_hosts):
    h = sshd_hosts[0]
    cfg = tmp_path / "ssh_config"  # not the ~/.ssh of this machine
    cfg.write_text(f"Host *\n  UserKnownHostsFile {tmp_path}/known_hosts\n"
                   "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking accept-new\n"
                   "  IdentitiesOnly yes\n")
    bad = tmp_path / "ssh_config.typo"
    bad.write_text("Host *\n  StrictHostKeyCkecking yes\n")
    cases = [
        (SSHTarget(host="no-such-host.invalid", ssh_config=str(cfg), connect_timeout=3),
         ConnectError, "cannot resolve"),
        (SSHTarget(host=h.address, port=2, user="root", ssh_config=str(cfg), connect_timeout=3),
         ConnectError, "connection refused"),
        (SSHTarget(host=h.address, user="root", key_filename=sshd_hosts.other_key,
                   ssh_config=str(cfg), connect_timeout=3), BackendError, "authentication failed"),
        (SSHTarget(host=h.address, ssh_config=str(bad), connect_timeout=3), BackendError,
         f"bad SSH settings: {bad}: line 2: Bad configuration option: stricthostkeyckecking"),
    ]
    for target, kind, words in cases:
        t0 = time.monotonic()
        with pytest.raises(kind) as ei:
            with Transport(target, backend="gpu9") as tr:
                tr.run(["true"])
        msg = str(ei.value)
        assert "\n" not in msg
        assert msg.startswith("ssh backend 'gpu9' (") and target.host in msg, msg
        assert words in msg, msg
        assert time.monotonic() - t0 < 10
        if kind is BackendError:
            assert not isinstance(ei.value, ConnectError)
    # a missing remote folder / command is permanent and says what is missing
    with Transport(SSHTarget(host=h.alias, ssh_config=sshd_hosts.ssh_config), backend="gpu9") as tr:
        with pytest.raises(BackendError) as ei:
            tr.run(["ls", "/remote/definitely-missing"])
        assert "No such file" in str(ei.value) and "\n" not in str(ei.value)
        with pytest.raises(BackendError) as ei:
            tr.run(["no-such-command-xyz"])
        assert "command not found" in str(ei.value)


LAUNCH_SCRIPT = r"""
import sys, cloudpickle
sys.path.insert(0, {testdir!r})
from chester.launcher import launch
def fn(variant, log_dir, exp_name):
    import os, time
    time.sleep(1)
    open(os.path.join(log_dir, "out.txt"), "w").write(str(variant["i"]))
sw = launch(fn, [{{"i": i}} for i in range(3)], backend="box", exp_prefix="cli")
print("launched", len(sw.runs))
"""


def test_launcher_exits_then_cli_status_and_pull_finish(tmp_path, sshd_hosts):
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    script = project / "launch.py"
    script.write_text(LAUNCH_SCRIPT.format(testdir=str(Path(__file__).parent)))
    r = subprocess.run([sys.executable, str(script)], cwd=project, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "launched 3" in r.stdout
    deadline = time.monotonic() + 60
    while True:
        st = subprocess.run([CHESTER, "status", "--json"], cwd=project,
                            env=env, capture_output=True, text=True, timeout=60)
        assert st.returncode == 0, st.stderr
        runs = json.loads(st.stdout)["runs"]
        if all(x["state"] == "succeeded" for x in runs):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    p1 = subprocess.run([CHESTER, "pull"], cwd=project, env=env,
                        capture_output=True, text=True, timeout=60)
    assert p1.returncode == 0, p1.stderr
    assert "pulled 3 runs" in p1.stdout and " 0 files" not in p1.stdout, p1.stdout
    for x in runs:
        assert (Path(x["log_dir"]) / "out.txt").exists()
    p2 = subprocess.run([CHESTER, "pull"], cwd=project, env=env,
                        capture_output=True, text=True, timeout=60)
    assert p2.returncode == 0, p2.stderr
    assert "pulled 3 runs, 0 files, 0 bytes" in p2.stdout, p2.stdout


SEED_SCRIPT = r"""
from chester.run_exp import run_experiment_lite, VariantGenerator

def train(variant, log_dir, exp_name):
    import os
    os.makedirs("shared_out", exist_ok=True)
    open(os.path.join("shared_out", exp_name + ".txt"), "w").write("extra")
    assert os.environ["FROM_PRE"] == "a b" and os.environ["K"] == "it's"
    open(os.path.join(log_dir, "out.txt"), "w").write(str(variant["lr"]))

vg = VariantGenerator()
vg.add("lr", [0.1, 0.2])
for v in vg.variants():
    run_experiment_lite(stub_method_call=train, variant=v, mode="gpu1", exp_prefix="seed",
                        auto_pull=True, auto_pull_interval=1, extra_pull_dirs=["shared_out"],
                        pre_commands=["export FROM_PRE='a b'"], env={"K": "it's"})
print("launched")
"""


def test_seed_keys_run_experiment_lite_auto_pull(tmp_path, sshd_hosts):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    (project / "chester.yaml").write_text(yaml.safe_dump({
        "ssh_hosts": ["gpu1"], "host_address": {"gpu1": sshd_hosts[0].alias},
        "remote_dir": {"gpu1": f"/remote/{tmp_path.name}"},
        # what the test hosts need on top of the seed's keys
        "backends": {"gpu1": {"type": "ssh", "ssh_config": sshd_hosts.ssh_config,
                              "connect_timeout": 3}}}))
    (project / "launch.py").write_text(SEED_SCRIPT)
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    r = subprocess.run([sys.executable, "launch.py"], cwd=project, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # the detached auto-pull (python -m chester.auto_pull) brings everything home
    deadline = time.monotonic() + 90
    while True:
        outs = list(project.rglob("out.txt"))
        extra = list((project / "shared_out").glob("*.txt")) if (project / "shared_out").exists() else []
        if len(outs) == 2 and len(extra) == 2:
            break
        assert time.monotonic() < deadline, (outs, extra)
        time.sleep(0.5)
    assert sorted(p.read_text() for p in outs) == ["0.1", "0.2"]
    st = subprocess.run([CHESTER, "status", "--json", "--no-refresh"], cwd=project, env=env,
                        capture_output=True, text=True, timeout=60)
    runs = json.loads(st.stdout)["runs"]
    assert [x["state"] for x in runs] == ["succeeded", "succeeded"]


@pytest.mark.parametrize("kind", ["bad-key", "refused", "unknown-host"])
def test_launch_errors_are_one_line(kind, tmp_path, sshd_hosts):
    h = sshd_hosts[0]
    opts = {"bad-key": {"host": f"root@{h.address}",
                        "key_filename": sshd_hosts.other_key},
            "refused": {"host": f"root@{h.address}:2"},
            "unknown-host": {"host": "no-such-host.invalid"}}[kind]
    # an ssh_config with no key in it (and no writes to ~/.ssh/known_hosts)
    plain = tmp_path / "plain_ssh_config"
    plain.write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                     "  LogLevel ERROR\n")
    project, cfg = make_config(tmp_path, sshd_hosts,
                               {"bad": (0, {**opts, "ssh_config": str(plain)})})
    disp = Dispatcher(sleep=lambda s: None, attempts=2)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as ei:
        launch(fn_report, [{"i": 0}], backend="bad", exp_prefix="bad", config=cfg,
               dispatcher=disp)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("ssh backend 'bad' ("), msg
    assert opts["host"].split("@")[-1].split(":")[0] in msg, msg
    assert {"bad-key": "authentication failed", "refused": "connection refused",
            "unknown-host": "cannot resolve"}[kind] in msg, msg
    assert time.monotonic() - t0 < 20


# -- a host that has nothing of chester's ----------------------------------------------------
def test_the_host_needs_no_chester(tmp_path, sshd_hosts):
    """The hosts' ``python3`` (no ``python:`` option) has neither chester nor cloudpickle:
    the runtime chester ships under remote_dir runs the queue, the workers and status."""
    project, cfg = make_config(tmp_path, sshd_hosts, {"bare": (0, {})})
    assert "python" not in yaml.safe_load((project / "chester.yaml").read_text())[
        "backends"]["bare"]
    with transport_for(cfg.backend("bare")) as tr:
        res = tr.run(["python3", "-c", "import chester"], check=False)
        assert res.exit_code != 0 and "No module named 'chester'" in res.stderr, \
            "the test host's python3 must not have chester installed"
        assert tr.run(["python3", "-c", "import cloudpickle"], check=False).exit_code != 0
    sw = launch(fn_report, [{"i": i} for i in range(2)], backend="bare", exp_prefix="bare",
                config=cfg, dispatcher=fast_dispatcher())
    states = sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert {s.value for s in states.values()} == {"succeeded"}, states
    from chester.remote import runtime

    rt = runtime.build()
    on_host = host_path(sshd_hosts[0], f"/remote/{tmp_path.name}") / ".chester" / "runtime"
    assert [p.name for p in on_host.iterdir()] == [rt.name]
    assert (on_host / rt.name).read_bytes() == rt.path.read_bytes()
    # a second launch finds the runtime there and sends only the runs
    sw2 = launch(fn_report, [{"i": 9}], backend="bare", exp_prefix="bare2", config=cfg,
                 dispatcher=fast_dispatcher())
    assert {s.value for s in sw2.wait(timeout=60, poll_interval=0.3, progress=False).values()} \
        == {"succeeded"}
    r = subprocess.run([CHESTER, "status", "bare", "--json"], cwd=project, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [x["state"] for x in json.loads(r.stdout)["runs"]] == ["succeeded", "succeeded"]


@pytest.mark.parametrize("kind", ["other-minor", "too-old", "missing"])
def test_a_python_that_cannot_run_the_sweep_stops_before_submit(kind, tmp_path, sshd_hosts):
    """A stand-in ``python`` reports another version: the launch stops with one line naming
    the backend, the host, the Python found and the fix, and nothing is queued there."""
    fake = tmp_path / "bin" / "python3.x"
    fake.parent.mkdir()
    version = {"other-minor": "3.%d.4" % (sys.version_info[1] + 1), "too-old": "3.8.10"}
    fake.write_text(f"#!/bin/sh\necho 'chester-probe python={version.get(kind)} /opt/py/bin/"
                    "python3'\n")
    fake.chmod(0o755)
    python = str(fake) if kind != "missing" else "/nonexistent/python3"
    project, cfg = make_config(tmp_path, sshd_hosts, {"odd": (0, {"python": python})})
    with pytest.raises(BackendError) as ei:
        launch(fn_report, [{"i": 1}], backend="odd", exp_prefix="odd", config=cfg,
               dispatcher=fast_dispatcher())
    msg = str(ei.value)
    assert "\n" not in msg and "'odd'" in msg and sshd_hosts[0].alias in msg
    assert "set `python:`" in msg
    if kind == "missing":
        assert "no Python at '/nonexistent/python3'" in msg
    else:
        assert f"Python {version[kind]} (/opt/py/bin/python3)" in msg
    # nothing was queued or started on the host
    root = host_path(sshd_hosts[0], f"/remote/{tmp_path.name}")
    assert not list(root.glob(".chester/sweeps/*.queue"))
    assert not any((root / "data").rglob("status.json"))


def test_a_secrets_file_is_never_synced_nor_left_behind(tmp_path, sshd_hosts, monkeypatch):
    """A secrets file inside the project travels only as the 0600 file the queue reads and
    removes; a submit that fails (here: uv is asked for and missing) leaves no copy."""
    opts = {"secrets": ["secrets.env"]}
    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, opts)})
    (project / "secrets.env").write_text("API_KEY=k-very-secret\n")
    sw = launch(fn_report, [{"i": 1, "env_names": ["API_KEY"]}], backend="box",
                exp_prefix="sec", config=cfg, dispatcher=fast_dispatcher())
    states = sw.wait(timeout=60, poll_interval=0.3, progress=False, pull=True)
    assert {s.value for s in states.values()} == {"succeeded"}
    res = json.loads((sw.runs[0].log_dir / "result.json").read_text())
    assert res["env"]["API_KEY"] == "k-very-secret"
    root = host_path(sshd_hosts[0], f"/remote/{tmp_path.name}")

    def leaked() -> list[str]:  # any file on the host but what the run itself wrote
        return [str(p) for p in root.rglob("*") if p.is_file() and p.name != "result.json"
                and b"k-very-secret" in p.read_bytes()]

    assert (root / "train.py").exists() and not (root / "secrets.env").exists()
    assert leaked() == []
    # a failed submit: the project asks for uv, which the host lacks (or cannot run)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0'\n")
    _, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {**opts,
                                                            "package_manager": "uv"})})
    with pytest.raises(BackendError) as ei:
        launch(fn_report, [{"i": 2}], backend="box", exp_prefix="sec2", config=cfg,
               dispatcher=fast_dispatcher())
    msg = str(ei.value)  # uv missing there, or failing: either way one line, before queueing
    assert "preparing the environment failed: uv" in msg and "\n" not in msg
    assert leaked() == []


def fn_count(variant, log_dir, exp_name):
    import time as _t

    for i in range(variant["n"]):
        print(f"line {i:03d}", flush=True)
        _t.sleep(variant["every"])


def test_logs_follow_goes_on_after_a_dropped_link_without_repeating(tmp_path, sshd_hosts):
    """sshd restarted (sessions killed) while `logs -f` follows: the retried call goes on from
    the byte it had reached, so every line arrives exactly once."""
    import threading

    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    sw = launch(fn_count, [{"n": 40, "every": 0.15}], backend="box", exp_prefix="follow",
                config=cfg, dispatcher=fast_dispatcher())
    run = sw.runs[0]
    out = io.StringIO()
    dropped = threading.Event()

    def drop_the_link() -> None:
        deadline = time.monotonic() + 60
        while "line 005" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
        sshd_hosts.restart_sshd(0, sessions=True)
        dropped.set()

    t = threading.Thread(target=drop_the_link)
    t.start()
    sw.logs(run.name, follow=True, out=out)  # retried by the dispatcher after the drop
    t.join(60)
    assert dropped.is_set()
    lines = out.getvalue().splitlines()
    assert lines == [f"line {i:03d}" for i in range(40)], lines


def test_ctrl_c_on_logs_follow_leaves_nothing_running_on_the_host(tmp_path, sshd_hosts):
    import signal

    project, cfg = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    sw = launch(fn_count, [{"n": 300, "every": 0.2}], backend="box", exp_prefix="ctrlc",
                config=cfg, dispatcher=fast_dispatcher())
    run = sw.runs[0]
    p = subprocess.Popen([CHESTER, "logs", "-f", run.name], cwd=project, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    first = p.stdout.readline()
    assert first.startswith("line"), first
    assert time.monotonic() < deadline

    def followers() -> list[str]:
        out = subprocess.run(["pgrep", "-af", f"target tail -f --from 0 {run.remote_dir}"],
                             capture_output=True, text=True).stdout
        return [ln for ln in out.splitlines() if "pgrep" not in ln]

    assert followers(), "the follower runs on the host while logs -f reads"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    end = time.monotonic() + 10
    while followers():
        assert time.monotonic() < end, followers()
        time.sleep(0.2)
    sw.cancel()


TRAINLIB = """
BUG = True

def train(variant, log_dir, exp_name):
    if BUG and variant["seed"] % 2:
        raise ValueError("loss is NaN")
"""

IMPORTING = """
import chester
from trainlib import train

sweep = chester.launch(train, [{"seed": s} for s in (1, 2)], backend="box", exp_prefix="lib")
sweep.wait(poll_interval=0.5, progress=False, pull=False)
"""


def test_relaunch_runs_the_fixed_imported_function_on_the_host(tmp_path, sshd_hosts):
    """The code is synced again and the function imported afresh on the host: a fix made
    after the launch is what the failed runs run; the earlier attempt's logs are kept."""
    project, _ = make_config(tmp_path, sshd_hosts, {"box": (0, {})})
    env = {**os.environ, "CHESTER_CONFIG_PATH": str(project / "chester.yaml")}
    (project / "trainlib.py").write_text(TRAINLIB)
    (project / "go.py").write_text(IMPORTING)
    r = subprocess.run([sys.executable, "go.py"], cwd=project, env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr

    def runs() -> list[dict]:
        st = subprocess.run([CHESTER, "status", "--json", "lib"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60)
        assert st.returncode == 0, st.stderr
        return sorted(json.loads(st.stdout)["runs"], key=lambda x: x["name"])

    assert [x["state"] for x in runs()] == ["failed", "succeeded"]
    (project / "trainlib.py").write_text(TRAINLIB.replace("BUG = True", "BUG = False"))
    r = subprocess.run([CHESTER, "relaunch", "lib", "--failed"], cwd=project, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 90
    while [x["state"] for x in runs()] != ["succeeded", "succeeded"]:
        assert time.monotonic() < deadline, runs()
        time.sleep(0.5)
    again, once = runs()
    assert [again["attempt"], once["attempt"]] == [2, 1]
    # the first attempt's logs stay beside the second's, in the host's folder
    rel = Path(again["log_dir"]).relative_to(project)
    folder = host_path(sshd_hosts[0], f"/remote/{tmp_path.name}/{rel}")
    assert "loss is NaN" in (folder / "stderr.1.log").read_text()
    assert "loss is NaN" not in (folder / "stderr.log").read_text()
