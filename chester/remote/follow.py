"""Copying a run's log to an output: where the copy has got to, in raw bytes of the log
(:class:`LogCursor`), and following a log until its run ends (:func:`follow`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO


class LogCursor:
    """Copies a log's bytes to ``out`` and counts them: ``offset`` is the number of bytes of
    the log written so far, counted in the log's raw bytes (not in characters), so a copy
    that stopped (a dropped link, retried by the dispatcher) goes on from exactly there.

    Bytes go to ``out`` as they are when it has a binary buffer (``sys.stdout``), else
    decoded as UTF-8 (a character cut between two chunks is decoded whole; an invalid byte
    becomes U+FFFD). A write that raises (a closed pipe, a transient error) counts nothing:
    the same bytes are written again by whoever goes on. :meth:`close` writes what the
    decoder still holds once the log is over."""

    def __init__(self, out: TextIO) -> None:
        import codecs

        self.out = out
        self.offset = 0
        self._raw = getattr(out, "buffer", None)
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes) -> None:
        """Write the log's next bytes (those from ``offset`` on)."""
        if not data:
            return
        if self._raw is not None:
            self.out.flush()
            self._raw.write(data)
            self._raw.flush()
        else:
            state = self._dec.getstate()
            try:
                text = self._dec.decode(data)
                if text:
                    self.out.write(text)
                    self.out.flush()
            except BaseException:
                self._dec.setstate(state)
                raise
        self.offset += len(data)

    def close(self) -> None:
        """The log is over: write what is left of a character cut short."""
        if self._raw is None:
            rest = self._dec.decode(b"", final=True)
            if rest:
                self.out.write(rest)
                self.out.flush()

    def output(self) -> Any:
        """A file-like view for code that writes a log's bytes to an output's ``buffer``
        (:func:`chester.target.tool.follow`): its bytes go through this cursor, and it
        answers ``fileno`` as ``out`` does (so a follower sees its reader go away)."""
        return _CursorOutput(self)


class _CursorOutput:
    def __init__(self, cursor: LogCursor) -> None:
        self.buffer = _CursorBytes(cursor)
        self._cursor = cursor

    def write(self, text: str) -> int:
        self._cursor.write(text.encode("utf-8", "surrogateescape"))
        return len(text)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self._cursor.out.fileno()


class _CursorBytes:
    def __init__(self, cursor: LogCursor) -> None:
        self._cursor = cursor

    def write(self, data: bytes) -> int:
        self._cursor.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def follow(read: Callable[[int], bytes], finished: Callable[[], bool],
           out: TextIO | LogCursor, *, follow: bool, interval: float = 1.0) -> bool:
    """Copy a log to ``out``; with ``follow``, keep copying until the run ends.

    ``read(offset)`` returns the log's bytes from ``offset`` on (``b""`` when there are none
    yet, or no log); ``finished()`` says whether the run has ended. After the run ends the
    log is read once more, so its last lines are never lost. ``out`` is a text output (the
    copy starts at the log's first byte) or a :class:`LogCursor` (it goes on from the
    cursor's ``offset``: a retried call never repeats nor skips a byte).
    """
    cursor = out if isinstance(out, LogCursor) else LogCursor(out)

    def copy() -> bool:
        chunk = read(cursor.offset)
        cursor.write(chunk)
        return bool(chunk)

    copy()
    while follow:
        if not copy():
            if finished():
                copy()
                break
            time.sleep(interval)
    cursor.close()
    return True


__all__ = ["LogCursor", "follow"]
