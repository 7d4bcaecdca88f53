"""A slot of the local queue is held by the queue runner for as long as the run's worker
lives, never by what the run leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers import make_project, run_chester

DAEMON = textwrap.dedent("""
    import os, time, chester

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "started"), "w") as f:
            f.write(str(time.time()))
        if variant["i"] == 0:
            # a background child in its own session, outliving the run
            os.system(f"setsid sleep 45 & echo $! > {os.path.join(log_dir, 'daemon.pid')}")

    chester.launch(train, [{"i": 0}, {"i": 1}], exp_prefix="daemon")
""")


def test_a_runs_background_child_does_not_hold_its_slot(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = make_project(tmp_path / "proj",
                           "backends:\n  local:\n    type: local\n    max_parallel: 1\n")
    (project / "daemon.py").write_text(DAEMON)
    subprocess.run([sys.executable, "daemon.py"], cwd=project, check=True, timeout=60,
                   capture_output=True)
    batch = project / "data" / "train" / "daemon"
    daemon_pid = None
    try:
        r = run_chester(["monitor", "daemon", "--interval", "0.2", "--timeout", "30"],
                        cwd=project, timeout=60)
        pidfile = next(batch.glob("*/daemon.pid"))
        daemon_pid = int(pidfile.read_text())
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "2 succeeded" in r.stdout
        os.kill(daemon_pid, 0)  # the daemon still runs: it did not hold up the queue
        # and a later sweep on this machine gets the slot too
        (project / "later.py").write_text(textwrap.dedent("""
            import chester
            chester.launch(lambda v, d, n: None, [{"x": 1}], exp_prefix="later")
        """))
        subprocess.run([sys.executable, "later.py"], cwd=project, check=True, timeout=60,
                       capture_output=True)
        r = run_chester(["monitor", "later", "--interval", "0.2", "--timeout", "20"],
                        cwd=project, timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr)
    finally:
        if daemon_pid:
            os.kill(daemon_pid, signal.SIGKILL)
    starts = sorted(float(p.read_text()) for p in batch.glob("*/started"))
    assert len(starts) == 2 and starts[1] - starts[0] < 20


def test_the_slot_lock_is_not_open_in_the_run(tmp_path, monkeypatch):
    slots = tmp_path / "slots"
    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(slots))
    project = make_project(tmp_path / "proj",
                           "backends:\n  local:\n    type: local\n    max_parallel: 1\n")
    (project / "fds.py").write_text(textwrap.dedent("""
        import os, chester

        def train(variant, log_dir, exp_name):
            links = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                     if os.path.exists(f"/proc/self/fd/{fd}")]
            with open(os.path.join(log_dir, "fds.txt"), "w") as f:
                f.write("\\n".join(links))

        chester.launch(train, [{"i": 0}], exp_prefix="fds")
    """))
    subprocess.run([sys.executable, "fds.py"], cwd=project, check=True, timeout=60,
                   capture_output=True)
    r = run_chester(["monitor", "fds", "--interval", "0.2", "--timeout", "30"], cwd=project)
    assert r.returncode == 0, (r.stdout, r.stderr)
    fds = next((project / "data" / "train" / "fds").glob("*/fds.txt")).read_text()
    assert "slot-" not in fds, fds
    assert Path(slots / "slot-0.lock").exists()


SUDDEN = textwrap.dedent("""
    import ctypes, os, chester

    def train(variant, log_dir, exp_name):
        if variant["how"] == "segv":
            ctypes.string_at(0)
        os._exit(variant["code"])

    chester.launch(train, [{"how": "segv", "code": 0}, {"how": "exit", "code": 3},
                           {"how": "exit", "code": 0}], exp_prefix="sudden")
""")


def test_a_run_killed_by_a_signal_or_os_exit_is_recorded_with_it(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
    project = make_project(tmp_path / "proj",
                           "backends:\n  local:\n    type: local\n    max_parallel: 2\n")
    (project / "sudden.py").write_text(SUDDEN)
    subprocess.run([sys.executable, "sudden.py"], cwd=project, check=True, timeout=60,
                   capture_output=True)
    r = run_chester(["monitor", "sudden", "--interval", "0.2", "--timeout", "30"], cwd=project)
    assert r.returncode == 1, (r.stdout, r.stderr)
    st = json.loads(run_chester(["status", "--json", "sudden"], cwd=project).stdout)
    runs = st["runs"]
    assert [x["state"] for x in runs] == ["failed"] * 3
    assert "SIGSEGV (11)" in runs[0]["reason"] and runs[0]["exit_code"] == 139
    assert "exited with code 3" in runs[1]["reason"] and runs[1]["exit_code"] == 3
    assert "exited with code 0 without recording" in runs[2]["reason"]


FILL = textwrap.dedent("""
    import os, chester

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "big.bin"), "wb") as f:
            while True:
                f.write(b"x" * 65536)
                f.flush()

    chester.launch(train, [{"i": 0}], exp_prefix="full")
""")


def test_a_full_disk_is_reported_as_such(tmp_path, monkeypatch):
    import json

    import pytest

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(tiny)],
                       capture_output=True, text=True)
    if m.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {m.stderr.strip()}")
    try:
        monkeypatch.setenv("CHESTER_SLOTS_DIR", str(tmp_path / "slots"))
        project = make_project(tmp_path / "proj", f"log_dir: {tiny}\n"
                               "backends:\n  local:\n    type: local\n    max_parallel: 1\n")
        (project / "fill.py").write_text(FILL)
        subprocess.run([sys.executable, "fill.py"], cwd=project, check=True, timeout=60,
                       capture_output=True)
        run_chester(["monitor", "full", "--interval", "0.2", "--timeout", "30"], cwd=project)
        st = json.loads(run_chester(["status", "--json", "full"], cwd=project).stdout)
        run = st["runs"][0]
        assert run["state"] == "failed", run
        assert "no space left on the file system of" in run["reason"], run["reason"]
        assert "killed?" not in run["reason"]
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)


def test_a_workers_exit_is_recorded_for_the_attempt_it_was_started_for(tmp_path):
    """The runner records a worker's exit after it started the next run; by then the run may
    have been submitted again (attempt 2): the record names attempt 1, so the new attempt is
    not read as having exited before it started."""
    import json

    from chester.target import rundir as rd
    from chester.target import runner

    run_dir = tmp_path / "run"
    (run_dir / rd.RUN_JSON).parent.mkdir(parents=True)
    (run_dir / rd.RUN_JSON).write_text(json.dumps({"token": "t1", "attempt": 1}))
    workers = runner._Workers()
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    workers.add(child, (0, os.open(os.devnull, os.O_RDONLY)), run_dir)
    child.wait()
    workers.reap()
    (run_dir / rd.RUN_JSON).write_text(json.dumps({"token": "t1", "attempt": 2}))
    workers.record_ended()
    workers.release()
    exit_record = json.loads((run_dir / rd.EXIT).read_text())
    assert exit_record == {"token": "t1", "attempt": 1, "returncode": 3}
