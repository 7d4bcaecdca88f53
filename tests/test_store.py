"""The job store on its own, and what a launch leaves behind."""

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
