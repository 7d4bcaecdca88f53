"""``python -m chester.auto_pull``: the seed's auto-pull poller, now ``chester monitor``."""

from __future__ import annotations

import argparse
import sys

from chester.launcher.monitor import monitor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chester.auto_pull",
                                description="Wait for runs to end and pull their results.")
    p.add_argument("--exp-prefix", default=None, help="only this sweep")
    p.add_argument("--manifest", default=None, help=argparse.SUPPRESS)  # seed flag; the store replaces it
    p.add_argument("--poll-interval", type=float, default=None)
    p.add_argument("--bare", action="store_true")
    p.add_argument("--once", action="store_true")
    a = p.parse_args(argv)
    from chester.plugin.errors import ChesterError

    try:
        return monitor(a.exp_prefix, interval=a.poll_interval, bare=a.bare, once=a.once)
    except ChesterError as exc:
        print(f"chester: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
