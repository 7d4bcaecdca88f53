"""The job store on its own, and what a launch leaves behind."""

from __future__ import annotations

import pytest

from chester.store import Store


def test_create_sweep_returns_the_rows_the_store_reads_back(tmp_path):
    store = Store(tmp_path / "jobs.db")
    (tmp_path / "b" / "4_old").mkdir(parents=True)  # numbering continues after it
    sweep, rows = store.create_sweep(
        exp_prefix="e", backend="slurm", batch_dir=tmp_path / "b", fingerprint="f",
        runs=[{"suffix": "a"}, {"name": "named"}, {"suffix": "c", "local_dir": "/x/y"}],
        remote_dir_for=lambda d: "/remote" + d)
    assert rows == store.runs(sweep.id)
    assert [r.name for r in rows] == ["5_a", "named", "7_c"]
    assert rows[2].remote_dir == "/remote/x/y"


def _noop(variant, log_dir, exp_name):
    return None


def test_launch_removes_its_staging_folder_and_a_dry_run_keeps_it(tmp_path):
    from chester.launcher import launch
    from chester.testing import ConformanceEnv

    env = ConformanceEnv.create(tmp_path, backend="local",
                                config={"backends": {"local": {"type": "local"}}})
    dry = launch(_noop, [{"i": 1}], backend="local", exp_prefix="dry", config=env.config,
                 dry_run=True)
    assert dry.prepared.staging_dir.is_dir()
    sweep = launch(_noop, [{"i": 1}], backend="local", exp_prefix="real", config=env.config)
    assert not sweep.prepared.staging_dir.exists()
    sweep.wait(timeout=60, poll_interval=0.2, progress=False)


# The schema as stores written before schema versions hold it (``user_version`` 0), verbatim.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exp_prefix TEXT NOT NULL,
    backend TEXT NOT NULL,
    batch_dir TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL,
    launch_complete INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
    idx INTEGER NOT NULL,
    number INTEGER NOT NULL,
    name TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    backend TEXT NOT NULL,
    local_dir TEXT NOT NULL,
    remote_dir TEXT NOT NULL,
    submit_state TEXT NOT NULL DEFAULT 'new',
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    stderr_tail TEXT,
    exit_code INTEGER,
    remote_id TEXT,
    host TEXT,
    handle TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    submitted_at REAL,
    started_at REAL,
    ended_at REAL,
    updated REAL NOT NULL,
    pulled_at REAL,
    pending_reason TEXT
);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep_id, idx);
CREATE TABLE IF NOT EXISTS events (
    run_id INTEGER NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS numbering (
    batch_dir TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);
"""


def _v1_store(path, project):
    """A store as the first schema wrote it: one sweep with one succeeded run."""
    import sqlite3

    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA_V1)
    db.execute("INSERT INTO sweeps(exp_prefix, backend, batch_dir, fingerprint, created, "
               "launch_complete, options) VALUES ('old', 'local', ?, 'fp', 1.0, 1, '{}')",
               (str(project / "data" / "train" / "old"),))
    db.execute("INSERT INTO runs(sweep_id, idx, number, name, token, backend, local_dir, "
               "remote_dir, submit_state, state, created, updated) VALUES "
               "(1, 0, 1, '1_old', 'tok', 'local', ?, ?, 'submitted', 'succeeded', 1.0, 1.0)",
               (str(project / "d" / "1_old"),) * 2)
    db.execute("INSERT INTO numbering(batch_dir, next) VALUES (?, 2)",
               (str(project / "data" / "train" / "old"),))
    db.close()


def test_a_store_of_the_first_schema_opens_and_is_migrated(tmp_path):
    import sqlite3

    from chester.store import SCHEMA_VERSION

    path = tmp_path / "jobs.db"
    _v1_store(path, tmp_path)
    store = Store(path)
    assert [r.name for r in store.runs()] == ["1_old"]
    assert store.runs()[0].state.value == "succeeded"
    s, rows = store.create_sweep(exp_prefix="old", backend="local",
                                 batch_dir=tmp_path / "data" / "train" / "old", fingerprint="g",
                                 runs=[{"suffix": "new"}])
    assert rows[0].name == "2_new"
    store.close()
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT name FROM sqlite_master WHERE name='runs_local_dir'").fetchone()


def test_a_store_from_a_newer_chester_is_refused_in_one_line(tmp_path):
    import sqlite3

    from chester.store import SCHEMA_VERSION, StoreError

    Store(tmp_path / "jobs.db").close()
    db = sqlite3.connect(str(tmp_path / "jobs.db"))
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError) as ei:
        Store(tmp_path / "jobs.db")
    assert "newer chester" in str(ei.value) and "\n" not in str(ei.value)


def test_an_empty_or_damaged_store_is_refused_not_replaced(tmp_path):
    from chester.store import StoreError

    path = tmp_path / "jobs.db"
    path.write_bytes(b"")
    with pytest.raises(StoreError) as ei:
        Store(path)
    assert "empty (0 bytes)" in str(ei.value) and "move it aside" in str(ei.value)
    assert path.stat().st_size == 0  # not turned into a fresh store
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    with pytest.raises(StoreError) as ei:
        Store(path)
    assert "damaged" in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(StoreError) as ei:
        Store(tmp_path / "none" / "jobs.db", create=False)
    assert "no job store" in str(ei.value)
    assert not (tmp_path / "none").exists()


def test_many_processes_creating_the_store_at_once_all_see_one_whole_store(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from chester.store import Store; s = Store(sys.argv[1]); "
            "s.create_sweep(exp_prefix='p', backend='local', batch_dir=sys.argv[2], "
            "fingerprint='f', runs=[{'suffix': 'x'}]); print(len(s.sweeps()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "jobs.db"),
                               str(tmp_path / "b")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = Store(tmp_path / "jobs.db")
    assert len(store.sweeps()) == 6
    # no half-made store file is left behind (only the store and SQLite's own files)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["jobs.db", "jobs.db-shm", "jobs.db-wal"]
    store.close()  # the last connection folds the log back into jobs.db
    assert sorted(f.name for f in tmp_path.iterdir()) == ["jobs.db"]


@pytest.mark.parametrize("content", [b"", b"garbage " * 500])
def test_every_command_reports_an_empty_or_damaged_store_in_one_line(tmp_path, content):
    from .helpers import make_project, run_chester

    project = make_project(tmp_path / "p")
    (project / ".chester").mkdir()
    (project / ".chester" / "jobs.db").write_bytes(content)
    for args in (["status"], ["status", "--all"], ["pull"], ["monitor"], ["logs", "x"],
                 ["cancel"]):
        r = run_chester(args, cwd=project)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "jobs.db" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert (project / ".chester" / "jobs.db").read_bytes() == content


def test_logs_without_a_store_creates_none(tmp_path):
    from .helpers import make_project, run_chester

    project = make_project(tmp_path / "p")
    r = run_chester(["logs", "some-run"], cwd=project)
    assert r.returncode == 2 and "no job store" in r.stderr
    assert not (project / ".chester").exists()


def test_a_store_dropped_in_another_thread_closes_without_a_warning(tmp_path):
    """The last reference to a store may go in any thread; SQLite refuses a close from
    another thread, and that must not surface as an ignored exception."""
    import sys
    import threading

    box = [Store(tmp_path / "jobs.db")]
    seen: list = []
    done = []

    def drop():
        hook = sys.unraisablehook
        sys.unraisablehook = seen.append
        try:
            box.clear()  # the store goes here, in this thread
        finally:
            sys.unraisablehook = hook
        done.append(True)

    t = threading.Thread(target=drop)
    t.start()
    t.join()
    assert done == [True] and box == []
    assert seen == [], [str(u.exc_value) for u in seen]


def test_run_tokens_are_unique_hex_and_a_launch_keeps_its_index_writes_together(
        tmp_path, monkeypatch):
    """Tokens start with the time: a later launch's tokens sort after an earlier one's, and
    adding a launch to a store of many runs writes a few pages of the token index, not
    pages all over it (measured in the write-ahead log, against fully random tokens)."""
    import os
    import re
    import time

    import chester.store as cs

    def launch(store, k, n=1000):
        return store.create_sweep(exp_prefix="e", backend="slurm", batch_dir=tmp_path / f"b{k}",
                                  fingerprint=f"f{k}", runs=[{"suffix": str(i)} for i in range(n)])

    store = Store(tmp_path / "jobs.db")
    _, first = launch(store, "first", 10)
    time.sleep(0.002)
    _, second = launch(store, "second", 10)
    tokens = [r.token for r in first + second]
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in tokens)
    assert len(set(tokens)) == len(tokens)
    assert max(r.token for r in first) < min(r.token for r in second)
    time.sleep(0.002)
    store.reset_for_retry([first[0].id])  # a new token, after every earlier one
    assert store.run(first[0].id).token > max(tokens)
    assert len(set(cs.new_tokens(100_000))) == 100_000

    def wal_growth_of_a_launch(tokens_of) -> int:
        monkeypatch.setattr(cs, "new_tokens", tokens_of)
        path = tmp_path / f"{tokens_of.__name__}.db"
        s = Store(path)
        for k in range(20):
            launch(s, f"{tokens_of.__name__}{k}")
        s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        launch(s, f"{tokens_of.__name__}-last")
        grown = os.path.getsize(f"{path}-wal")
        s.close()
        return grown

    def random_tokens(n):
        return [os.urandom(16).hex() for _ in range(n)]

    ordered, random = wal_growth_of_a_launch(cs.new_tokens), wal_growth_of_a_launch(random_tokens)
    assert ordered * 2 < random, (ordered, random)


def test_a_handle_is_stored_as_json_dumps_writes_it():
    """The JSON written for each submitted run (its extra encoded once per tuple) is exactly
    what ``json.dumps`` makes of the handle, for any strings."""
    import json

    from hypothesis import given
    from hypothesis import strategies as st

    from chester.store import handle_json
    from chester.types import RunHandle

    text = st.text()
    extra = st.lists(st.tuples(text, text), max_size=4).map(tuple)

    @given(st.lists(st.builds(
        RunHandle, run_id=st.integers(0, 2**62), token=text, backend=text, local_dir=text,
        remote_dir=text, remote_id=st.none() | text, host=st.none() | text, extra=extra),
        max_size=5), extra)
    def check(handles, shared):
        handles += [RunHandle(run_id=i, token="t", backend="b", local_dir="/l", remote_dir="/r",
                              extra=shared) for i in range(3)]  # one tuple, many runs
        memo: dict[int, str] = {}
        for h in handles:
            got = handle_json(h, memo)
            assert got == json.dumps(h.to_dict())
            assert RunHandle.from_dict(json.loads(got)) == h

    check()


def test_a_supervisors_history_lands_at_its_own_times_once(tmp_path):
    """What a supervisor did while nobody polled (``RunStatus.history``) joins the run's
    history at the times it happened, once however often the same journal is read."""
    from chester.types import RunStatus, State

    store = Store(tmp_path / "jobs.db")
    sweep, (row,) = store.create_sweep(exp_prefix="e", backend="slurm",
                                       batch_dir=tmp_path / "b", fingerprint="f",
                                       runs=[{"suffix": "a"}], remote_dir_for=lambda d: d)
    st = RunStatus(state=State.SUCCEEDED, attempt=2, history=[
        (100.0, "requeued", "requeued by the supervisor after lost (attempt 2)")])
    store.record_status([(row.id, st)])
    store.record_status([(row.id, st)])
    hist = store.history(row.id)
    assert hist[0] == (100.0, "requeued", "requeued by the supervisor after lost (attempt 2)")
    assert [h[1] for h in hist] == ["requeued", "succeeded"]
    assert store.run(row.id).attempt == 2
