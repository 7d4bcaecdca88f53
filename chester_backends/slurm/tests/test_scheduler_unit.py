"""Reading sacct/squeue text and merging it with worker records (pure functions), and the
poll pacer. The real scheduler is exercised in test_slurm_scenarios.py."""

from chester_backend_slurm import scheduler as s

from chester.types import State


def test_rows_expand_compressed_array_ids():
    rows = s.parse_rows("12_[3-5,7%2]|PENDING|0:0|JobArrayTaskLimit|Unknown|Unknown|None assigned\n"
                        "12_0|RUNNING|0:0|None|x|y|localhost\n"
                        "13|TIMEOUT|0:15|TimeLimit|x|y|localhost\n")
    assert sorted(rows) == ["12_0", "12_3", "12_4", "12_5", "12_7", "13"]
    assert rows["12_4"].reason == "JobArrayTaskLimit"
    squeue = s.parse_rows("14_1|PENDING|Priority|N/A|N/A|\n")
    assert squeue["14_1"].state == "PENDING" and squeue["14_1"].reason == "Priority"


def _rec(state=None, done=False, token="t", attempt=1, ended=True):
    st = None if state is None else {"token": token, "state": state, "attempt": attempt,
                                     "ended_at": 2.0 if ended else None, "reason": "boom"}
    return {"token": token, "status": st, "done": done, "tail": "last line"}


def _merge(row, rec, kind="array", source="sacct"):
    return s.merge(row, rec, token="t", remote_id="1_0", host="h", kind=kind, source=source)


def test_completed_needs_the_success_record():
    done = s.JobRow(state="COMPLETED", exit_code="0:0")
    assert _merge(done, _rec("succeeded", done=True)).state == State.SUCCEEDED
    assert _merge(done, _rec(None)).state == State.FAILED
    assert _merge(done, _rec("succeeded", done=False)).state == State.FAILED
    other = _rec("succeeded", done=True, token="someone-else")
    assert _merge(done, other).state == State.FAILED


def test_terminal_states_map_to_their_words():
    cases = {"TIMEOUT": State.TIMEOUT, "OUT_OF_MEMORY": State.OOM, "CANCELLED": State.CANCELLED,
             "NODE_FAIL": State.FAILED, "BOOT_FAIL": State.FAILED, "DEADLINE": State.TIMEOUT,
             "PREEMPTED": State.PREEMPTED, "FAILED": State.FAILED}
    for word, state in cases.items():
        st = _merge(s.JobRow(state=word, exit_code="1:0", reason="None"), _rec(None))
        assert st.state == state, word
        assert st.reason and st.stderr_tail == "last line"
    failed = _merge(s.JobRow(state="FAILED", exit_code="1:0"), _rec("failed"))
    assert failed.reason == "boom"
    dep = _merge(s.JobRow(state="CANCELLED", reason="DependencyNeverSatisfied"), _rec(None))
    assert "did not succeed" in dep.reason


def test_a_dependent_job_slurm_cancelled_reads_as_its_dependency_failing():
    """sacct's row of a job SLURM cancelled for an unmet dependency can carry the cancel's
    time as its start and no reason; a user's cancel says who did it."""
    def merge(row, rec=None):
        return s.merge(row, rec or _rec(None), token="t", remote_id="2_1", host="h",
                       kind="array", source="sacct", depends=True)

    rows = s.parse_rows("2_1|CANCELLED|0:0|None|2026-12-03T10:18:00|2026-12-03T10:18:00|"
                        "None assigned\n"
                        "2_2|CANCELLED by 1000|0:0|None|2026-12-03T10:18:00|"
                        "2026-12-03T10:18:00|None assigned\n")
    assert "did not succeed" in merge(rows["2_1"]).reason
    user = merge(rows["2_2"])
    assert user.state == State.CANCELLED and "by uid 1000" in user.reason
    assert "did not succeed" not in user.reason
    started = merge(rows["2_1"], _rec("terminated"))  # its worker ran: not the dependency
    assert "did not succeed" not in (started.reason or "")


def test_a_memory_kill_reads_oom_whatever_the_job_state():
    """slurmstepd's words in the job's output decide: the cgroup OOM killer leaves FAILED or
    OUT_OF_MEMORY, the accounting poller (OverMemoryKill) leaves FAILED with signal 9."""
    lines = {
        "FAILED": "slurmstepd-n1: error: Exceeded job memory limit",
        "OUT_OF_MEMORY": "slurmstepd: error: Detected 1 oom_kill event in StepId=7.batch.",
        "CANCELLED": "slurmstepd: error: Detected 2 oom-kill event(s) in StepId=7.0.",
    }
    for word, line in lines.items():
        rec = {**_rec("running", ended=False), "sched_tail": f"something\n{line}"}
        st = _merge(s.JobRow(state=word, exit_code="0:9"), rec)
        assert st.state == State.OOM, word
        assert st.reason == f"out of memory: {line}" and st.exit_code == 137
    plain = {**_rec(None), "sched_tail": "slurmstepd: error: *** JOB 7 CANCELLED AT x ***"}
    assert _merge(s.JobRow(state="FAILED", exit_code="0:9"), plain).state == State.FAILED
    script = s.status_script(["7"], "2026-01-01", ["/r/a b"], "python3",
                             sched_outputs=["/s/slurm-7_0.out"])
    assert '["/r/a b", "/s/slurm-7_0.out", null, null]' in script


def test_the_record_reader_reads_only_runs_whose_line_changed(tmp_path):
    """The reader gets each run's scheduler line of the last poll and this poll's lines: a
    run whose line is the same is not read; a changed line, a run without a key and a run
    the scheduler does not list (yet) are read. Pending array tasks come as ranges."""
    import json
    import subprocess
    import sys

    dirs = []
    for name in ("same", "changed", "nokey", "unlisted", "pending"):
        d = tmp_path / name
        (d / ".chester").mkdir(parents=True)
        (d / ".chester" / "run.json").write_text(json.dumps({"token": name}))
        dirs.append(str(d))
    sched = ("@@CHESTER-SACCT\n7_0|RUNNING|0:0|None|x|Unknown|n1\n"
             "7_1|COMPLETED|0:0|None|x|y|n1\n7_2|RUNNING|0:0|None|x|Unknown|n1\n"
             "8_[0-3%2]|PENDING|0:0|Priority|Unknown|Unknown|None assigned\n")
    runs = [[dirs[0], None, "7_0", "RUNNING|0:0|None|x|Unknown|n1"],
            [dirs[1], None, "7_1", "RUNNING|0:0|None|x|Unknown|n1"],
            [dirs[2], None, "7_2", None],
            [dirs[3], None, "9_0", "RUNNING|0:0|None|x|Unknown|n1"],
            [dirs[4], None, "8_2", "PENDING|0:0|Priority|Unknown|Unknown|None assigned"]]
    stdin = "".join(json.dumps(r) + "\n" for r in runs) + "@@CHESTER-ROWS\n" + sched
    got = json.loads(subprocess.run([sys.executable, "-c", s.RECORD_READER], input=stdin,
                                    capture_output=True, text=True, check=True).stdout)
    assert got[dirs[0]] == {"same": True, "key": "RUNNING|0:0|None|x|Unknown|n1"}
    # a pending line is the same only while its worker's record is: here there is none
    assert got[dirs[4]]["exists"] and "same" not in got[dirs[4]]
    pending_key = got[dirs[4]]["key"]
    assert pending_key.endswith("|@-")
    runs[4][3] = pending_key
    stdin = "".join(json.dumps(r) + "\n" for r in runs) + "@@CHESTER-ROWS\n" + sched
    again = json.loads(subprocess.run([sys.executable, "-c", s.RECORD_READER], input=stdin,
                                      capture_output=True, text=True, check=True).stdout)
    assert again[dirs[4]] == {"same": True, "key": pending_key}
    (tmp_path / "pending" / ".chester" / "status.json").write_text('{"state": "running"}')
    third = json.loads(subprocess.run([sys.executable, "-c", s.RECORD_READER], input=stdin,
                                      capture_output=True, text=True, check=True).stdout)
    assert third[dirs[4]]["status"] == {"state": "running"}  # the worker started: read
    for d in dirs[1:4]:
        assert got[d]["exists"] and "same" not in got[d], d
    assert got[dirs[1]]["key"] == "COMPLETED|0:0|None|x|y|n1" and got[dirs[3]]["key"] is None
    # a task listed under its job id at first, then under its own: read again
    runs2 = [[dirs[0], None, "7_0", "^RUNNING|0:0|None|x|Unknown|n1"]]
    stdin2 = json.dumps(runs2[0]) + "\n@@CHESTER-ROWS\n" + sched
    own = json.loads(subprocess.run([sys.executable, "-c", s.RECORD_READER], input=stdin2,
                                    capture_output=True, text=True, check=True).stdout)
    assert "same" not in own[dirs[0]] and own[dirs[0]]["key"] == "RUNNING|0:0|None|x|Unknown|n1"
    parent_only = "@@CHESTER-SACCT\n7|CANCELLED by 0|0:0|None|x|y|n1\n"
    first = json.loads(subprocess.run(
        [sys.executable, "-c", s.RECORD_READER], capture_output=True, text=True, check=True,
        input=json.dumps([dirs[0], None, "7_0", None]) + "\n@@CHESTER-ROWS\n" + parent_only
    ).stdout)
    assert first[dirs[0]]["key"] == "^CANCELLED by 0|0:0|None|x|y|n1"


def test_pending_reason_and_requeue_keep_identity():
    q = _merge(s.JobRow(state="PENDING", reason="QOSMaxGRESPerUser"), _rec(None))
    assert q.state == State.QUEUED and q.pending_reason == "QOSMaxGRESPerUser"
    rq = _merge(s.JobRow(state="PENDING", reason="BeginTime"), _rec("failed", attempt=1))
    assert rq.state == State.REQUEUED and rq.attempt == 2 and rq.remote_id == "1_0"
    assert _merge(s.JobRow(state="REQUEUED"), _rec("running", ended=False)).attempt == 2
    # the worker has started and sacct still says PENDING (accounting lags): running
    lag = _merge(s.JobRow(state="PENDING", reason="Dependency"), _rec("running", ended=False))
    assert lag.state == State.RUNNING
    ended = _merge(s.JobRow(state="PENDING", reason="None"), _rec("succeeded", done=True))
    assert ended.state == State.SUCCEEDED  # it ran and ended before sacct saw it start


def test_unknown_to_the_scheduler():
    assert _merge(None, _rec(None)).state == State.QUEUED  # sacct lags right after sbatch
    # a worker stopped by a signal before sacct listed its job: the scheduler says why
    assert _merge(None, _rec("terminated")).state == State.RUNNING
    assert _merge(None, _rec("terminated"), source="squeue").state == State.FAILED
    assert _merge(None, _rec("succeeded", done=True)).state == State.SUCCEEDED
    assert _merge(None, _rec("running", ended=False), source="squeue").state == State.LOST


def test_serial_steps():
    running = s.JobRow(state="RUNNING")
    assert _merge(running, _rec(None), kind="serial").state == State.QUEUED
    assert _merge(running, _rec("succeeded", done=True), kind="serial").state == State.SUCCEEDED
    failed = s.JobRow(state="FAILED", exit_code="1:0")
    assert "earlier step" in _merge(failed, _rec(None), kind="serial").reason


def test_pacer_grows_resets_backs_off_and_stays_below_min_job_age():
    p = s.Pacer(minimum=2.0, maximum=60.0, min_job_age=30)
    assert p.cap == 10.0
    p.observed("a", now=0)
    assert p.interval == 2.0 and not p.due(now=1) and p.due(now=2)
    for t in range(1, 10):
        p.observed("a", now=t)
    assert p.interval == 10.0  # grew, capped at MinJobAge / 3
    p.observed("b", now=20)
    assert p.interval == 5.0  # a change halves the interval; it does not reset to the floor
    p.observed("c", now=25)
    p.observed("d", now=28)
    assert p.interval == 2.0  # never below the floor
    p.failed(now=30)
    assert p.interval == 4.0


def test_cluster_info():
    info = s.parse_cluster_info("MaxArraySize            = 5\nMinJobAge               = 300 sec\n"
                                "AccountingStorageType   = accounting_storage/none\n")
    assert info == {"MaxArraySize": 5, "MinJobAge": 300, "accounting": 0}


def test_cluster_info_from_the_submit_script_output():
    out = ("CLUSTER AccountingStorageType   = accounting_storage/slurmdbd\n"
           "CLUSTER MaxArraySize            = 1001\nJOB 0 17\nMaxArraySize = 3\n")
    assert s.cluster_info_of(out) == {"MaxArraySize": 1001, "accounting": 1}


def test_cluster_check_stops_before_sbatch_only_on_another_max_array_size(tmp_path):
    """The rendered check run by bash, with a stand-in scontrol printing a config."""
    import os
    import subprocess

    fake = tmp_path / "scontrol"
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}

    def run(expected, config, code=0):
        fake.write_text(f"#!/bin/sh\nprintf '{config}'\nexit {code}\n")
        fake.chmod(0o755)
        script = "\n".join(["set -euo pipefail", *s.cluster_check_lines(expected),
                            "echo SUBMITTED"])
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)

    config = ("AccountingStorageType   = accounting_storage/none\\n"
              "MaxArraySize            = 5\\nMinJobAge               = 300 sec\\n")
    for expected, code in ((1001, s.EXIT_RECHUNK), (5, 0), (None, 0)):
        res = run(expected, config)
        assert res.returncode == code, (expected, res)
        assert ("SUBMITTED" in res.stdout) == (code == 0)
        assert s.cluster_info_of(res.stdout) == {"MaxArraySize": 5, "MinJobAge": 300,
                                                 "accounting": 0}
    # scontrol failing, or answering without MaxArraySize, stops the script before the
    # submit, whether or not a size was assumed
    for expected in (5, None):
        for cfg, code in ((config, 1), ("MinJobAge = 300 sec\\n", 0)):
            res = run(expected, cfg, code)
            assert res.returncode == 1 and "SUBMITTED" not in res.stdout, (expected, cfg, res)


def test_who_cancelled_is_kept():
    rows = s.parse_rows("15|CANCELLED by 1234|0:15|None|x|y|localhost\n"
                        "16|CANCELLED by 0|0:15|None|x|y|localhost\n")
    assert rows["15"].state == "CANCELLED" and rows["15"].by == "1234"
    got = _merge(rows["15"], _rec(None))
    assert got.state == State.CANCELLED and got.reason == "cancelled by uid 1234"
    assert "administrator" in _merge(rows["16"], _rec(None)).reason


def test_pending_reasons_that_never_resolve_say_what_to_change():
    for reason, word in (("PartitionTimeLimit", "`time`"), ("InvalidAccount", "`account`"),
                         ("AssocGrpBillingMinutes", "`account`"),
                         ("QOSMaxWallDurationPerJobLimit", "`qos`"),
                         ("ReqNodeNotAvail, UnavailableNodes:gl[1001]", "`exclude`")):
        got = _merge(s.JobRow(state="PENDING", reason=reason), _rec(None))
        assert got.state == State.QUEUED
        assert got.pending_reason.startswith(reason) and "will not start" in got.pending_reason
        assert word in got.pending_reason
    plain = _merge(s.JobRow(state="PENDING", reason="Priority"), _rec(None))
    assert plain.pending_reason == "Priority"


def test_requeue_hold_and_suspended_have_their_own_words():
    held = _merge(s.JobRow(state="REQUEUE_HOLD"), _rec("terminated"))
    assert held.state == State.QUEUED and "scontrol release" in held.pending_reason
    susp = _merge(s.JobRow(state="SUSPENDED"), _rec("running", ended=False))
    assert susp.state == State.RUNNING and "SUSPENDED" in susp.reason


def test_the_records_decide_by_the_one_rule():
    """Where SLURM's reader read the records its own way before (chester.target.states)."""
    # a record of an earlier attempt (run.json says 2) is not this attempt's success
    done = s.JobRow(state="COMPLETED", exit_code="0:0")
    old = {**_rec("succeeded", done=True, attempt=1), "attempt": 2}
    assert _merge(done, old).state == State.FAILED
    assert _merge(done, {**_rec("succeeded", done=True, attempt=2), "attempt": 2}).state \
        == State.SUCCEEDED
    # the run's own success decides, whatever SLURM said of its job after it
    for word in ("CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED"):
        got = _merge(s.JobRow(state=word, exit_code="0:15"), _rec("succeeded", done=True))
        assert got.state == State.SUCCEEDED, word
    # a worker that started and was killed: the signal by its name, as on every backend
    segv = _merge(s.JobRow(state="FAILED", exit_code="0:11"), _rec("running", ended=False))
    assert segv.state == State.FAILED and segv.exit_code == 139
    assert "killed by SIGSEGV (11) before it recorded an end" in segv.reason
    quit_ = _merge(done, _rec("running", ended=False))
    assert "exited with code 0 without recording an end" in quit_.reason
    # a full disk: the file system of the run folder has (almost) nothing free
    full = {**_rec("running", ended=False), "free": 4096, "dir": "/runs/a"}
    got = _merge(s.JobRow(state="FAILED", exit_code="1:0"), full)
    assert got.state == State.FAILED
    assert got.reason.startswith("no space left on the file system of /runs/a (4 KiB free)")
    said = {**_rec(None), "tail": "OSError: [Errno 28] No space left on device", "dir": "/r"}
    assert "no space left" in _merge(s.JobRow(state="FAILED", exit_code="1:0"), said).reason
    # a memory kill that only the run's own stderr tells of (no slurmstepd line in the output)
    oom = {**_rec("running", ended=False), "tail": "Killed: oom-kill event in cgroup"}
    assert _merge(s.JobRow(state="FAILED", exit_code="0:9"), oom).state == State.OOM
