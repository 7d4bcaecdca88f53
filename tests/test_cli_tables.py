"""Tables that read on an 80-column terminal, and `chester sweeps`."""

import io
import json

from rich.console import Console

from chester.cli import emit_table

from .helpers import make_project, run_chester


def test_status_table_fits_80_columns_without_breaking_names():
    import attrs

    from chester.cli.commands import status_table

    @attrs.define
    class Row:
        id: int
        name: str
        state: object
        reason: str | None = None
        pending_reason: str | None = None
        exit_code: int | None = None
        host: str | None = "gpu1"
        remote_id: str | None = None
        pulled_at: float | None = None
        sweep_id: int = 3
        backend: str = "ssh"

    class S:
        def __init__(self, v):
            self.value = v

    name = "12_lr-sweep_lr_0.001_seed_3_batch_64"
    rows = [Row(12, name, S("failed"), "ValueError: the loss diverged after 300 steps of "
                "warmup and the run stopped", exit_code=1),
            Row(13, "13_lr-sweep_lr_0.1", S("running"))]
    columns, table, notes = status_table(rows, several=False, launches=False, width=80)
    buf = io.StringIO()
    emit_table("lr-sweep (launch 3, backend ssh): 1 failed, 1 running", columns, table,
               keep=("Id", "Run", "State"), whole=("Run", "Launch", "State"), wrap=("Reason",),
               console=Console(file=buf, width=80, color_system=None, legacy_windows=False))
    text = buf.getvalue()
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), text
    assert any(name in line for line in lines), text  # never broken
    assert "Remote id" not in text and "Pulled" not in text  # empty for every run
    assert "Host" in text and "gpu1" in text and "Exit" in text
    # the reason goes under the table, whole
    assert notes == [f"{name}: ValueError: the loss diverged after 300 steps of warmup and the "
                     "run stopped"]
    wide, _, none = status_table(rows, several=True, launches=True, width=160)
    assert "Reason" in wide and "Backend" in wide and "Launch" in wide and none == []


def test_chester_sweeps_lists_every_sweep(tmp_path):
    project = make_project(tmp_path / "proj", "log_dir: data\n")
    r = run_chester(["sweeps"], cwd=project)
    assert r.returncode == 2 and "no job store" in r.stderr  # nothing launched yet: one line
    code = ("import chester\n"
            "def f(v, d, n):\n    pass\n"
            "for p in ('alpha', 'beta', 'alpha'):\n"
            "    chester.launch(f, [{'i': 1}, {'i': 2}], exp_prefix=p, resume=False)"
            ".wait(timeout=60, progress=False)\n")
    (project / "go.py").write_text(code)
    import subprocess
    import sys

    env = {"CHESTER_SLOTS_DIR": str(tmp_path / "slots")}
    import os

    p = subprocess.run([sys.executable, "go.py"], cwd=project, capture_output=True, text=True,
                       timeout=120, env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    r = run_chester(["sweeps", "--json"], cwd=project)
    assert r.returncode == 0, r.stderr
    data = {d["sweep"]: d for d in json.loads(r.stdout)}
    assert set(data) == {"alpha", "beta"}
    assert len(data["alpha"]["launches"]) == 2 and data["alpha"]["runs"] == 4
    assert data["alpha"]["states"] == {"succeeded": 4} and data["beta"]["backends"] == ["local"]
    r = run_chester(["sweeps"], cwd=project)
    assert r.returncode == 0 and "alpha\t2\tlocal\t4\t4 succeeded" in r.stdout, r.stdout
