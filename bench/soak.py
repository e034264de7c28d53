"""A one-hour-equivalent soak: 360 beats at a short interval, memory flat.

    python bench/soak.py [--interval 0.1] [--beats 360] [--rounds 1]

A slow crawl (DOWNLOAD_DELAY, one request at a time) long enough for the
given number of beats runs without monitoring and with scrapy-heartbeat
posting to the reference receiver every ``interval`` seconds; RSS growth
over each crawl is compared between the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import crawl, receiver, save, site_server

MIB = 1024 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--beats", type=int, default=360)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    seconds = args.interval * args.beats * 1.05
    delay = 0.01
    pages = int(seconds / delay)
    growth: dict[str, list[float]] = {"none": [], "heartbeat": []}
    beats: list[int] = []
    with site_server(pages) as site, receiver() as api:
        for n in range(args.rounds):
            for name, variant in (("none", "none"), ("heartbeat", f"heartbeat-{args.interval}s")):
                r = crawl(variant, site.url, api.url, delay=delay)
                growth[name].append((r["rss_end"] - r["rss_start"]) / MIB)
                if name == "heartbeat":
                    beats.append(int(r["heartbeat_ok"]))
                print(
                    f"round {n + 1} {name:9} {r['crawl_seconds']:.1f} s, {r['items']} pages, "
                    f"RSS {r['rss_start'] / MIB:.1f} -> {r['rss_end'] / MIB:.1f} MiB, "
                    f"beats ok {r['heartbeat_ok']}",
                    flush=True,
                )
    extra = [h - b for b, h in zip(growth["none"], growth["heartbeat"], strict=True)]
    print(
        f"\nRSS growth, MiB: none {growth['none']}, heartbeat {growth['heartbeat']}; "
        f"heartbeat - none: median {statistics.median(extra):.2f} MiB; beats {beats}"
    )
    save(
        "soak",
        {"interval": args.interval, "beats": beats, "growth_mib": growth, "extra_mib": extra},
    )
    ok = statistics.median(extra) <= 1.0 and min(beats) >= args.beats
    print("targets (>= beats, growth within 1 MiB of none):", "PASS" if ok else "MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
