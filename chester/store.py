"""The job store: one SQLite file per project, ``<project>/.chester/jobs.db``.

Every side effect is preceded by a write here, so a launcher killed at any instant can be
run again: runs already submitted are not submitted again, runs never submitted are. WAL
mode and ``BEGIN IMMEDIATE`` transactions let several launchers share the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

import attrs

from chester.plugin.errors import ChesterError, UserError
from chester.plugin.records import RunHandle, RunStatus, State

#: The schema this code writes, kept in the file's ``PRAGMA user_version``. Version 1 is the
#: first schema (written before stores carried a version: ``user_version`` 0 with tables).
SCHEMA_VERSION = 4

#: Steps from each version to the next; each runs inside the transaction that opens the store.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("CREATE INDEX IF NOT EXISTS runs_local_dir ON runs(local_dir)",),
    # what each launch ran (a launch made before reads NULL: unknown, adopted by the next
    # launch of the same variants), and the run that took over a run's folder
    2: ("ALTER TABLE sweeps ADD COLUMN what_runs TEXT",
        "ALTER TABLE runs ADD COLUMN reused_by TEXT"),
    # the member of a pool each run was placed on (NULL: the run's backend itself), and
    # the member a run was moved from before it started (a run moves at most once)
    3: ("ALTER TABLE runs ADD COLUMN member TEXT",
        "ALTER TABLE runs ADD COLUMN moved_from TEXT"),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exp_prefix TEXT NOT NULL,
    backend TEXT NOT NULL,
    batch_dir TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL,
    launch_complete INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}',
    what_runs TEXT
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
    pending_reason TEXT,
    reused_by TEXT,
    member TEXT,
    moved_from TEXT
);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep_id, idx);
CREATE INDEX IF NOT EXISTS runs_local_dir ON runs(local_dir);
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


@attrs.frozen(kw_only=True)
class SweepRow:
    id: int
    exp_prefix: str
    backend: str
    batch_dir: str
    fingerprint: str
    created: float
    launch_complete: bool
    options: dict
    #: a digest of what the launch runs (the function or command and the project's code);
    #: None for a launch recorded before chester kept it
    what_runs: str | None = None

    @property
    def ref(self) -> str:
        """``PREFIX@N``: this launch on the command line."""
        return f"{self.exp_prefix}@{self.id}"


@attrs.frozen(kw_only=True)
class RunRow:
    id: int
    sweep_id: int
    idx: int
    number: int
    name: str
    token: str
    backend: str
    local_dir: str
    remote_dir: str
    submit_state: str
    state: State
    reason: str | None
    stderr_tail: str | None
    exit_code: int | None
    remote_id: str | None
    host: str | None
    handle: RunHandle | None
    attempt: int
    created: float
    submitted_at: float | None
    started_at: float | None
    ended_at: float | None
    updated: float
    pulled_at: float | None
    pending_reason: str | None
    #: ``PREFIX@N`` of the launch whose run took this run's folder over (the seed API and
    #: Hydra reuse fixed folders); such a run is never submitted or pulled again
    reused_by: str | None = None
    #: the pool member the run was placed on (None: not a pool's run, or not placed yet)
    member: str | None = None
    #: the member the run was moved from, before it started there (it moves once at most)
    moved_from: str | None = None

    @property
    def where(self) -> str:
        """The backend whose hooks own the run: its pool member, else its backend."""
        return self.member or self.backend


def _run_row(r: sqlite3.Row) -> RunRow:
    d = dict(r)
    d["state"] = State(d["state"])
    d["handle"] = RunHandle.from_dict(json.loads(d["handle"])) if d["handle"] else None
    return RunRow(**d)


def _sweep_row(r: sqlite3.Row) -> SweepRow:
    d = dict(r)
    d["launch_complete"] = bool(d["launch_complete"])
    d["options"] = json.loads(d["options"])
    return SweepRow(**d)


_NUMBERED = re.compile(r"^(\d+)_")


def handle_json(h: RunHandle, extras: dict[int, str]) -> str:
    """``json.dumps(h.to_dict())``, with each ``extra`` tuple encoded once: a backend gives
    the runs of one job the same tuple, so a 1,000-run array encodes one (``extras`` maps
    the ids of the tuples seen, alive while their handles are, to their JSON)."""
    ex = extras.get(id(h.extra))
    if ex is None:
        ex = extras[id(h.extra)] = json.dumps([list(p) for p in h.extra])
    return (f'{{"run_id": {int(h.run_id)}, "token": {_json_str(h.token)}, '
            f'"backend": {_json_str(h.backend)}, "local_dir": {_json_str(h.local_dir)}, '
            f'"remote_dir": {_json_str(h.remote_dir)}, "remote_id": {_json_str(h.remote_id)}, '
            f'"host": {_json_str(h.host)}, "extra": {ex}}}')


def _json_str(v: str | None) -> str:
    return "null" if v is None else encode_basestring_ascii(v)


def new_tokens(n: int) -> list[str]:
    """``n`` new run tokens: 32 hex digits, the first 12 the time in milliseconds, the
    other 20 random (80 bits, from one draw for all of them).

    The time first keeps a launch's tokens together in the store's unique index on
    ``token``: a 1,000-run launch adds to the index's last pages instead of rewriting
    pages all over it (with fully random tokens, a store of 30,000 runs wrote some 3 MB to
    its log per launch, against 0.5 MB)."""
    ms = f"{time.time_ns() // 1_000_000:012x}"[-12:]
    rand = os.urandom(10 * n).hex()
    return [ms + rand[20 * i:20 * i + 20] for i in range(n)]


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=60000")
    return db


def _create_schema(db: sqlite3.Connection) -> None:
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _create_store_file(path: Path) -> None:
    """Write a new, empty store beside ``path`` and link it into place (never over a store
    another process made meanwhile), so no process ever sees a half-made file."""
    import uuid  # only here: uuid imports platform, which a launch does not need

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        db = _connect(tmp)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            _create_schema(db)
            db.execute("COMMIT")
        finally:
            db.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another launcher made it first: use theirs
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass


class StoreError(ChesterError):
    """The job store is missing, empty, damaged, read-only, on a full disk, locked or from
    a newer chester (one line, with the fix)."""


#: SQLite's primary result codes that say what went wrong
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_KEPT = "(run folders already on disk are kept and never reused)"


def _read_only_reason(path: Path) -> str | None:
    """Why the store at ``path`` cannot be written, if it cannot: a read-only file system,
    or a folder / file / write-ahead file this user may not write."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # .chester not made yet
        folder = folder.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"its file system is mounted read-only ({folder})"
    except OSError:
        pass
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by this user"
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists() and not os.access(p, os.W_OK):
            return f"{p} is not writable by this user"
    return None


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    # SQLite needs a few pages at least; the reserved blocks are root's alone
    free = st.f_bavail if os.geteuid() != 0 else st.f_bfree
    return free * st.f_frsize < 64 * 1024


def explain(exc: BaseException, path: Path | None) -> StoreError:
    """One line saying what is wrong with the job store at ``path``, from the SQLite (or OS)
    error ``exc``: read-only, disk full, locked, or damaged, each with its fix. Only a file
    SQLite finds damaged is called damaged; the other cases leave the store as it is."""
    where = f"the job store {path}" if path is not None else "the job store"
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    low = text.lower()
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or primary == _SQLITE_FULL \
            or "disk is full" in low or (path is not None and primary in (
                _SQLITE_IOERR, _SQLITE_CANTOPEN) and _disk_full(path)):
        return StoreError(f"{where} cannot be written: its disk is full ({text}); free some "
                          "space and run the command again (the store is unharmed; nothing "
                          "was recorded by the command that stopped)")
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in low:
        return StoreError(f"{where} is locked by another process ({text}), which has held "
                          "it for over a minute; let that chester command finish (or stop "
                          "it) and run this one again")
    ro = _read_only_reason(path) if path is not None else None
    if ro is not None or primary == _SQLITE_READONLY or "readonly" in low \
            or "read-only" in low:
        why = ro or text
        return StoreError(f"{where} cannot be written: {why}; make it writable again (or "
                          "run chester where the project is writable) — the store itself is "
                          "fine, keep it")
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in low \
            or "not a database" in low:
        return StoreError(f"{where} is damaged ({text}); restore it from a backup, or move "
                          f"it aside to start a new store {_KEPT}")
    if primary == _SQLITE_IOERR or "disk i/o" in low:
        return StoreError(f"{where} could not be read or written: the disk reported an I/O "
                          f"error ({text}); check the disk and run the command again")
    if primary == _SQLITE_CANTOPEN or "unable to open" in low:
        return StoreError(f"{where} could not be opened ({text}); check that the folder "
                          f"{path.parent if path is not None else '.chester'} exists and "
                          "this user can read and write it")
    return StoreError(f"{where} could not be used ({text})")


def _heal_sidecars(path: Path) -> None:
    """Give back write permission to the write-ahead files (``-wal``, ``-shm``) of a store
    that is writable again: SQLite made them with the store's mode while it was read-only
    (0444), and would go on opening them read-only."""
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            st = os.stat(side)
        except OSError:
            continue
        if st.st_mode & 0o200 or st.st_uid != os.geteuid():
            continue
        try:
            mode = os.stat(path).st_mode & 0o666
            if mode & 0o200 and os.access(path, os.W_OK):
                os.chmod(side, mode)
        except OSError:
            pass


class RunFolderTaken(UserError):
    """A new run would reuse a run folder that is on disk or belongs to another run."""


class RunFolderActive(RunFolderTaken):
    """A launch that takes fixed folders over met one whose run has not ended."""


@attrs.frozen(kw_only=True)
class Recorded:
    """What :meth:`Store.record_launch` did."""

    sweep: SweepRow
    runs: list[RunRow]
    #: True: ``sweep`` is an earlier launch, reattached
    resumed: bool
    #: the latest earlier launch with the same variants, when a new launch was made anyway
    previous: SweepRow | None = None
    #: the earlier runs whose folders the new runs took over
    taken: tuple[RunRow, ...] = ()


class _Rollback(Exception):
    """Ends a dry :meth:`Store.record_launch`'s transaction, keeping nothing."""

    def __init__(self, recorded: Recorded):
        super().__init__("dry run")
        self.recorded = recorded


def _close_quietly(db: sqlite3.Connection) -> None:
    """Close a store's connection; from another thread than its own (the garbage collector
    runs anywhere) SQLite refuses, and the connection closes when it is freed instead."""
    try:
        db.close()
    except sqlite3.ProgrammingError:
        pass


class Store:
    """Access to one project's job store.

    ``create=False`` opens only a store that exists (read-only commands never make one).
    A zero-byte file is refused, not taken for a new store: a new store is written whole
    under another name and linked into place, so a store of zero bytes is one that lost its
    content (and the record of what was launched, whose folders may still be on disk).
    """

    def __init__(self, path: Path, *, create: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"no job store at {self.path}: nothing was launched from this "
                                 "project (run a launch first, or cd into the project)")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _create_store_file(self.path)
            except (OSError, sqlite3.DatabaseError) as exc:
                raise explain(exc, self.path) from None
        elif self.path.stat().st_size == 0:
            raise StoreError(
                f"the job store {self.path} is empty (0 bytes): the record of every launch is "
                "gone; restore it from a backup, or move it aside to start a new store (run "
                "folders already on disk are kept and never reused)")
        _heal_sidecars(self.path)
        try:
            self._db = _connect(self.path)
            # closed when the store goes, or at exit: the last connection to a file folds
            # its write-ahead log back into jobs.db (a connection outlives its store, in a
            # cycle with its statement cache, until the garbage collector runs)
            self._closer = weakref.finalize(self, _close_quietly, self._db)
            self._wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise explain(exc, self.path) from None

    @classmethod
    def in_memory(cls) -> Store:
        """An empty store that lives in memory only: what a dry run plans with in a project
        that has no store yet (a dry run creates none)."""
        self = cls.__new__(cls)
        self.path = Path(":memory:")
        self._db = _connect(self.path)
        self._closer = weakref.finalize(self, _close_quietly, self._db)
        _create_schema(self._db)
        return self

    def _migrate(self) -> None:
        """Bring the file to :data:`SCHEMA_VERSION` (one transaction; readers wait for it)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with self.tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the job store {self.path} was written by a newer chester (schema "
                    f"{version}, this one knows {SCHEMA_VERSION}): upgrade chester-ml")
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table' "
                                "AND name='runs'").fetchone()[0]
            if version == 0 and not tables:  # a new file
                _create_schema(db)
                return
            version = max(version, 1)
            while version < SCHEMA_VERSION:
                for stmt in MIGRATIONS[version]:
                    db.execute(stmt)
                version += 1
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _wal(self, patience_s: float = 60.0) -> None:
        """Switch to WAL. Two processes creating the store at once can meet here, and SQLite
        answers "database is locked" at once (no busy handler for this step): try again."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self._closer()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: writers queue up instead of failing. A store that
        cannot be written raises :class:`StoreError` saying why (:func:`explain`)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise explain(exc, self.path) from None
        try:
            yield self._db
        except BaseException as exc:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (a full disk, an I/O error)
            if isinstance(exc, sqlite3.DatabaseError):
                raise explain(exc, self.path) from None
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise explain(exc, self.path) from None

    # -- sweeps ---------------------------------------------------------------------------
    def find_resumable(self, exp_prefix: str, backend: str, fingerprint: str,
                       incomplete_only: bool = False) -> SweepRow | None:
        """The latest sweep launched with the same fingerprint (optionally: not completed)."""
        extra = " AND launch_complete=0" if incomplete_only else ""
        r = self._db.execute(
            "SELECT * FROM sweeps WHERE exp_prefix=? AND backend=? AND fingerprint=?" + extra +
            " ORDER BY id DESC LIMIT 1", (exp_prefix, backend, fingerprint)
        ).fetchone()
        return _sweep_row(r) if r else None

    def create_sweep(self, *, exp_prefix: str, backend: str, batch_dir: Path, fingerprint: str,
                     runs: Sequence[dict[str, Any]], options: dict | None = None,
                     remote_dir_for: Any = None) -> tuple[SweepRow, list[RunRow]]:
        """Create a sweep and its runs in one transaction, numbering runs atomically.

        ``runs`` items carry ``suffix`` (the name after the number) or ``name``, and
        optionally ``local_dir``. Numbers continue from the larger of the store's counter
        and the ``N_*`` folders already in ``batch_dir``. Raises :class:`RunFolderTaken`
        (and writes nothing) when two runs would share a folder, or a run would reuse a
        folder already on disk or owned by another run. Returns the sweep and its runs (as
        :meth:`runs` would read them back).
        """
        rec = self.record_launch(
            exp_prefix=exp_prefix, backend=backend, batch_dir=batch_dir, fingerprint=fingerprint,
            runs=runs, options=options, remote_dir_for=remote_dir_for)
        return rec.sweep, rec.runs

    def record_launch(
            self, *, exp_prefix: str, backend: str, batch_dir: Path, fingerprint: str,
            runs: Sequence[dict[str, Any]] | Callable[[], Sequence[dict[str, Any]]],
            options: dict | None = None, remote_dir_for: Callable[[str], str] | None = None,
            resume: Sequence[str] = (), incomplete_only: bool = False,
            reattach: Callable[[SweepRow], bool] | None = None, what_runs: str | None = None,
            take_over: bool = False, dry: bool = False) -> Recorded:
        """Find the latest launch with one of the ``resume`` fingerprints (see
        :meth:`find_resumable`) and reattach to it when ``reattach(launch)`` says so (default:
        always); else record a new launch (see :meth:`create_sweep`). Looked up and created
        in one write transaction: two launchers of one sweep at once make one sweep.

        ``runs`` may be a callable returning the run specs, called only when a new launch is
        made. ``take_over``: the new runs may take folders that ended runs own (each such
        run then reads ``reused_by`` the new launch) or that are on disk; a folder whose run
        has not ended is refused (:class:`RunFolderActive`). ``dry``: nothing is kept (the
        transaction is rolled back): what a launch would be, numbers and all.
        """
        try:
            with self.tx():
                rec = self._record_launch(
                    exp_prefix=exp_prefix, backend=backend, batch_dir=batch_dir,
                    fingerprint=fingerprint, runs=runs, options=options,
                    remote_dir_for=remote_dir_for, resume=resume,
                    incomplete_only=incomplete_only, reattach=reattach, what_runs=what_runs,
                    take_over=take_over)
                if dry:
                    raise _Rollback(rec)
        except _Rollback as rb:
            return rb.recorded
        return rec

    def _record_launch(self, *, exp_prefix: str, backend: str, batch_dir: Path,
                       fingerprint: str, runs: Any, options: dict | None,
                       remote_dir_for: Callable[[str], str] | None, resume: Sequence[str],
                       incomplete_only: bool, reattach: Callable[[SweepRow], bool] | None,
                       what_runs: str | None, take_over: bool) -> Recorded:
        """:meth:`record_launch` inside its transaction."""
        previous = None
        for fp in resume:
            found = self.find_resumable(exp_prefix, backend, fp, incomplete_only=incomplete_only)
            if found is not None:
                if reattach is None or reattach(found):
                    return Recorded(sweep=found, runs=self.runs(found.id), resumed=True)
                previous = found
                break
            if incomplete_only and previous is None:  # named in the new launch's line
                previous = self.find_resumable(exp_prefix, backend, fp)
        now = time.time()
        db = self._db
        specs = list(runs() if callable(runs) else runs)
        cur = db.execute(
            "INSERT INTO sweeps(exp_prefix, backend, batch_dir, fingerprint, created, options, "
            "what_runs) VALUES (?,?,?,?,?,?,?)",
            (exp_prefix, backend, str(batch_dir), fingerprint, now, json.dumps(options or {}),
             what_runs))
        assert cur.lastrowid is not None
        sweep_id = int(cur.lastrowid)
        row = db.execute("SELECT next FROM numbering WHERE batch_dir=?",
                         (str(batch_dir),)).fetchone()
        nxt = max(row["next"] if row else 1, _next_on_disk(batch_dir))
        batch = str(batch_dir)
        values = []
        tokens = new_tokens(len(specs))
        for idx, spec in enumerate(specs):
            number = nxt + idx
            name = spec.get("name") or f"{number}_{spec['suffix']}"
            local_dir = str(spec.get("local_dir") or os.path.join(batch, name))
            remote_dir = remote_dir_for(local_dir) if remote_dir_for else local_dir
            values.append((sweep_id, idx, number, name, tokens[idx],
                           backend, local_dir, remote_dir, now, now))
        taken = self._check_folders_free(db, [v[6] for v in values], take_over=take_over)
        db.executemany(
            "INSERT INTO runs(sweep_id, idx, number, name, token, backend, local_dir, "
            "remote_dir, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?)", values)
        db.execute("INSERT INTO numbering(batch_dir, next) VALUES (?,?) "
                   "ON CONFLICT(batch_dir) DO UPDATE SET next=excluded.next",
                   (str(batch_dir), nxt + len(specs)))
        r = _sweep_row(db.execute("SELECT * FROM sweeps WHERE id=?", (sweep_id,)).fetchone())
        if taken:
            db.executemany("UPDATE runs SET reused_by=?, updated=? WHERE id=?",
                           [(r.ref, now, t.id) for t in taken])
        ids = [i for (i,) in db.execute("SELECT id FROM runs WHERE sweep_id=? ORDER BY idx",
                                        (sweep_id,))]
        # the new rows as inserted (the columns' defaults filled in), not read back
        new = [RunRow(id=i, sweep_id=sweep_id, idx=idx, number=number, name=name, token=token,
                      backend=backend, local_dir=local_dir, remote_dir=remote_dir,
                      submit_state="new", state=State.PENDING, reason=None, stderr_tail=None,
                      exit_code=None, remote_id=None, host=None, handle=None, attempt=1,
                      created=now, submitted_at=None, started_at=None, ended_at=None,
                      updated=now, pulled_at=None, pending_reason=None)
               for i, (_, idx, number, name, token, backend, local_dir, remote_dir, _, _)
               in zip(ids, values, strict=True)]
        return Recorded(sweep=r, runs=new, resumed=False, previous=previous, taken=tuple(taken))

    def owners(self, dirs: Sequence[str]) -> list[RunRow]:
        """The runs that own these folders (not those whose folder was taken over)."""
        out: list[RunRow] = []
        for i in range(0, len(dirs), 500):
            chunk = list(dirs[i:i + 500])
            out += [_run_row(r) for r in self._db.execute(
                f"SELECT * FROM runs WHERE local_dir IN ({','.join('?' * len(chunk))}) "
                "AND reused_by IS NULL ORDER BY id", chunk)]
        return out

    def set_what_runs(self, sweep_id: int, what_runs: str | None, options: dict) -> None:
        """Record what a launch runs now (a launch from before chester kept it, or one whose
        failed runs were submitted again with the current code)."""
        with self.tx() as db:
            db.execute("UPDATE sweeps SET what_runs=?, options=? WHERE id=?",
                       (what_runs, json.dumps(options), sweep_id))

    def _check_folders_free(self, db: sqlite3.Connection, dirs: Sequence[str], *,
                            take_over: bool = False) -> list[RunRow]:
        """No two new runs share a folder; none takes a folder on disk or another run's —
        unless ``take_over``, which may take those of runs that ended (returned) and folders
        on disk, and refuses the folder of a run that has not ended."""
        seen: dict[str, str] = {}
        for d in dirs:
            key = os.path.normpath(d).casefold()  # one folder on a case-insensitive disk too
            if key in seen:
                raise RunFolderTaken(
                    f"two runs would share the folder {d} (names that differ only in "
                    "characters a folder name cannot hold, or in case, become one folder); "
                    "give each run a distinct name")
            seen[key] = d
        owners = self.owners(dirs)
        if owners and not take_over:
            hit = owners[0]
            raise RunFolderTaken(
                f"the run folder {hit.local_dir} belongs to the earlier run {hit.name!r}; "
                "choose other names (exp_names/run_dirs), or relaunch that sweep to run its "
                "runs again")
        for o in owners:
            if not o.state.terminal and o.submit_state != "new":
                launch = _sweep_row(db.execute("SELECT * FROM sweeps WHERE id=?",
                                               (o.sweep_id,)).fetchone())
                raise RunFolderActive(
                    f"the run folder {o.local_dir} belongs to run {o.name!r} of "
                    f"{launch.ref}, which is still {o.state.value}: wait for it to end, or "
                    f"cancel it (chester cancel {launch.ref}), then launch again")
        if not take_over:
            for d in dirs:
                if os.path.lexists(d):
                    raise RunFolderTaken(
                        f"the run folder {d} already exists; a new run never reuses a folder: "
                        "choose another name, or move that folder away")
        return owners

    def sweep(self, sweep_id: int) -> SweepRow:
        r = self._db.execute("SELECT * FROM sweeps WHERE id=?", (sweep_id,)).fetchone()
        if r is None:
            raise KeyError(sweep_id)
        return _sweep_row(r)

    def latest_sweep(self, exp_prefix: str | None = None) -> SweepRow | None:
        if exp_prefix is None:
            r = self._db.execute("SELECT * FROM sweeps ORDER BY id DESC LIMIT 1").fetchone()
        else:
            r = self._db.execute("SELECT * FROM sweeps WHERE exp_prefix=? ORDER BY id DESC LIMIT 1",
                                 (exp_prefix,)).fetchone()
        return _sweep_row(r) if r else None

    def sweeps(self, exp_prefix: str | None = None) -> list[SweepRow]:
        if exp_prefix is None:
            rows = self._db.execute("SELECT * FROM sweeps ORDER BY id").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM sweeps WHERE exp_prefix=? ORDER BY id",
                                    (exp_prefix,)).fetchall()
        return [_sweep_row(r) for r in rows]

    def mark_launch_complete(self, sweep_id: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE sweeps SET launch_complete=1 WHERE id=?", (sweep_id,))

    # -- runs -----------------------------------------------------------------------------
    def runs(self, sweep_id: int | None = None) -> list[RunRow]:
        if sweep_id is None:
            rows = self._db.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM runs WHERE sweep_id=? ORDER BY idx",
                                    (sweep_id,)).fetchall()
        return [_run_row(r) for r in rows]

    def experiment_runs(self, exp_prefix: str) -> list[RunRow]:
        """Every run of every launch named ``exp_prefix``, in the order of their numbers
        (the ``N_`` of their folders), launch by launch where numbers tie."""
        rows = self._db.execute(
            "SELECT runs.* FROM runs JOIN sweeps ON runs.sweep_id = sweeps.id "
            "WHERE sweeps.exp_prefix=? ORDER BY runs.number, runs.sweep_id, runs.idx",
            (exp_prefix,)).fetchall()
        return [_run_row(r) for r in rows]

    def run(self, run_id: int) -> RunRow:
        r = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(run_id)
        return _run_row(r)

    def find_runs(self, ref: str) -> list[RunRow]:
        """Runs matching a name, a token, a numeric id or a run folder."""
        q = "SELECT * FROM runs WHERE name=? OR token=? OR local_dir=?"
        args: list[Any] = [ref, ref, str(Path(ref).resolve()) if ref else ref]
        if ref.isdigit():
            q += " OR id=?"
            args.append(int(ref))
        rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [_run_row(r) for r in rows]

    def set_submit_state(self, run_ids: Sequence[int], submit_state: str) -> None:
        now = time.time()
        with self.tx() as db:
            db.executemany("UPDATE runs SET submit_state=?, updated=? WHERE id=?",
                           [(submit_state, now, i) for i in run_ids])

    def record_submitted(self, handles: Sequence[RunHandle]) -> None:
        now = time.time()
        extras: dict[int, str] = {}
        with self.tx() as db:
            db.executemany(
                "UPDATE runs SET submit_state='submitted', handle=?, remote_id=?, host=?, "
                "submitted_at=?, updated=?, state=CASE WHEN state='pending' THEN 'queued' "
                "ELSE state END WHERE id=?",
                [(handle_json(h, extras), h.remote_id, h.host, now, now, h.run_id)
                 for h in handles])
            db.executemany("INSERT INTO events(run_id, at, state, reason) VALUES (?,?,?,?)",
                           [(h.run_id, now, "queued", "submitted") for h in handles])

    def record_status(self, updates: Sequence[tuple[int, RunStatus]]) -> None:
        """Store new states; a state change is appended to the run's history."""
        now = time.time()
        with self.tx() as db:
            for run_id, st in updates:
                old = db.execute("SELECT state, attempt FROM runs WHERE id=?", (run_id,)).fetchone()
                if old is None:
                    continue
                db.execute(
                    "UPDATE runs SET state=?, reason=?, stderr_tail=?, exit_code=?, "
                    "remote_id=COALESCE(?, remote_id), host=COALESCE(?, host), "
                    "attempt=COALESCE(?, attempt), started_at=COALESCE(?, started_at), "
                    "ended_at=COALESCE(?, ended_at), pending_reason=?, updated=? WHERE id=?",
                    (st.state.value, st.reason, st.stderr_tail, st.exit_code, st.remote_id,
                     st.host, st.attempt, st.started_at, st.ended_at, st.pending_reason, now,
                     run_id))
                if old["state"] != st.state.value or (st.attempt and st.attempt != old["attempt"]):
                    db.execute("INSERT INTO events(run_id, at, state, reason) VALUES (?,?,?,?)",
                               (run_id, now, st.state.value, st.reason))
                for at, state, reason in st.history:  # a supervisor's, at its own times
                    if db.execute("SELECT 1 FROM events WHERE run_id=? AND at=? AND state=?",
                                  (run_id, at, state)).fetchone() is None:
                        db.execute("INSERT INTO events(run_id, at, state, reason) "
                                   "VALUES (?,?,?,?)", (run_id, at, state, reason))

    def discard_sweep(self, sweep_id: int) -> bool:
        """Delete a sweep none of whose runs was ever submitted (a launch that failed before
        sending anything). Returns False, deleting nothing, if any run was submitted."""
        with self.tx() as db:
            sent = db.execute("SELECT count(*) FROM runs WHERE sweep_id=? AND "
                              "submit_state!='new'", (sweep_id,)).fetchone()[0]
            if sent:
                return False
            db.execute("DELETE FROM events WHERE run_id IN "
                       "(SELECT id FROM runs WHERE sweep_id=?)", (sweep_id,))
            db.execute("DELETE FROM runs WHERE sweep_id=?", (sweep_id,))
            db.execute("DELETE FROM sweeps WHERE id=?", (sweep_id,))
        return True

    def reset_for_retry(self, run_ids: Sequence[int]) -> None:
        """Make ended runs new submissions of themselves: same folder and name, a new token
        (so no target mistakes the new start for the old one) and the next attempt number."""
        now = time.time()
        with self.tx() as db:
            for run_id in run_ids:
                db.execute(
                    "UPDATE runs SET token=?, attempt=attempt+1, submit_state='new', "
                    "state='pending', reason=NULL, stderr_tail=NULL, exit_code=NULL, "
                    "remote_id=NULL, handle=NULL, submitted_at=NULL, started_at=NULL, "
                    "ended_at=NULL, pulled_at=NULL, pending_reason=NULL, updated=? WHERE id=?",
                    (new_tokens(1)[0], now, run_id))
                db.execute("INSERT INTO events(run_id, at, state, reason) VALUES (?,?,?,?)",
                           (run_id, now, "pending", "submitted again"))

    def place(self, placed: Sequence[tuple[int, str, str]]) -> None:
        """Record each run's pool member and its folder there, ``(run_id, member,
        remote_dir)``, before it is submitted to that member."""
        now = time.time()
        with self.tx() as db:
            db.executemany("UPDATE runs SET member=?, remote_dir=?, updated=? WHERE id=? "
                           "AND submit_state='new'", [(m, d, now, i) for i, m, d in placed])
            db.executemany("INSERT INTO events(run_id, at, state, reason) VALUES (?,?,?,?)",
                           [(i, now, "pending", f"placed on {m}") for i, m, _ in placed])

    def begin_move(self, run_ids: Sequence[int]) -> None:
        """Runs about to be cancelled on their member to move to another: never moved
        before (``moved_from`` is NULL), submitted and not started."""
        now = time.time()
        with self.tx() as db:
            db.executemany("UPDATE runs SET submit_state='moving', updated=? WHERE id=? AND "
                           "moved_from IS NULL AND submit_state='submitted' AND "
                           "started_at IS NULL", [(now, i) for i in run_ids])

    def finish_move(self, moves: Sequence[tuple[int, bool]]) -> None:
        """Runs whose cancel on their member ended them, ``(run_id, started)``: new, unplaced
        submissions of themselves (a new token), ``moved_from`` their member, so they move
        once at most. One confirmed cancelled before it started keeps its attempt; one that
        started in the moment before the cancel reached it counts its next attempt."""
        now = time.time()
        with self.tx() as db:
            for run_id, started in moves:
                db.execute(
                    "UPDATE runs SET token=?, moved_from=member, member=NULL, "
                    "attempt=attempt+?, submit_state='new', state='pending', reason=NULL, "
                    "stderr_tail=NULL, exit_code=NULL, remote_id=NULL, host=NULL, "
                    "handle=NULL, submitted_at=NULL, started_at=NULL, ended_at=NULL, "
                    "pulled_at=NULL, pending_reason=NULL, updated=? WHERE id=? AND "
                    "submit_state='moving'",
                    (new_tokens(1)[0], 1 if started else 0, now, run_id))
                db.execute("INSERT INTO events(run_id, at, state, reason) VALUES (?,?,?,?)",
                           (run_id, now, "pending", "moved: it had started when cancelled"
                            if started else "moved: cancelled before it started"))

    def keep_after_move(self, run_ids: Sequence[int]) -> None:
        """Runs that ended on their member before a move's cancel reached them: they stay
        (their result is the run's) and never move (``moved_from`` set to that member)."""
        now = time.time()
        with self.tx() as db:
            db.executemany("UPDATE runs SET submit_state='submitted', moved_from=member, "
                           "updated=? WHERE id=? AND submit_state='moving'",
                           [(now, i) for i in run_ids])

    def unplace(self, run_ids: Sequence[int]) -> None:
        """Runs placed but never submitted go back to no member (placed again later)."""
        now = time.time()
        with self.tx() as db:
            db.executemany("UPDATE runs SET member=NULL, updated=? WHERE id=? AND "
                           "submit_state='new'", [(now, i) for i in run_ids])

    def mark_pulled(self, run_ids: Sequence[int]) -> None:
        now = time.time()
        with self.tx() as db:
            db.executemany("UPDATE runs SET pulled_at=? WHERE id=?", [(now, i) for i in run_ids])

    def history(self, run_id: int) -> list[tuple[float, str, str | None]]:
        rows = self._db.execute("SELECT at, state, reason FROM events WHERE run_id=? ORDER BY at",
                                (run_id,)).fetchall()
        return [(r["at"], r["state"], r["reason"]) for r in rows]


def _next_on_disk(batch_dir: Path) -> int:
    """1 + the highest ``N_`` prefix among ``batch_dir``'s folders (the seed's numbering)."""
    best = 0
    try:
        for entry in os.scandir(batch_dir):
            m = _NUMBERED.match(entry.name)
            if m and entry.is_dir():
                best = max(best, int(m.group(1)))
    except FileNotFoundError:
        pass
    return best + 1
