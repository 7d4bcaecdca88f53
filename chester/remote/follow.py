"""Following a run's log until the run ends, for backends that read logs in chunks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def follow(read: Callable[[int], bytes], finished: Callable[[], bool], out: TextIO, *,
           follow: bool, interval: float = 1.0) -> bool:
    """Copy a log to ``out`` from its start; with ``follow``, keep copying until the run ends.

    ``read(offset)`` returns the log's bytes from ``offset`` on (``b""`` when there are none
    yet, or no log); ``finished()`` says whether the run has ended. After the run ends the
    log is read once more, so its last lines are never lost. Bytes are decoded as UTF-8
    across chunk boundaries.
    """
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")("replace")
    offset = 0

    def copy() -> bool:
        nonlocal offset
        chunk = read(offset)
        if chunk:
            out.write(dec.decode(chunk))
            out.flush()
            offset += len(chunk)
        return bool(chunk)

    copy()
    while follow:
        if not copy():
            if finished():
                copy()
                break
            time.sleep(interval)
    rest = dec.decode(b"", final=True)
    if rest:
        out.write(rest)
        out.flush()
    return True


__all__ = ["follow"]
