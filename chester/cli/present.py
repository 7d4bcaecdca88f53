"""What the commands show about runs: one-line reasons, the status screen, summaries.

Everything here reads store rows (:class:`chester.store.RunRow`) and writes to a rich
``Console`` on a terminal, or plain lines and tab-separated rows when piped. The status
screen fits the terminal: a title that never wraps, one line per state, then the rows that
need attention up to the screen's height, and the count of what it left out. Its optional
columns are declared once, in :data:`COLUMNS`, with the order in which they give way when
the terminal is too narrow.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

#: the order states are counted in (a summary line each)
STATE_ORDER = ("failed", "timeout", "oom", "preempted", "lost", "cancelled", "running",
               "requeued", "queued", "pending", "succeeded")
#: ended without succeeding: these runs are named, each with its reason, wherever a
#: command reports how runs ended
BAD = frozenset({"failed", "timeout", "oom", "preempted", "lost"})
STYLE = {"succeeded": "green", "failed": "bold red", "timeout": "red", "oom": "red",
         "preempted": "red", "lost": "red", "cancelled": "magenta", "running": "cyan",
         "requeued": "yellow", "queued": "yellow", "pending": "dim"}

#: a traceback's header; the exception's line is the first unindented line after its frames
_TRACEBACK = "Traceback (most recent call last):"
#: reasons that only say a process ended: the last line of its stderr says more
_GENERIC = re.compile(r"^(command `.*` exited with status -?\d+|the worker exited with code "
                      r"-?\d+ before it recorded a start.*|job failed with exit code .*|"
                      r"SystemExit\(\d+\))$", re.S)
#: lines of chester's own on a run's stderr (the worker's, a job script's)
_OWN = re.compile(r"^chester(\.worker)?: ")


def _exception_line(tail: str | None) -> str | None:
    """The last exception a Python traceback in ``tail`` ended with (its first line)."""
    if not tail or _TRACEBACK not in tail:
        return None
    after = tail.rsplit(_TRACEBACK, 1)[1].splitlines()
    for line in after[1:]:
        if line.strip() and not line[:1].isspace():
            return line.strip()
    return None


def _last_words(tail: str | None) -> str | None:
    """The last line of ``tail`` that is the run's own (not chester's), if any."""
    for line in reversed((tail or "").splitlines()):
        if line.strip() and not _OWN.match(line):
            return line.strip()
    return None


def one_line(text: str | None) -> str:
    """``text`` on one line (newlines and tabs made spaces)."""
    return " ".join((text or "").split())


def reason(row: Any) -> str:
    """One line saying why a run is in its state: the exception's last line, the signal,
    "no space left on ...", the scheduler's word, who cancelled it; what a queued run
    waits for; first, ``folder reused by PREFIX@N`` for a run whose folder a later launch
    took over. Empty for a run that succeeded or runs without remark."""
    why = _own_reason(row)
    reused = getattr(row, "reused_by", None)
    if reused:
        return f"folder reused by {reused}" + (f"; {why}" if why else "")
    return why


def _own_reason(row: Any) -> str:
    state = row.state.value
    if state in ("queued", "pending", "requeued"):
        return one_line(row.pending_reason or row.reason)
    if state == "succeeded":
        return ""
    if state == "running" and not row.reason:  # what looks after it (a supervisor), if said
        return one_line(row.pending_reason)
    why = one_line(row.reason)
    tail = row.stderr_tail
    if state in BAD:
        exc = _exception_line(tail)
        if exc and (not why or _GENERIC.match(why)):
            code = f" (exit {row.exit_code})" if row.exit_code not in (None, 1) else ""
            return one_line(exc) + code
        if _GENERIC.match(why):
            said = _last_words(tail)
            if said:
                return f"{said} ({why})"
        if not why:
            said = _last_words(tail)
            return said or (f"exit status {row.exit_code}" if row.exit_code is not None
                            else "")
    return why


def state_and_reason(row: Any) -> str:
    """``failed: ValueError: ...``, ``cancelled by chester cancel at 14:02``,
    ``succeeded``."""
    state, why = row.state.value, reason(row)
    if why.startswith(state + " "):
        return why
    return f"{state}: {why}" if why else state


def count_line(rows: Sequence[Any]) -> str:
    """``5 succeeded, 4 failed, 3 cancelled`` in :data:`STATE_ORDER`."""
    counts = counts_by_state(rows)
    return ", ".join(f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s)) or "no runs"


def counts_by_state(rows: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.state.value] = out.get(r.state.value, 0) + 1
    return out


def run_ref(prefix: str, row: Any) -> str:
    """How a command names the run: ``PREFIX:N``."""
    return f"{prefix}:{row.number}"


# -- the status screen's columns -------------------------------------------------------

@attrs.frozen
class Ctx:
    """What a column needs besides the row: the sweep's prefix and the rows shown."""

    prefix: str
    rows: Sequence[Any]


@attrs.frozen
class Column:
    """One column of ``chester status``.

    ``key`` names it in tab-separated output (every column is there, always, in this
    order); ``title`` heads it on a terminal. ``shown`` says whether a terminal table has it
    at all (an optional column: a second launch, a second backend, a second attempt);
    ``gives_way`` is the order in which columns leave a table too wide for the terminal
    (1 first; 0 never); ``flex`` is the free-text column that takes the width left and is
    cut with an ellipsis, never wrapped."""

    key: str
    title: str
    get: Callable[[Any, Ctx], Any]
    shown: Callable[[Ctx], bool] = lambda ctx: True
    gives_way: int = 0
    flex: bool = False
    style: Callable[[Any], str | None] = lambda row: None


def _several(attr: str) -> Callable[[Ctx], bool]:
    return lambda ctx: len({getattr(r, attr) for r in ctx.rows}) > 1


def _any(pred: Callable[[Any], bool]) -> Callable[[Ctx], bool]:
    return lambda ctx: any(pred(r) for r in ctx.rows)


#: Every column of ``chester status``, in the order shown. A new column (a pool's member,
#: its spend) is one more entry here: it is in the TSV and JSON-like output at once, shown
#: on a terminal when ``shown`` says so, and gives way in its turn when space is short.
COLUMNS: tuple[Column, ...] = (
    Column("number", "#", lambda r, c: r.number),
    Column("run", "Run", lambda r, c: r.name),
    Column("launch", "Launch", lambda r, c: r.sweep_id, shown=_several("sweep_id"),
           gives_way=5),
    Column("backend", "Backend", lambda r, c: r.backend, shown=_several("backend"),
           gives_way=6),
    Column("attempt", "Att", lambda r, c: r.attempt, shown=_any(lambda r: r.attempt > 1),
           gives_way=7),
    Column("state", "State", lambda r, c: r.state.value,
           style=lambda r: STYLE.get(r.state.value)),
    Column("reason", "Reason", lambda r, c: reason(r), flex=True),
    Column("exit_code", "Exit", lambda r, c: r.exit_code,
           shown=_any(lambda r: r.exit_code not in (None, 0)), gives_way=4),
    Column("host", "Host", lambda r, c: r.host, shown=_any(lambda r: bool(r.host)),
           gives_way=2),
    Column("remote_id", "Remote id", lambda r, c: r.remote_id,
           shown=_any(lambda r: bool(r.remote_id)), gives_way=1),
    Column("pulled", "Pulled", lambda r, c: "yes" if r.pulled_at else "",
           shown=_any(lambda r: bool(r.pulled_at) and r.backend != "local"), gives_way=3),
    # a pool's run: the member it was placed on (last, so the columns before keep their
    # places in tab-separated output)
    Column("member", "Member", lambda r, c: getattr(r, "member", None),
           shown=_any(lambda r: bool(getattr(r, "member", None))), gives_way=8),
)

_GAP = 2


def _cell(v: Any) -> str:
    return "" if v is None else one_line(str(v))


def fit_columns(rows: Sequence[Any], ctx: Ctx, width: int,
                columns: Sequence[Column] = COLUMNS) -> list[Column]:
    """The columns a terminal table of ``rows`` shows at ``width``: the optional ones that
    apply, less those that give way (in their order) until the reasons fit whole (what
    is still too wide is the reason's to lose: it is cut with an ellipsis)."""
    cols = [c for c in columns if c.shown(ctx)]
    widths = {}
    for c in cols:  # each column's width, measured once
        cells = [len(_cell(c.get(r, ctx))) for r in rows]
        w = max([len(c.title), *cells])
        widths[c.key] = (w if any(cells) else 0) if c.flex else w

    def need(cs: list[Column]) -> int:
        return sum(widths[c.key] + _GAP for c in cs) - _GAP

    if not any(widths[c.key] for c in cols if c.flex):
        cols = [c for c in cols if not c.flex]
    for c in sorted((c for c in cols if c.gives_way), key=lambda c: c.gives_way):
        if need(cols) <= width:
            break
        cols.remove(c)
    return cols


def render_table(console: Any, rows: Sequence[Any], ctx: Ctx,
                 columns: Sequence[Column] | None = None) -> None:
    """The rows as a rich table that fits ``console.width``: every column as wide as its
    widest cell (names whole), the reason as wide as what is left, cut with an ellipsis;
    nothing wrapped."""
    from rich import box
    from rich.table import Table

    cols = list(columns) if columns is not None else fit_columns(rows, ctx, console.width)
    cells = {c.key: [_cell(c.get(r, ctx)) for r in rows] for c in cols}
    widths = {c.key: max([len(c.title)] + [len(x) for x in cells[c.key]]) for c in cols}
    fixed = sum(widths[c.key] for c in cols if not c.flex) + _GAP * (len(cols) - 1)
    for c in cols:
        if c.flex:
            widths[c.key] = max(len(c.title), min(widths[c.key], console.width - fixed))
    # a space of padding on the right and the box's space between columns: _GAP cells
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False,
              expand=False)
    for c in cols:
        t.add_column(c.title, no_wrap=True, overflow="ellipsis", width=widths[c.key])
    for i, r in enumerate(rows):
        row = []
        for c in cols:
            text = cells[c.key][i]
            style = c.style(r)
            row.append(f"[{style}]{_escape(text)}[/]" if style and text else _escape(text))
        t.add_row(*row)
    console.print(t, crop=True, overflow="ellipsis", no_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def tsv_header(columns: Sequence[Column] = COLUMNS, *, sweep: bool = False) -> str:
    return "\t".join((["sweep"] if sweep else []) + [c.key for c in columns])


def tsv_row(row: Any, ctx: Ctx, columns: Sequence[Column] = COLUMNS, *,
            sweep: str | None = None) -> str:
    """One row of pure tab-separated output: every column, each value on one line (tabs
    made spaces), the reason whole."""
    cells = [_cell(c.get(row, ctx)) for c in columns]
    return "\t".join(([sweep] if sweep is not None else []) + cells)


# -- the screen ------------------------------------------------------------------------

_AT_CLOCK = re.compile(r"^(.*) at (\d\d:\d\d(?::\d\d)?)(\b.*)$", re.S)


def _merge_clock_times(reasons: dict[str, int]) -> dict[str, int]:
    """Reasons that differ only in their clock time (``cancelled by chester cancel at
    15:47`` and ``... at 15:48``) counted as one, said with the times' span (``at
    15:47–15:48``)."""
    spans: dict[tuple[str, str], list[str]] = {}
    counts: dict[tuple[str, str], int] = {}
    out: dict[str, int] = {}
    for why, n in reasons.items():
        m = _AT_CLOCK.match(why)
        if not m:
            out[why] = out.get(why, 0) + n
            continue
        key = (m.group(1), m.group(3))
        spans.setdefault(key, []).append(m.group(2))
        counts[key] = counts.get(key, 0) + n
    for (head, tail), times in spans.items():
        lo, hi = min(times), max(times)
        out[f"{head} at {lo if lo == hi else f'{lo}–{hi}'}{tail}"] = counts[(head, tail)]
    return out


def state_lines(rows: Sequence[Any]) -> list[tuple[str, int, str]]:
    """(state, count, what they share) per state, in :data:`STATE_ORDER`: the reason
    every run of that state shares, or the most common ones counted ("4 waiting for a
    free slot; 2 not yet picked up")."""
    out = []
    for state in STATE_ORDER:
        group = [r for r in rows if r.state.value == state]
        if not group:
            continue
        reasons: dict[str, int] = {}
        for r in group:
            why = reason(r)
            if why:
                reasons[why] = reasons.get(why, 0) + 1
        reasons = _merge_clock_times(reasons)
        shared = ""
        if len(reasons) == 1 and sum(reasons.values()) == len(group):
            shared = next(iter(reasons))
        elif reasons and state not in BAD and len(reasons) <= 3:
            shared = "; ".join(f"{n} {why}" for why, n in
                               sorted(reasons.items(), key=lambda kv: -kv[1]))
        out.append((state, len(group), shared))
    return out


def _attention(rows: Sequence[Any]) -> list[Any]:
    """The rows a full screen keeps: ended badly first, then running, in run order."""
    bad = [r for r in rows if r.state.value in BAD]
    going = [r for r in rows if r.state.value in ("running", "requeued")]
    return bad + going


def screen(console: Any, title: str, rows: Sequence[Any], prefix: str, *,
           height: int | None, more: str, show_all: bool = False,
           notes: Sequence[str] = ()) -> None:
    """One sweep's status on a terminal: a title that never wraps, its ``notes`` (a pool's
    spend), a line per state, then every row if they fit in ``height`` lines (else the rows
    that need attention, as many as fit) and a count of what is not shown (``more`` is the
    command that shows it)."""
    from rich.text import Text

    _line(console, Text(title, style="bold"))
    for note in notes:
        _line(console, Text(f"  {note}"))
    for state, n, shared in state_lines(rows):
        line = Text(f"  {n:>{len(str(len(rows)))}} ")
        line.append(state, style=STYLE.get(state))
        if shared.startswith(state + " "):  # "cancelled by ...": said once
            line.append(shared[len(state):])
        elif shared:
            line.append(f": {shared}")
        _line(console, line)
    if not rows:
        return
    # title, notes, states, the blank line before the table
    used = 1 + len(notes) + len(state_lines(rows)) + 1
    # the table's head and rule, the count of runs not shown, the logs hint, the prompt
    fixed = 2 + 1 + (1 if any(r.state.value in BAD for r in rows) else 0) + 1
    room = None if show_all or height is None else max(3, height - used - fixed)
    shown = list(rows)
    if room is not None and len(rows) > room:
        shown = _attention(rows)[:room]
        # keep run order
        order = {id(r): i for i, r in enumerate(rows)}
        shown.sort(key=lambda r: order[id(r)])
    console.print()
    if shown:
        render_table(console, shown, Ctx(prefix=prefix, rows=shown))
    kept = {id(r) for r in shown}
    hidden = [r for r in rows if id(r) not in kept]
    if hidden:
        _line(console, Text(f"{len(hidden)} more not shown ({count_line(hidden)}): {more}",
                            style="dim"))
    bad = [r for r in rows if r.state.value in BAD]
    if bad:
        hint = f"a run's output: chester logs {run_ref(prefix, bad[0])}"
        _line(console, Text(hint, style="dim"))


def ended_report(console: Any | None, ref: str, rows: Sequence[Any], *, prefix: str,
                 elapsed: float | None = None, width: int = 80, limit: int = 20,
                 print_: Callable[[str], None] = print) -> None:
    """How runs ended, for ``--wait`` and ``monitor``: the counts, then each run that did
    not succeed with its reason, one line each (``limit`` of them), and the command that
    shows the rest. On a terminal (``console``) lines are cut to its width; piped, whole."""
    took = f" in {duration(elapsed)}" if elapsed is not None else ""
    lines = [f"{ref}: {count_line(rows)}{took}"]
    bad = [r for r in rows if r.state.value in BAD]
    names = max([len(r.name) for r in bad] + [0])
    refs = max([len(run_ref(prefix, r)) for r in bad] + [0])
    for r in bad[:limit]:
        lines.append(f"  {run_ref(prefix, r):<{refs}}  {r.name:<{names}}  "
                     f"{state_and_reason(r)}")
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more: chester status {prefix}")
    for state, n, shared in state_lines([r for r in rows if r.state.value == "cancelled"]):
        which = " ".join(run_ref(prefix, r) for r in rows if r.state.value == state)
        said = shared[len(state):] if shared.startswith(state + " ") else \
            (f": {shared}" if shared else "")
        lines.append(f"  {n} {state}{said} ({which})")
    if bad:
        lines.append(f"the rest of a run's output: chester logs {run_ref(prefix, bad[0])}")
    if console is not None:
        from rich.text import Text

        for line in lines:
            _line(console, Text(line))
    else:
        for line in lines:
            print_(line)


def _line(console: Any, text: Any) -> None:
    """One line on the terminal, cut with an ellipsis at its width, never wrapped."""
    console.print(text, no_wrap=True, overflow="ellipsis", crop=True, highlight=False)


def duration(s: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def ago(t: float | None, now: float | None = None) -> str:
    if not t:
        return ""
    return duration((now or time.time()) - t) + " ago"


def progress_line(ref: str, rows: Sequence[Any], elapsed: float) -> str:
    """The plain progress line of a wait whose output is not a terminal."""
    ended = sum(1 for r in rows if r.state.terminal)
    return f"{ref}: {ended}/{len(rows)} ended ({count_line(rows)}), {duration(elapsed)} elapsed"


class PlainProgress:
    """Progress as plain lines, for output that is not a terminal: one line at the start,
    then one when the counts change, at most every ``every`` seconds, and one every
    ``quiet`` seconds while nothing changes."""

    def __init__(self, ref: str, print_: Callable[[str], None], *, every: float = 10.0,
                 quiet: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ref, self._print, self.every, self.quiet, self._clock = ref, print_, every, \
            quiet, clock
        self._start = clock()
        self._last_at: float | None = None
        self._last: str | None = None

    def __call__(self, rows: Sequence[Any]) -> None:
        now = self._clock()
        counts = count_line(rows)
        if self._last_at is not None:
            since = now - self._last_at
            if since < self.every or (counts == self._last and since < self.quiet):
                return
        self._last_at, self._last = now, counts
        self._print(progress_line(self.ref, rows, now - self._start))
