"""Run the ``chester`` command on a pseudo-terminal of a given size and read the screen it
leaves, as a terminal emulator (pyte) draws it: what fits, what scrolled away, and whether
any line was longer than the terminal (and so wrapped)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
import unicodedata
from pathlib import Path

import attrs
import pyte

from .helpers import CHESTER

#: escape sequences: CSI (colours, cursor moves), OSC (titles, links), and the two-byte ones
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-_]")


@attrs.frozen
class Screen:
    """What a terminal of ``cols`` × ``rows`` showed when the command ended."""

    returncode: int
    raw: str  # everything the command wrote, escape sequences included
    display: list[str]  # the screen's rows, as drawn
    history: list[str]  # rows that scrolled off its top
    cursor_row: int
    cols: int
    rows: int

    @property
    def text(self) -> str:
        return "\n".join(self.history + self.display)

    @property
    def lines(self) -> list[str]:
        """Each line the command wrote, escape sequences removed (a carriage return starts
        a line again: progress bars redraw in place)."""
        plain = _ESCAPES.sub("", self.raw).replace("\r\n", "\n")
        return [part for line in plain.split("\n") for part in line.split("\r")]

    def fits(self) -> bool:
        """Nothing scrolled away, and a row is left for the shell's next prompt."""
        return not self.history and self.cursor_row < self.rows - 1

    def too_wide(self) -> list[str]:
        """Lines longer than the terminal: the terminal wrapped them, mid-word or not."""
        return [line for line in self.lines if width(line) > self.cols]


def width(text: str) -> int:
    """Terminal cells ``text`` takes (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if
               unicodedata.combining(c) else 1 for c in text)


def run_on_terminal(args: list[str], cwd: Path, *, cols: int = 80, rows: int = 24,
                    env: dict[str, str] | None = None, answer: str | None = None,
                    timeout: float = 120) -> Screen:
    """Run ``chester ARGS`` with stdin, stdout and stderr on a new pseudo-terminal of
    ``cols`` × ``rows`` (TIOCSWINSZ), until it exits; ``answer`` is typed once the command
    asks (when it first prints a ``?``)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    e = {k: v for k, v in os.environ.items()
         if k not in ("CHESTER_CONFIG_PATH", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    e.update({"TERM": "xterm-256color", **(env or {})})
    try:
        proc = subprocess.Popen([*CHESTER, *args], cwd=cwd, env=e, stdin=slave, stdout=slave,
                                stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"chester {' '.join(args)} did not end in {timeout}s: " \
                f"...{bytes(out[-1500:])!r}"
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            out += chunk
            if answer is not None and b"?" in out:
                os.write(master, answer.encode())
                answer = None
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    raw = out.decode("utf-8", "replace")
    screen = pyte.HistoryScreen(cols, rows, history=100_000)
    stream = pyte.Stream(screen)
    # the terminal's line discipline turned "\n" into "\r\n" already
    stream.feed(raw)
    history = ["".join(line[x].data for x in range(cols)).rstrip()
               for line in screen.history.top]
    return Screen(returncode=proc.returncode, raw=raw,
                  display=[line.rstrip() for line in screen.display], history=history,
                  cursor_row=screen.cursor.y, cols=cols, rows=rows)
