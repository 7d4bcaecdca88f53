"""The ``pool`` backend type: one sweep spread over several configured backends (its
*members*), free capacity first, paid capacity under a budget.

A pool is no plugin of its own: the core provides its type (:class:`PoolPlugin`, registered
by every plugin manager), and the launcher and the ``Sweep`` handle route each run to its
member, whose own plugin and hooks do the work. The job store records each run's member
(``runs.member``). Where a run goes is decided here, by :func:`plan_placement`, from what
each member says of itself (``chester_capacity``) and what the sweep has cost so far
(``chester_spend``); neither hook names a backend, so the core imports none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from chester.plugin.manager import hookimpl
from chester.plugin.records import BackendSpec, Capabilities, Capacity, Spend

POOL_TYPE = "pool"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")
_UNIT_S = {None: 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration_s(value: Any) -> float:
    """Seconds from a number of seconds or a text like ``"90s"``, ``"10m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        raise ValueError(f"a duration is a number of seconds or a text like '10m', not {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"a duration is a number of seconds or a text like '10m', "
                             f"'90s', '1.5h', not {value!r}")
        out = float(m.group(1)) * _UNIT_S[m.group(2)]
    if out < 0 or math.isnan(out):
        raise ValueError(f"a duration must be at least 0, got {value!r}")
    return out


def _tupled(value):
    # tuple itself as the converter costs attrs an inspect.signature of a builtin, which
    # compiles tokenize's patterns (some 3 ms of each launch); unannotated, as tuple is, so
    # the generated __init__ reads the same
    return tuple(value)


def _optional_duration(value: Any) -> float | None:
    return None if value is None else duration_s(value)


def _not_negative(_inst: Any, attr: attrs.Attribute, value: float | None) -> None:
    if value is not None and (value < 0 or math.isnan(value)):
        raise ValueError(f"budget.{attr.name} must be at least 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Budget:
    """What a pool may spend; a unit left out is not capped."""

    usd: float | None = attrs.field(default=None, validator=_not_negative, metadata={
        "help": "cap on money for paid members (EC2: prices x instance hours), in US "
                "dollars; without it no run goes to a paid member"})
    su: float | None = attrs.field(default=None, validator=_not_negative, metadata={
        "help": "cap on SLURM service units (sacct's billing TRES x hours); shown in "
                "chester status"})


@attrs.frozen(kw_only=True)
class PoolOptions:
    """Options of ``type: pool`` in chester.yaml."""

    members: tuple[str, ...] = attrs.field(converter=_tupled, metadata={
        "help": "the configured backends the pool spreads runs over, free ones first "
                "(e.g. [lab, gl, aws])"})
    budget: Budget = attrs.field(factory=Budget, metadata={
        "help": "caps: {usd: 50} (money on paid members), {su: 1000} (SLURM service units)"})
    # a number of seconds or a text like "10m" in chester.yaml; seconds (a float) once built
    max_wait: float | str = attrs.field(default=600.0, converter=duration_s, metadata={
        "help": "how long a run may wait for free capacity before it goes to a paid "
                "member or moves (seconds, or '10m')"})
    run_time: float | str | None = attrs.field(default=None, converter=_optional_duration,
                                               metadata={
        "help": "how long one run takes (seconds, or '1h'): the wait behind busy members "
                "and, where a member sets no time limit, a run's projected cost"})

    @property
    def max_wait_s(self) -> float:
        return float(self.max_wait)

    @property
    def run_time_s(self) -> float | None:
        return None if self.run_time is None else float(self.run_time)

    @members.validator
    def _check_members(self, _attr: attrs.Attribute, value: tuple[str, ...]) -> None:
        if not value:
            raise ValueError("members is empty; list the configured backends the pool uses, "
                             "e.g. members: [lab, gl, aws]")
        bad = [m for m in value if not isinstance(m, str) or not m]
        if bad:
            raise ValueError(f"members must be backend names, not {bad[0]!r}")
        twice = sorted({m for m in value if value.count(m) > 1})
        if twice:
            raise ValueError(f"members lists {twice[0]!r} twice; name each backend once")


class PoolPlugin:
    """The core's own plugin providing the ``pool`` type (no lifecycle hooks: the launcher
    and the Sweep handle call each run's member)."""

    @hookimpl
    def chester_backends(self) -> list[BackendSpec]:
        return [BackendSpec(
            name=POOL_TYPE, options_cls=PoolOptions,
            summary="one sweep over several backends: free capacity first, paid under a budget",
            capabilities=Capabilities(remote=True, shared_fs=False))]


def check_members(name: str, options: PoolOptions, resolve: Any, type_of: Any,
                  where: str) -> list[Any]:
    """Each member's validated configuration (``resolve(member)``; ``type_of(member)`` is
    its type before validation), or a one-line
    :class:`~chester.plugin.errors.ConfigError` naming the member and the fix."""
    from chester.plugin.errors import ConfigError, UserError

    key = f"backends.{name}.members"
    out = []
    for m in options.members:
        if m == name:
            raise ConfigError(where, key, f"the pool {name!r} lists itself",
                              "a pool's members are other backends; remove it")
        if type_of(m) == POOL_TYPE:
            raise ConfigError(where, key, f"member {m!r} is itself a pool",
                              f"list {m!r}'s own members here instead (no pool inside a pool)")
        try:
            out.append(resolve(m))
        except UserError as exc:
            raise ConfigError(where, key, f"member {m!r}: {exc}",
                              "configure it under backends:, or remove it from members") \
                from None
    return out


# -- placement ---------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class Placement:
    """Where a pool sends runs: ``counts`` per member in the order runs are handed out
    (the first runs to the first entry), ``held`` runs go nowhere for now."""

    counts: tuple[tuple[str, int], ...]
    held: int = 0
    notices: tuple[str, ...] = ()
    #: the paid spend projected once these runs are placed (money as US dollars)
    projected_usd: float = 0.0


def run_cost(cap: Capacity, run_time_s: float | None) -> float | None:
    """The most one run costs on a paid member: its price per run-hour x the member's
    time limit (else the pool's ``run_time``); None when neither is known."""
    hours = cap.run_hours if cap.run_hours is not None else (
        run_time_s / 3600.0 if run_time_s is not None else None)
    if cap.usd_per_run_hour is None or hours is None:
        return None
    return cap.usd_per_run_hour * hours


def usd(x: float) -> str:
    """Money for people, never in exponent notation: cents (``$1,452.30``, ``$0.50``), and
    three significant digits below a cent (``$0.00312``)."""
    if x >= 0.01 or x <= 0:
        return f"${x:,.2f}"
    digits = 2 - math.floor(math.log10(x))
    return "$" + f"{x:.{digits}f}".rstrip("0")


def plan_placement(n: int, members: Sequence[tuple[str, Capacity]], *, max_wait_s: float,
                   budget_usd: float | None, projected_usd: float,
                   run_time_s: float | None, su_left: float | None = None) -> Placement:
    """Where ``n`` runs go. Free capacity first (each free member's ``free``, in the
    pool's order); then a free member that would start them within ``max_wait_s``; then
    paid members, as far as the budget holds (the projected spend, ``projected_usd`` so far
    plus each run's most, never passes ``budget_usd``; ``su_left`` at or below 0 closes the
    members that use service units); then the free member that starts
    them soonest, as far as it has room, and where no member can say, spread evenly over
    the free members with room. What finds no room is held (placed while a laptop
    watches)."""
    left = n
    counts: dict[str, int] = {}
    room: dict[str, float] = {m: math.inf if c.room is None else max(0, c.room)
                              for m, c in members}
    notices: list[str] = []
    if su_left is not None and su_left <= 0:  # the service units are used up
        closed = [m for m, c in members if c.charges_su and room[m]]
        for m in closed:
            room[m] = 0
        if closed and n:
            notices.append(f"service-unit budget used up: no new runs to "
                           f"{', '.join(repr(m) for m in closed)}")

    def give(m: str, k: float) -> None:
        nonlocal left
        k = int(min(left, k, room[m]))
        if k > 0:
            counts[m] = counts.get(m, 0) + k
            room[m] -= k
            left -= k

    free_members = [(m, c) for m, c in members if not c.paid]
    paid_members = [(m, c) for m, c in members if c.paid]
    for m, c in free_members:  # 1. free now
        give(m, c.free)
    soon = sorted(((c.wait_s, i, m) for i, (m, c) in enumerate(free_members)
                   if c.wait_s is not None and c.wait_s <= max_wait_s), key=lambda t: t[:2])
    for _w, _i, m in soon:  # 2. starts within max_wait on a free member
        give(m, math.inf)
    for m, c in paid_members:  # 3. paid, under the budget
        if not left:
            break
        cost = run_cost(c, run_time_s)
        if budget_usd is None:
            notices.append(f"{left} runs not sent to the paid member {m!r}: the pool has no "
                           "budget (set budget: {usd: N})")
            continue
        if cost is None:
            notices.append(f"{left} runs not sent to the paid member {m!r}: its cost per run "
                           "cannot be projected (give it a time limit, or the pool a run_time)")
            continue
        fits = math.floor((budget_usd - projected_usd) / cost + 1e-9) if cost > 0 else math.inf
        before = left
        give(m, max(0, fits))
        sent = before - left
        projected_usd += sent * cost
        if left and sent < fits:
            continue  # the member had no more room, not the budget
        if left:
            notices.append(f"budget reached: {left} runs not sent to {m!r} (projected "
                           f"{usd(projected_usd)} of {usd(budget_usd)})")
    known = sorted(((c.wait_s, i, m) for i, (m, c) in enumerate(free_members)
                    if c.wait_s is not None), key=lambda t: t[:2])
    for _w, _i, m in known:  # 4. queue on the free member that starts them soonest
        give(m, math.inf)
    unknown = [m for m, c in free_members if c.wait_s is None]
    while left and any(room[m] > 0 for m in unknown):  # ... or, unknown, spread evenly
        for m in unknown:
            give(m, 1)
    if left:
        notices.append(f"{left} runs wait for room in the pool (no member takes more now); "
                       "they are placed while chester monitor (or Sweep.wait) watches")
    return Placement(counts=tuple(counts.items()), held=left, notices=tuple(notices),
                     projected_usd=projected_usd)


def unknown_capacity(note: str = "") -> Capacity:
    """What a member that cannot say its capacity counts as: nothing free, no limit, an
    unknown wait, no price."""
    return Capacity(free=0, room=None, wait_s=None, note=note)


def spend_line(spend: Spend, budget: Budget, *, projected_usd: float | None = None) -> str:
    """``spend: $1.20 so far, $3.40 projected of $50.00; 12.5 SU; 3.2 GPU-hours``."""
    proj = spend.usd_projected if projected_usd is None else projected_usd
    parts = [f"spend: {usd(spend.usd)} so far, {usd(proj)} projected"
             + (f" of {usd(budget.usd)}" if budget.usd is not None else "")]
    if spend.su or budget.su is not None:
        parts.append(f"{spend.su:,.1f} SU" + (f" of {budget.su:,.0f}" if budget.su is not None
                                               else ""))
    if spend.gpu_hours:
        parts.append(f"{spend.gpu_hours:,.1f} GPU-hours")
    return "; ".join(parts)


def member_names(backend: Any) -> Mapping[str, Any]:
    """A pool's members by name (empty for any other backend)."""
    return {m.name: m for m in getattr(backend, "members", ())}


__all__ = ["POOL_TYPE", "Budget", "Placement", "PoolOptions", "PoolPlugin", "check_members",
           "duration_s", "member_names", "plan_placement", "run_cost", "spend_line",
           "unknown_capacity", "usd"]
