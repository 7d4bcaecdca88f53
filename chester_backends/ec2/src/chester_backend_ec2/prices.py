"""Hourly cost estimates: spot prices from DescribeSpotPriceHistory, on-demand prices from the
``hourly_price`` option or a small table, "unknown" otherwise (no boto3 import here).

The table holds the on-demand list prices (Linux, us-east-1, USD per instance-hour) of a few
common types; other regions cost somewhat more. It is a guide, not a bill: set
``hourly_price`` for your region or your negotiated prices (see docs/backends/ec2.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

#: On-demand list prices, Linux, us-east-1, USD per hour.
ON_DEMAND_USD_PER_HOUR: Mapping[str, float] = {
    "t3.nano": 0.0052, "t4g.nano": 0.0042, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832,
    "m5.large": 0.096, "m5.xlarge": 0.192, "c5.xlarge": 0.17,
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176, "g4dn.12xlarge": 3.912, "g4dn.16xlarge": 4.352,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672, "g5.16xlarge": 4.096, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48,
}

SPOT = "spot price now"
LISTED = "on-demand list price (us-east-1)"
OPTION = "hourly_price"


def on_demand(o: Any, itype: str) -> tuple[float | None, str | None]:
    """(USD per hour, where it comes from) of an on-demand instance of this type."""
    hp = o.hourly_price
    if isinstance(hp, Mapping):
        if itype in hp:
            return float(hp[itype]), OPTION
    elif hp is not None:
        return float(hp), OPTION
    if itype in ON_DEMAND_USD_PER_HOUR:
        return ON_DEMAND_USD_PER_HOUR[itype], LISTED
    return None, None


def spot_now(ec2: Any, itype: str, zone: str | None,
             cache: dict[tuple[str, str | None], float | None]) -> float | None:
    """The current spot price of a type in a zone (every zone's highest when the zone is not
    known); None when the history cannot be read (a price is a nicety: never an error)."""
    key = (itype, zone)
    if key not in cache:
        try:
            kw: dict[str, Any] = {"InstanceTypes": [itype], "StartTime": time.time(),
                                  "ProductDescriptions": ["Linux/UNIX",
                                                          "Linux/UNIX (Amazon VPC)"]}
            if zone:
                kw["AvailabilityZone"] = zone
            hist = ec2.describe_spot_price_history(**kw)["SpotPriceHistory"]
            latest: dict[str, tuple[Any, float]] = {}
            for h in hist:
                if zone and h.get("AvailabilityZone") not in (zone, None):
                    continue
                z = h.get("AvailabilityZone") or ""
                if z not in latest or h["Timestamp"] > latest[z][0]:
                    latest[z] = (h["Timestamp"], float(h["SpotPrice"]))
            cache[key] = max(p for _, p in latest.values()) if latest else None
        except Exception:
            cache[key] = None
    return cache[key]


def instance_prices(o: Any, ec2: Any, insts: Iterable[Mapping]) -> dict[str, tuple[float | None,
                                                                               str | None]]:
    """Instance id -> (USD per hour or None, source) for DescribeInstances-like dicts."""
    cache: dict[tuple[str, str | None], float | None] = {}
    out: dict[str, tuple[float | None, str | None]] = {}
    for i in insts:
        itype = i.get("InstanceType") or ""
        if i.get("InstanceLifecycle") == "spot":
            zone = (i.get("Placement") or {}).get("AvailabilityZone")
            p = spot_now(ec2, itype, zone, cache)
            out[i["InstanceId"]] = (p, SPOT if p is not None else None)
        else:
            out[i["InstanceId"]] = on_demand(o, itype)
    return out


def usd(x: float) -> str:
    """Dollars for people, never in exponent notation: cents from a dollar up (``$2.01``,
    ``$1,452.30``), three significant digits below (``$0.0208``, ``$0.50``, ``$0.00003``)."""
    import math

    if x >= 1 or x <= 0:
        return f"${x:,.2f}"
    digits = max(2, 2 - math.floor(math.log10(x)))
    text = f"{x:.{digits}f}".rstrip("0")
    if len(text.partition(".")[2]) < 2:
        text = f"{x:.2f}"
    return "$" + text


def total_line(prices: Mapping[str, tuple[float | None, str | None]]) -> str:
    """``about $1.23/h (spot price now for 2, unknown for 1)``."""
    known = [p for p, _ in prices.values() if p is not None]
    by_source: dict[str, int] = {}
    for p, src in prices.values():
        by_source[src if p is not None and src else "unknown"] = \
            by_source.get(src if p is not None and src else "unknown", 0) + 1
    detail = ", ".join(f"{k} for {n}" for k, n in sorted(by_source.items()))
    if not known:
        return f"hourly cost unknown ({detail}; set hourly_price)"
    return f"about {usd(sum(known))}/h ({detail})"


def bound_line(o: Any, types: list[str], n: int) -> str:
    """What the prepare summary says before anything is launched (no AWS call): on-demand,
    about n x the price; spot, at most n x max_price or n x the on-demand price (AWS's
    default maximum)."""
    if o.spot and o.max_price:
        return f"spot at most {usd(n * float(o.max_price))}/h (max_price; actual spot " \
               "price shown at launch)"
    prices = [on_demand(o, t)[0] for t in types]
    if any(p is None for p in prices):
        missing = ", ".join(t for t, p in zip(types, prices, strict=True) if p is None)
        return f"hourly cost unknown for {missing} (set hourly_price)"
    top = max(p for p in prices if p is not None)
    if o.spot:
        return f"spot at most {usd(n * top)}/h (the on-demand price; actual spot price " \
               "shown at launch)"
    return f"about {usd(n * top)}/h on-demand"
