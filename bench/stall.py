"""Never blocking: the event loop's largest stall and the crawl's throughput
while the monitoring API misbehaves.

    python bench/stall.py [--pages 3000] [--rounds 5] [--delay S] [--save NAME]

Each round crawls the local site without monitoring, then with
scrapy-heartbeat (a beat every second) against an API that hangs, one that
answers after 5 s, and one that refuses connections, then scrapeops-scrapy
against the same slow and refusing APIs, then without monitoring again (the
A/A control: how far two identical runs differ in these figures); round n
starts n places further down that list. A probe in
the crawl process is due every 10 ms; its largest lateness is the largest
stall (its 99th percentile is reported too: the largest alone is noisy, since
Scrapy's own busiest loop iterations and GC pauses set it). For
scrapy-heartbeat the longest its own work ran on the loop thread is reported
as well, and the most CPU time its worker thread spent on one HTTP attempt
(its Python work holds the GIL, which the loop thread may wait for; 0 when
no attempt ended during the crawl, as against the hanging API): together,
what one beat can add to a stall, at most. The crawl's close is not
measured here (see crawl_cost.py), so these runs give the final beat 2 s
(HEARTBEAT_CLOSE_TIMEOUT). scrapeops-scrapy against a hanging API is not run:
its requests.post() on the reactor thread waits 30 s, 3 times, per call
(scrapeops_scrapy/core/api.py: TIMEOUT = 30, RETRY_LIMIT = 3).

Two profiles. By default the crawl runs as fast as it can (32 requests at
once): the loop is always busy, and Scrapy's own busiest iterations set a
largest stall near 100 ms that moves by tens of milliseconds between
identical runs, so "within 5 ms" does not resolve. With ``--delay S``
(``DOWNLOAD_DELAY``, one request at a time: the quiet profile) the loop is
mostly idle, and what a beat adds to a stall (its work on the loop, the
loop's wait for the GIL while the worker runs Python) would stand out; the
delay sets the pace, so throughput is printed but not judged. What is left
then is a full garbage collection (generation 2) of the crawl's heap, once
in a 1,000-page crawl: it stops the loop for 35-75 ms here, at a time any
change in allocations moves. So each run also records every collection
(``BENCH_GC=1``) and reports its largest stall with the collections inside
it taken out (a few milliseconds without monitoring), and its longest full
collection. Both stall figures get a verdict from the interval for each
heartbeat row's median difference (``median_interval``); a figure resolves
when the A/A control's interval stays within 5 ms of 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import crawl, median_interval, rotated, save, site_server, summary
from tests.servers import HeartbeatServer, free_port

FAST_CLOSE = {"HEARTBEAT_CLOSE_TIMEOUT": 2, "HEARTBEAT_RETRY_DELAY": 0.5}
RUNS = [
    ("none", None),
    ("heartbeat-1s", "hang"),
    ("heartbeat-1s", "slow:5"),
    ("heartbeat-1s", "refused"),
    ("scrapeops", "slow:5"),
    ("scrapeops", "refused"),
    ("none-again", None),  # the A/A control: how far two unmonitored runs differ
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-peers", action="store_true", help="leave scrapeops-scrapy out")
    parser.add_argument(
        "--delay",
        type=float,
        default=None,
        help="DOWNLOAD_DELAY in seconds, one request at a time: the quiet profile",
    )
    parser.add_argument("--save", default="stall", help="results file name (bench/results/)")
    return parser.parse_args()


def crawl_rounds(
    args: argparse.Namespace, runs: list[tuple[str, str | None]]
) -> dict[str, list[dict[str, float]]]:
    """Every run of every round, by ``"<variant> <api behaviour>"``."""
    apis = {b: HeartbeatServer(behaviour=b) for b in ("hang", "slow:5")}
    refused = f"http://127.0.0.1:{free_port()}"
    results: dict[str, list[dict[str, float]]] = {f"{v} {b}": [] for v, b in runs}
    try:
        with site_server(args.pages) as site:
            for n in range(args.rounds):
                for variant, behaviour in rotated(runs, n):
                    if behaviour is None:
                        api = site.url
                    else:
                        api = refused if behaviour == "refused" else apis[behaviour].url
                    r = crawl(
                        variant,
                        site.url,
                        api,
                        delay=args.delay,
                        extra=FAST_CLOSE,
                        env={"BENCH_GC": "1"},
                    )
                    results[f"{variant} {behaviour}"].append(r)
                    show_run(n, variant, behaviour, r)
    finally:
        for server in apis.values():
            server.stop()
    return results


def show_run(n: int, variant: str, behaviour: str | None, r: dict[str, float]) -> None:
    print(
        f"round {n + 1} {variant:13} api={behaviour or '-':8} "
        f"stall max {r['stall_max_ms']:7.1f} ms, {r['pages_per_second']} pages/s, "
        f"wall {r['wall_seconds']:.1f} s, heartbeat on the loop max "
        f"{r['heartbeat_loop_max_ms']} ms, worker CPU max "
        f"{r['heartbeat_worker_cpu_max_ms']} ms",
        flush=True,
    )


def figures(base: list[dict[str, float]], measured: list[dict[str, float]]) -> dict[str, Any]:
    """One run's figures over the rounds, each beside the same round's ``base``."""
    pairs = list(zip(base, measured, strict=True))
    extra = [r["stall_max_ms"] - b["stall_max_ms"] for b, r in pairs]
    outside_extra = [r["stall_max_outside_gc_ms"] - b["stall_max_outside_gc_ms"] for b, r in pairs]
    rate = [r["pages_per_second"] / b["pages_per_second"] for b, r in pairs]
    return {
        "heartbeat_loop_max_ms": [r["heartbeat_loop_max_ms"] for r in measured],
        "heartbeat_worker_cpu_max_ms": [r["heartbeat_worker_cpu_max_ms"] for r in measured],
        "stall_max_ms": [r["stall_max_ms"] for r in measured],
        "stall_p99_ms": [r["stall_p99_ms"] for r in measured],
        "stall_extra_ms": extra,
        "stall_max_outside_gc_ms": [r["stall_max_outside_gc_ms"] for r in measured],
        "stall_outside_gc_extra_ms": outside_extra,
        "gc_full_max_ms": [r["gc_full_max_ms"] for r in measured],
        "gc_full_collections": [r["gc_full_collections"] for r in measured],
        "gc_ms": [r["gc_ms"] for r in measured],
        "throughput_ratio": rate,
        "stall_extra_ms_median": statistics.median(extra),
        "stall_outside_gc_extra_ms_median": statistics.median(outside_extra),
        "throughput_ratio_median": statistics.median(rate),
    }


def show_table(report: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'run':26} {'stall max ms':>22} {'stall - none, ms':>22} {'stall p99 ms':>22} "
        f"{'throughput ratio':>22} {'heartbeat on loop, ms':>22} {'worker CPU/beat, ms':>22} "
        f"{'max outside GC, ms':>22} {'outside GC - none, ms':>22} {'full GC max, ms':>22}"
    )
    for name, f in report.items():
        print(
            f"{name:26} {summary(f['stall_max_ms'], 1):>22} "
            f"{summary(f['stall_extra_ms'], 1):>22} {summary(f['stall_p99_ms'], 1):>22} "
            f"{summary(f['throughput_ratio']):>22} "
            f"{summary(f['heartbeat_loop_max_ms'], 2):>22} "
            f"{summary(f['heartbeat_worker_cpu_max_ms'], 2):>22} "
            f"{summary(f['stall_max_outside_gc_ms'], 1):>22} "
            f"{summary(f['stall_outside_gc_extra_ms'], 1):>22} "
            f"{summary(f['gc_full_max_ms'], 1):>22}"
        )


def show_verdicts(report: dict[str, dict[str, Any]]) -> None:
    """Each stall figure against its 5 ms target, if the A/A control resolves it."""
    for figure, key in (
        ("largest stall", "stall_extra_ms"),
        ("largest stall outside garbage collections", "stall_outside_gc_extra_ms"),
    ):
        aa_low, aa_high, coverage = median_interval(report["none-again None"][key])
        resolves = max(abs(aa_low), abs(aa_high)) < 5
        print(
            f"\n{figure} within 5 ms of none; intervals for the median ({coverage:.0%}): "
            f"A/A {aa_low:.1f} to {aa_high:.1f} ms" + ("" if resolves else ", does not resolve")
        )
        for name in (k for k in report if k.startswith("heartbeat")):
            value = report[name][f"{key}_median"]
            low, high, _ = median_interval(report[name][key])
            verdict = ("met" if value <= 5 else "NOT MET") if resolves else "does not resolve"
            print(f"  {name:24} {value:6.1f} ms ({low:.1f} to {high:.1f}): {verdict}")


def main() -> int:
    args = parse_args()
    runs = [run for run in RUNS if not (args.no_peers and run[0] == "scrapeops")]
    results = crawl_rounds(args, runs)
    base = results["none None"]
    report = {name: figures(base, measured) for name, measured in results.items()}
    profile = f"quiet: DOWNLOAD_DELAY {args.delay:g} s" if args.delay else "busy"
    print(f"\n{args.pages} pages, {args.rounds} rounds, {profile}; median (min–max)")
    show_table(report)
    save(
        args.save,
        {"pages": args.pages, "rounds": args.rounds, "delay": args.delay, "runs": report},
    )
    show_verdicts(report)
    if not args.delay:
        throughput = all(
            report[k]["throughput_ratio_median"] >= 0.98
            for k in report
            if k.startswith("heartbeat")
        )
        print("throughput within 2 %:", "met" if throughput else "NOT MET", "(see the A/A row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
