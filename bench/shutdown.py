"""Shutdown: how much later the process exits with scrapy-heartbeat than
without, the API healthy.

    python bench/shutdown.py [--pages 500] [--rounds 15]

The time from Scrapy's "Closing spider" line to the process's exit does not
grow with the crawl, so short crawls give many pairs cheaply: each round runs
no monitoring, scrapy-heartbeat at 10 s and at 1 s (posting to the reference
receiver, the final beat included), and no monitoring again (the A/A
control). Reported: the extra milliseconds over the round's unmonitored run,
median (min–max).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import crawl, receiver, save, site_server, summary

VARIANTS = ["none", "heartbeat-10s", "heartbeat-1s", "none-again"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    finals: list[int] = []
    with site_server(args.pages) as site, receiver() as api:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                r = crawl(variant, site.url, api.url)
                seconds[variant].append(r["shutdown_seconds"])
                if variant.startswith("heartbeat"):
                    finals.append(r["heartbeat_ok"])
    print(f"\n{args.pages}-page crawls, {args.rounds} rounds; exit after 'Closing spider'")
    report = {}
    for variant in VARIANTS:
        extra = [(s - b) * 1000 for b, s in zip(seconds["none"], seconds[variant], strict=True)]
        own = [s * 1000 for s in seconds[variant]]
        report[variant] = {
            "shutdown_ms": own,
            "extra_ms": extra,
            "extra_ms_median": statistics.median(extra),
        }
        print(f"{variant:14} {summary(own, 1):>24} ms, extra {summary(extra, 1):>24} ms")
    # At least the first and the final beat delivered in every monitored run:
    # a fast exit that dropped the final beat would be no result.
    print(f"beats delivered per monitored run: min {min(finals)}, max {max(finals)}")
    save(
        "shutdown",
        {"pages": args.pages, "rounds": args.rounds, "variants": report, "beats": finals},
    )
    ok = min(finals) >= 2 and all(
        report[v]["extra_ms_median"] <= 50 for v in VARIANTS if v.startswith("heartbeat")
    )
    print("target (median extra <= 50 ms):", "PASS" if ok else "MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
