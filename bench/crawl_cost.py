"""What monitoring costs a crawl, side by side with the alternatives.

    python bench/crawl_cost.py [--pages 20000] [--rounds 5]

Each round crawls the same local site once per variant: no monitoring
(Scrapy's defaults), scrapy-heartbeat at 10 s and at 1 s (posting to the
reference receiver), scrapeops-scrapy (posting to a local stub of its API),
spidermon (a periodic monitor suite every 10 s), and the unmonitored crawl
again (the A/A control: the noise floor). Round n starts n places further
down that list, so that no variant always runs in the same place in a
round. Ratios are taken against the unmonitored crawl of the same round,
then summarised as median (min–max) over the rounds. CPU is the crawl
process's user + sys time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import crawl, receiver, rotated, save, site_server, summary

# none-again repeats the unmonitored crawl: its ratio to "none" is the A/A
# control, the noise floor of this machine, against which the others are read.
VARIANTS = ["none", "heartbeat-10s", "heartbeat-1s", "scrapeops", "spidermon", "none-again"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with site_server(args.pages) as site, receiver() as api:
        for n in range(args.rounds):
            for variant in rotated(variants, n):
                target = site.url if variant == "scrapeops" else api.url
                result = crawl(variant, site.url, target)
                runs[variant].append(result)
                print(
                    f"round {n + 1}/{args.rounds} {variant:14} {result['items']} items, "
                    f"{result['cpu_seconds']:.2f} CPU s, {result['wall_seconds']:.2f} s, "
                    f"{result['pages_per_second']} pages/s, stall max {result['stall_max_ms']} ms, "
                    f"shutdown {result['shutdown_seconds']:.3f} s, beats ok "
                    f"{result['heartbeat_ok']}",
                    flush=True,
                )

    base = runs["none"]
    report: dict[str, dict[str, object]] = {}
    print(f"\n{args.pages} pages, {args.rounds} rounds; median (min–max) over rounds")
    print(
        f"{'variant':14} {'CPU ratio':>22} {'wall ratio':>22} {'pages/s ratio':>22} "
        f"{'stall max ms':>22} {'shutdown +ms':>22}"
    )
    for variant in variants:
        pairs = list(zip(base, runs[variant], strict=True))
        cpu = [r["cpu_seconds"] / b["cpu_seconds"] for b, r in pairs]
        wall = [r["wall_seconds"] / b["wall_seconds"] for b, r in pairs]
        rate = [r["pages_per_second"] / b["pages_per_second"] for b, r in pairs]
        stall = [r["stall_max_ms"] for r in runs[variant]]
        shutdown = [(r["shutdown_seconds"] - b["shutdown_seconds"]) * 1000 for b, r in pairs]
        report[variant] = {
            "cpu_ratio_median": statistics.median(cpu),
            "cpu_ratio": cpu,
            "wall_ratio_median": statistics.median(wall),
            "wall_ratio": wall,
            "throughput_ratio_median": statistics.median(rate),
            "throughput_ratio": rate,
            "stall_max_ms": stall,
            "shutdown_extra_ms_median": statistics.median(shutdown),
            "shutdown_extra_ms": shutdown,
            "runs": runs[variant],
        }
        print(
            f"{variant:14} {summary(cpu):>22} {summary(wall):>22} {summary(rate):>22} "
            f"{summary(stall, 1):>22} {summary(shutdown, 1):>22}"
        )
    path = save("crawl_cost", {"pages": args.pages, "rounds": args.rounds, "variants": report})
    print(f"\nsaved {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    heartbeat = [v for v in variants if v.startswith("heartbeat")]
    peers = [v for v in variants if v not in (*heartbeat, "none", "none-again")]
    ok = all(report[v]["cpu_ratio_median"] <= 1.02 for v in heartbeat)  # type: ignore[operator]
    ok = ok and all(
        report[h]["cpu_ratio_median"] < report[p]["cpu_ratio_median"]  # type: ignore[operator]
        for h in heartbeat
        for p in peers
    )
    print("targets (CPU ratio <= 1.02 and below every peer):", "PASS" if ok else "MISSED")
    if "none-again" in report:
        spread = report["none-again"]["cpu_ratio"]
        print(
            f"A/A control (none again / none): CPU ratio {summary(spread)}: differences "
            "smaller than this spread are not resolved by this machine"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
