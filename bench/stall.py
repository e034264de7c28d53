"""Never blocking: the event loop's largest stall and the crawl's throughput
while the monitoring API misbehaves.

    python bench/stall.py [--pages 3000] [--rounds 5]

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
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import crawl, rotated, save, site_server, summary
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-peers", action="store_true", help="leave scrapeops-scrapy out")
    args = parser.parse_args()
    runs = [run for run in RUNS if not (args.no_peers and run[0] == "scrapeops")]
    apis = {b: HeartbeatServer(behaviour=b) for b in ("hang", "slow:5")}
    refused = f"http://127.0.0.1:{free_port()}"
    results: dict[str, list[dict[str, float]]] = {f"{v} {b}": [] for v, b in runs}
    try:
        with site_server(args.pages) as site:
            for n in range(args.rounds):
                for variant, behaviour in rotated(runs, n):
                    api = (
                        refused
                        if behaviour == "refused"
                        else apis[behaviour].url
                        if behaviour
                        else site.url
                    )
                    if variant == "scrapeops" and behaviour != "refused":
                        api = apis[behaviour].url  # type: ignore[index]
                    r = crawl(variant, site.url, api, extra=FAST_CLOSE)
                    results[f"{variant} {behaviour}"].append(r)
                    print(
                        f"round {n + 1} {variant:13} api={behaviour or '-':8} "
                        f"stall max {r['stall_max_ms']:7.1f} ms, {r['pages_per_second']} pages/s, "
                        f"wall {r['wall_seconds']:.1f} s, heartbeat on the loop max "
                        f"{r['heartbeat_loop_max_ms']} ms, worker CPU max "
                        f"{r['heartbeat_worker_cpu_max_ms']} ms",
                        flush=True,
                    )
    finally:
        for server in apis.values():
            server.stop()
    base = results["none None"]
    report = {}
    print(f"\n{args.pages} pages, {args.rounds} rounds; median (min–max)")
    print(
        f"{'run':26} {'stall max ms':>22} {'stall - none, ms':>22} {'stall p99 ms':>22} "
        f"{'throughput ratio':>22} {'heartbeat on loop, ms':>22} {'worker CPU/beat, ms':>22}"
    )
    for name, runs in results.items():
        pairs = list(zip(base, runs, strict=True))
        stall = [r["stall_max_ms"] for r in runs]
        p99 = [r["stall_p99_ms"] for r in runs]
        extra = [r["stall_max_ms"] - b["stall_max_ms"] for b, r in pairs]
        rate = [r["pages_per_second"] / b["pages_per_second"] for b, r in pairs]
        loop = [r["heartbeat_loop_max_ms"] for r in runs]
        worker = [r["heartbeat_worker_cpu_max_ms"] for r in runs]
        report[name] = {
            "heartbeat_loop_max_ms": loop,
            "heartbeat_worker_cpu_max_ms": worker,
            "stall_max_ms": stall,
            "stall_p99_ms": p99,
            "stall_extra_ms": extra,
            "throughput_ratio": rate,
            "stall_extra_ms_median": statistics.median(extra),
            "throughput_ratio_median": statistics.median(rate),
        }
        print(
            f"{name:26} {summary(stall, 1):>22} {summary(extra, 1):>22} {summary(p99, 1):>22} "
            f"{summary(rate):>22} {summary(loop, 2):>22} {summary(worker, 2):>22}"
        )
    save("stall", {"pages": args.pages, "rounds": args.rounds, "runs": report})
    ours = [k for k in report if k.startswith("heartbeat")]
    ok = all(
        report[k]["stall_extra_ms_median"] <= 5 and report[k]["throughput_ratio_median"] >= 0.98
        for k in ours
    )
    print("targets (stall within 5 ms of none, throughput within 2 %):", "PASS" if ok else "MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
