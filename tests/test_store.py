"""The job store on its own."""

from __future__ import annotations

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
