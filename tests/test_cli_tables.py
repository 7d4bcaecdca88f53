"""Tables that read on an 80-column terminal, and `chester sweeps`."""

import io
import json

from rich.console import Console

from .helpers import make_project, run_chester


def _rows(n_failed: int = 1, n_queued: int = 0, n_ok: int = 0, attempt: int = 1,
          name: str = "12_lr-sweep_lr_0.001_seed_3_batch_64") -> list:
    import attrs

    from chester.plugin.records import State

    @attrs.define
    class Row:
        number: int
        name: str
        state: State
        reason: str | None = None
        pending_reason: str | None = None
        stderr_tail: str | None = None
        exit_code: int | None = None
        host: str | None = "gpu1"
        remote_id: str | None = None
        pulled_at: float | None = None
        sweep_id: int = 3
        backend: str = "ssh"
        attempt: int = 1
        member: str | None = None

    rows = []
    for _i in range(n_failed):
        rows.append(Row(len(rows) + 1, f"{len(rows) + 1}{name[2:]}", State.FAILED,
                        "command `python train.py` exited with status 1",
                        stderr_tail="Traceback (most recent call last):\n  File \"t.py\", "
                        "line 3\n    boom()\nValueError: the loss diverged after 300 steps "
                        "of warmup and the run stopped", exit_code=1, attempt=attempt))
    for _ in range(n_queued):
        rows.append(Row(len(rows) + 1, f"{len(rows) + 1}_lr-sweep_lr_0.1", State.QUEUED,
                        pending_reason="waiting for a free slot", host=None))
    for _ in range(n_ok):
        rows.append(Row(len(rows) + 1, f"{len(rows) + 1}_lr-sweep_lr_0.1", State.SUCCEEDED,
                        exit_code=0))
    return rows


def _screen(rows, width=80, height=24, prefix="lr-sweep", notes=()):
    from chester.cli import present

    buf = io.StringIO()
    console = Console(file=buf, width=width, height=height, color_system=None,
                      legacy_windows=False)
    present.screen(console, "lr-sweep · a title long enough to need more than eighty columns "
                   "to be shown whole, which it never is", rows, prefix, height=height,
                   more="chester status lr-sweep --all", notes=notes)
    return buf.getvalue().splitlines()


def test_the_status_screen_fits_80x24_whatever_the_sweep():
    rows = _rows(n_failed=3, n_queued=30, n_ok=40)
    lines = _screen(rows)
    assert len(lines) <= 23, "\n".join(lines)  # a line left for the next prompt
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert lines[0].endswith("…")  # the title is cut, never wrapped
    text = "\n".join(lines)
    assert "30 queued: waiting for a free slot" in text  # repeated reasons said once
    for r in rows[:3]:  # every failure named, whole, with its exception
        line = next(x for x in lines if r.name in x)
        assert "ValueError: the loss diverged" in line
    assert "70 more not shown (30 queued, 40 succeeded): chester status lr-sweep --all" in text
    assert "chester logs lr-sweep:1" in text
    # a thousand runs, three hundred failed: still one screen, as many failures as fit
    many = _rows(n_failed=300, n_queued=400, n_ok=300)
    lines = _screen(many)
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert "1_lr-sweep" in lines[7] and "more not shown (286 failed, 400 queued, 300 " \
        "succeeded)" in "\n".join(lines)
    # a small sweep shows every run
    small = "\n".join(_screen(_rows(n_failed=1, n_queued=1, n_ok=2)))
    assert "more not shown" not in small and "4_lr-sweep_lr_0.1" in small


def test_status_columns_give_way_in_their_order_and_fit_at_200():
    from chester.cli import present

    rows = _rows(n_failed=2, n_queued=1, attempt=2)
    rows[0].remote_id = "123456_7"
    ctx = present.Ctx(prefix="lr-sweep", rows=rows)
    wide = [c.key for c in present.fit_columns(rows, ctx, 200)]
    assert wide == ["number", "run", "attempt", "state", "reason", "exit_code", "host",
                    "remote_id"]
    narrow = [c.key for c in present.fit_columns(rows, ctx, 80)]
    assert narrow[:2] == ["number", "run"] and "reason" in narrow and "state" in narrow
    assert "remote_id" not in narrow and "host" not in narrow  # they give way first
    text = "\n".join(_screen(rows))
    assert "Att" in "\n".join(_screen(rows, width=200))
    assert all(r.name in text for r in rows)


def test_a_pools_member_attempt_and_spend_fit_the_same_way():
    """A pool's sweep at 80x24: the attempt and member columns and the spend line fit as the
    others do (member gives way before the reason; every failure still named with its
    exception); at 200 columns every column shows."""
    from chester.cli import present

    rows = _rows(n_failed=4, n_queued=25, n_ok=30, attempt=2)
    for i, r in enumerate(rows):
        r.member = ("lab", "gl-cluster-with-a-long-name", "aws-spot")[i % 3]
    notes = ["spend: $3.12 of $50.00 (aws-spot), 41.0 of 500 SU (gl-cluster-with-a-long-name)"]
    lines = _screen(rows, notes=notes)
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert lines[1].strip().startswith("spend: $3.12 of $50.00")
    for r in rows[:4]:
        line = next(x for x in lines if r.name in x)
        assert "ValueError: the loss diverged" in line, "\n".join(lines)
    ctx = present.Ctx(prefix="lr-sweep", rows=rows)
    narrow = [c.key for c in present.fit_columns(rows, ctx, 80)]
    assert "reason" in narrow and "member" not in narrow, narrow
    wide = [c.key for c in present.fit_columns(rows, ctx, 200)]
    assert {"attempt", "member", "reason"} <= set(wide), wide
    text = "\n".join(_screen(rows, width=200, notes=notes))
    assert "gl-cluster-with-a-long-name" in text and "Member" in text and "Att" in text


def test_one_line_reasons():
    from chester.cli import present

    failed = _rows()[0]
    assert present.reason(failed) == \
        "ValueError: the loss diverged after 300 steps of warmup and the run stopped"
    failed.stderr_tail = "reading data/x.csv\nerror: no such file"
    assert present.reason(failed) == \
        "error: no such file (command `python train.py` exited with status 1)"
    failed.reason = "the run's process was killed by SIGKILL (9) before it recorded an end"
    assert present.reason(failed) == failed.reason
    failed.reason = "ValueError: bad\nvalue"
    assert present.reason(failed) == "ValueError: bad value"
    queued = _rows(n_failed=0, n_queued=1)[0]
    assert present.reason(queued) == "waiting for a free slot"
    assert present.state_and_reason(failed) == "failed: ValueError: bad value"
    running = _rows(n_failed=0, n_queued=1)[0]
    from chester.plugin.records import State

    running.state, running.reason = State.RUNNING, None
    running.pending_reason = "supervisor alive, last cycle 14:03:10, next 14:04:10"
    assert present.reason(running) == running.pending_reason  # a supervisor's line shows
    running.pending_reason = None
    assert present.reason(running) == ""


def test_plain_progress_prints_at_most_every_10s():
    from chester.cli import present

    now = [0.0]
    out: list[str] = []
    p = present.PlainProgress("x", out.append, clock=lambda: now[0])
    rows = _rows(n_failed=0, n_queued=2)
    for t in (0, 1, 5, 9.9):
        now[0] = t
        p(rows)
    assert len(out) == 1 and out[0] == "x: 0/2 ended (2 queued), 0s elapsed"
    rows[0].state = rows[0].state.__class__("running")
    now[0] = 10.0
    p(rows)  # changed, 10 s after the last line
    assert out[-1] == "x: 0/2 ended (1 running, 1 queued), 10s elapsed"
    now[0] = 30.0
    p(rows)  # unchanged: quiet for a minute
    assert len(out) == 2
    now[0] = 70.0
    p(rows)
    assert len(out) == 3


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
    assert r.stdout.startswith("Sweep\t")  # tab-separated values, no title line


def test_cancels_a_minute_apart_are_one_line_with_their_span():
    from chester.cli.present import _merge_clock_times

    merged = _merge_clock_times({"cancelled by chester cancel at 15:47": 2,
                                 "cancelled by chester cancel at 15:48": 1,
                                 "cancelled by chester cancel at 15:49 before it started": 1,
                                 "exited with status 1": 4})
    assert merged == {"cancelled by chester cancel at 15:47–15:48": 3,
                      "cancelled by chester cancel at 15:49 before it started": 1,
                      "exited with status 1": 4}
