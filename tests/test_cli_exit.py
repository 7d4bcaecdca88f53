"""How the ``chester`` command ends: exit handlers run and every byte written reaches the
pipe, with the exit status of the command; a thread still working is waited for."""

import subprocess
import sys


def _run(body: str, tmp_path) -> subprocess.CompletedProcess:
    code = ("import atexit, threading, time\n"
            "import chester.cli as cli\n" + body + "\ncli.run()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)


def test_the_command_ends_with_its_status_its_output_and_its_exit_handlers(tmp_path):
    r = _run("atexit.register(lambda: print('exit handler ran', flush=False))\n"
             "def main():\n"
             "    print('x' * 200000, end='')\n"
             "    print('to stderr', file=__import__('sys').stderr)\n"
             "    return 3\n"
             "cli.main = main\n", tmp_path)
    assert r.returncode == 3
    assert r.stdout == "x" * 200000 + "exit handler ran\n"
    assert r.stderr == "to stderr\n"


def test_a_thread_still_working_is_waited_for(tmp_path):
    r = _run("def work():\n"
             "    time.sleep(0.5)\n"
             "    open('done.txt', 'w').write('done')\n"
             "def main():\n"
             "    threading.Thread(target=work).start()\n"
             "    return 0\n"
             "cli.main = main\n", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "done.txt").read_text() == "done"


def test_a_real_command_through_the_module_entry(tmp_path):
    r = subprocess.run([sys.executable, "-m", "chester.cli", "launch", "-b", "nope", "--",
                        "python", "-c", "pass"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 2 and "unknown backend" in r.stderr and "nope" in r.stderr


def test_the_job_store_is_whole_in_jobs_db_after_a_command(tmp_path):
    """The store's write-ahead log goes back into jobs.db when the command ends: a copy of
    jobs.db alone holds what the command recorded."""
    import shutil
    import sqlite3

    (tmp_path / ".git").mkdir()
    r = subprocess.run([sys.executable, "-m", "chester.cli", "launch", "-p", "w",
                        "--", "python", "-c", "pass", "x=1,2,3"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    db = tmp_path / ".chester" / "jobs.db"
    assert not (tmp_path / ".chester" / "jobs.db-wal").exists()
    shutil.copy(db, tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "copy.db") as c:
        assert c.execute("SELECT count(*) FROM runs").fetchone()[0] == 3


def test_a_1000_run_launch_in_the_command_leaves_the_cycle_collector_alone(tmp_path):
    """The command's objects live until it ends: scanning them for cycles over and over
    is time spent for nothing (Python's default threshold ran ~60 collections here)."""
    (tmp_path / ".git").mkdir()
    code = (
        "import gc, sys, atexit\n"
        "from chester.cli import run\n"
        "n = [0]\n"
        "gc.callbacks.append(lambda phase, info: n.__setitem__(0, n[0] + (phase == 'start')))\n"
        "atexit.register(lambda: print('collections', n[0], file=sys.stderr))\n"
        "sys.argv = ['chester', 'launch', '--dry-run', '--', 'python', '-c', 'pass',\n"
        "            'i=' + ','.join(map(str, range(1000)))]\n"
        "run()\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1000 runs on backend" in res.stdout, res.stdout[-500:]
    collections = int(res.stderr.strip().splitlines()[-1].split()[-1])
    assert collections <= 1, res.stderr
