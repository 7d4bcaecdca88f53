"""Property: any sweep (values and names drawn at random), launched, the launcher SIGKILLed
at a random moment, then launched again, runs each variant exactly once with its values
exact (local backend, real processes)."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chester.fingerprint import digest

LAUNCHER = textwrap.dedent("""
    import os, pickle, sys
    import chester
    from chester.errors import UserError

    def train(variant, log_dir, exp_name):
        with open(os.path.join(log_dir, "invocations.txt"), "a") as f:
            f.write(f"{os.getpid()}\\n")
        with open(os.path.join(log_dir, "got.pkl"), "wb") as f:
            pickle.dump(dict(variant), f)

    with open(sys.argv[1], "rb") as f:
        case = pickle.load(f)
    try:
        chester.launch(train, case["variants"], exp_prefix=case["prefix"],
                       exp_names=case["names"])
    except UserError as exc:
        print("REFUSED", exc, file=sys.stderr)
        sys.exit(3)
""")

# any code point, and the ones that break things most often: quotes, newlines, NUL, lone
# surrogates, path separators, names that collide once cleaned
chars = st.characters(codec=None) | st.sampled_from(
    ["\ud800", "\udcff", "\n", "\x00", "/", ".", " ", "-", "'", '"', "$", "\\", "☃"])
text = st.text(chars, max_size=12)
scalars = (st.none() | st.booleans() | st.integers() | text | st.binary(max_size=8)
           | st.floats(allow_nan=False))
values = st.recursive(
    scalars | st.frozensets(st.integers() | text, max_size=3)
    | st.sets(st.integers() | text, max_size=3),
    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner)
                   | st.dictionaries(text, inner, max_size=3)),
    max_leaves=6)
variants = st.lists(st.dictionaries(text.filter(lambda k: k != "exp_name"), values,
                                    max_size=3), min_size=1, max_size=3)
# mostly names that launch, sometimes any text (which is launched or refused in one line)
_fixed = st.sampled_from(["sweep", "a b", "μ-λ", "x" * 200])
prefixes = st.one_of(_fixed, _fixed, _fixed, text)
names = st.one_of(st.none(), st.none(),
                  st.lists(st.sampled_from(["a b", "a-b", "r", "R", "../r"]) | text,
                           min_size=3, max_size=3))


def _wait_all(project: Path, prefix_file: Path, timeout: float = 60) -> list:
    code = textwrap.dedent("""
        import pickle, sys
        import chester
        case = pickle.load(open(sys.argv[1], "rb"))
        sw = chester.sweep(case["prefix"])
        sw.wait(timeout=60, poll_interval=0.05, progress=False)
        print(len(chester.sweeps.open_store().sweeps()))
        for r in sw.runs:
            print(r.state.value, r.log_dir, sep="\\t")
    """)
    r = subprocess.run([sys.executable, "-c", code, str(prefix_file)], cwd=project,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    return [int(lines[0])] + [tuple(line.split("\t")) for line in lines[1:]]


@pytest.mark.slow  # a property: many sweeps, each launched, killed and launched again
@settings(max_examples=int(os.environ.get("CHESTER_PROPERTY_EXAMPLES", "10")), deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(vs=variants, prefix=prefixes, run_names=names,
       kill_after=st.floats(min_value=0.0, max_value=0.8))
def test_any_sweep_killed_and_launched_again_runs_each_variant_once(vs, prefix, run_names,
                                                                   kill_after):
    if run_names is not None:
        run_names = run_names[:len(vs)]
    root = Path(tempfile.mkdtemp(prefix="chester-prop-"))
    try:
        project = root / "proj"
        (project / ".git").mkdir(parents=True)
        (project / "chester.yaml").write_text(
            "backends:\n  local:\n    type: local\n    max_parallel: 2\n")
        (project / "launch.py").write_text(LAUNCHER)
        case = project / "case.pkl"
        case.write_bytes(pickle.dumps({"variants": vs, "prefix": prefix, "names": run_names}))
        env = {**os.environ, "CHESTER_SLOTS_DIR": str(root / "slots")}
        p = subprocess.Popen([sys.executable, "launch.py", str(case)], cwd=project, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(kill_after)
        p.send_signal(signal.SIGKILL)
        p.wait()
        again = subprocess.run([sys.executable, "launch.py", str(case)], cwd=project, env=env,
                               capture_output=True, text=True, timeout=60)
        event("refused" if again.returncode == 3 else "launched")
        if again.returncode == 3:  # refused: a bad name, and then nothing was written
            assert "REFUSED" in again.stderr and again.stderr.count("\n") == 1, again.stderr
            assert not (project / "data").exists() or not any(
                (project / "data").rglob("invocations.txt"))
            return
        assert again.returncode == 0, again.stderr
        n_sweeps, *runs = _wait_all(project, case)
        assert n_sweeps == 1
        assert len(runs) == len(vs)
        got = []
        for state, log_dir in runs:
            d = Path(log_dir)
            assert state == "succeeded", (state, (d / "stderr.log").read_text()
                                          if (d / "stderr.log").exists() else "")
            assert d.resolve().is_relative_to((project / "data").resolve())
            assert (d / "invocations.txt").read_text().count("\n") == 1
            got.append(digest(pickle.loads((d / "got.pkl").read_bytes())))
        assert got == [digest(v) for v in vs]  # in order, each exact
        # no run folder outside the store ran anything
        assert len(list((project / "data").rglob("invocations.txt"))) == len(vs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
