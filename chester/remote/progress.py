"""Progress bars for transfers: a rich bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A transient bar counting runs (or bytes, with ``unit="bytes"``).

    Shown only when stderr is a terminal and there is something to count; otherwise every
    call does nothing. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, label: str, total: int, *, unit: str = "runs"):
        self._bar: Any = None
        self._task: Any = None
        if not (total and sys.stderr.isatty()):
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        cols: list[Any] = [TextColumn(label), BarColumn()]
        cols += [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else \
            [MofNCompleteColumn(), TimeRemainingColumn()]
        self._bar = Bar(*cols, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Progress"]
