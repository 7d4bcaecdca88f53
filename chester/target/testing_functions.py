"""The functions the conformance suite (:mod:`chester.testing`) launches, and the hostile
values it sends.

They are pickled by reference, so the target imports this module: it uses the standard
library only, and it is part of chester's runtime, which a target gets without installing
chester.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

HOSTILE_VALUES: dict[str, Any] = {
    "single": "it's",
    "double": 'say "hi"',
    "subshell": "$(touch /tmp/chester-pwned)",
    "backtick": "`touch /tmp/chester-pwned`",
    "semicolon": "a; rm -rf /tmp/nothing",
    "andand": "x && echo pwned",
    "newline": "line1\nline2\r\n\ttab",
    "unicode": "μ-λ ☃ 学习率 \u200b",
    "dollar": "$HOME ${PATH} $1 %s {0}",
    "big": "x" * 100_000,
    "glob": "* ? [a-z] ~",
    "backslash": "\\n \\ '\\''",
}


def fn_write_result(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """Write the variant and the invocation into the run folder."""
    with open(os.path.join(log_dir, "invocations.txt"), "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(os.path.join(log_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump({"variant": dict(variant), "exp_name": exp_name,
                   "cwd": os.getcwd()}, f, ensure_ascii=False)
    print(f"hello from {exp_name}")


def fn_raise(variant: Mapping, log_dir: str, exp_name: str) -> None:
    print("about to fail", file=sys.stderr)
    raise ValueError(f"deliberate failure {variant['tag']}")


def fn_sleep(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """Sleep ``variant["sleep"]`` seconds."""
    time.sleep(float(variant["sleep"]))


def fn_sleep_with_child(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """Start a child process, record both pids, then sleep."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.path.join(log_dir, "pids.json"), "w") as f:
        json.dump({"worker": os.getpid(), "child": child.pid}, f)
    time.sleep(float(variant.get("seconds", 600)))


def fn_done_early(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """Write ``.done`` itself (as scripts of the seed's time did), go on for ``seconds``,
    then write ``result.json``: the run has not ended before its worker records the end."""
    open(os.path.join(log_dir, ".done"), "a").close()
    time.sleep(float(variant.get("seconds", 4)))
    with open(os.path.join(log_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump({"variant": dict(variant), "exp_name": exp_name}, f)


def fn_print_then_wait(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """Print ``lines`` numbered lines at once, then print nothing for ``seconds``."""
    for i in range(int(variant.get("lines", 3))):
        print(f"line {i}", flush=True)
    time.sleep(float(variant.get("seconds", 300)))


def log_line(i: int) -> bytes:
    """Line ``i`` of :func:`fn_print_lines`: characters of one to four bytes, and every
    seventh line a byte that is no UTF-8 at all, so a copy counted in characters (or
    decoded and encoded again) goes wrong."""
    return f"line {i:03d} é ☃ 学习 \U0001f600".encode() + (b" \xff" if i % 7 == 6 else b"") \
        + b"\n"


def fn_print_lines(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """Write ``lines`` lines (:func:`log_line`) to stdout as bytes, one every ``every``
    seconds, then end."""
    for i in range(int(variant.get("lines", 40))):
        sys.stdout.buffer.write(log_line(i))
        sys.stdout.buffer.flush()
        time.sleep(float(variant.get("every", 0.05)))


def fn_train_with_checkpoints(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """A training loop that checkpoints when warned: on :func:`chester.preempted` it saves
    its step and asks to be requeued (:func:`chester.requeue`); the first attempt never ends
    on its own, a later one goes on from the checkpoint for 3 steps and writes
    ``result.json``. Each attempt appends ``attempt resumed step`` to ``attempts.txt``."""
    from chester.target.worker import attempt, preempted, requeue

    ckpt = os.path.join(log_dir, "ckpt.json")
    step = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
    with open(os.path.join(log_dir, "attempts.txt"), "a") as f:
        f.write(f"{attempt()} {os.environ.get('CHESTER_RESUMED', '0')} {step}\n")
    stop = step + 3 if attempt() > 1 else 10**6  # the first attempt never finishes
    while step < stop:
        if preempted():
            with open(ckpt, "w") as f:
                json.dump({"step": step}, f)
            requeue()
        time.sleep(0.5)
        step += 1
    with open(os.path.join(log_dir, "result.json"), "w") as f:
        json.dump({"step": step}, f)


def fn_hostile(variant: Mapping, log_dir: str, exp_name: str) -> None:
    """Check the values in place and write them back exactly (JSON, with escapes)."""
    ok = {k: variant[k] == v for k, v in HOSTILE_VALUES.items()}
    ok["env"] = os.environ.get("CHESTER_HOSTILE") == HOSTILE_VALUES["subshell"]
    with open(os.path.join(log_dir, "hostile.json"), "w", encoding="utf-8") as f:
        json.dump({"ok": ok, "values": dict(variant)}, f, ensure_ascii=True)
    if not all(ok.values()):
        raise AssertionError(f"values changed on the way: {[k for k, v in ok.items() if not v]}")
