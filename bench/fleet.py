"""What fleets cost a crawl: the plain-data marker per page,
and shared counters in Redis per beat.

    python bench/fleet.py [--pages 1000] [--baseline 34e32de] [--crawl-pages 5000] [--rounds 5]

1. Instructions per page (``valgrind --tool=callgrind``, as in
   ``instructions.py``): an N-page crawl minus a 1-page crawl, with and
   without scrapy-heartbeat, for this tree and for ``--baseline`` (a git
   revision, checked out in a temporary worktree), on Scrapy's in-memory
   scheduler and with a ``JOBDIR`` (the disk queue pickles every marker).
   Beats are made rarer than the crawl (one at the start, one at the end), so
   the difference is the per-page work alone.
2. Shared counters: crawls of ``--crawl-pages`` pages with a beat every
   second, without monitoring (twice: the A/A control), with scrapy-heartbeat,
   and with scrapy-heartbeat and ``HEARTBEAT_REDIS_URL`` (a real
   ``redis-server`` on a free port), interleaved over ``--rounds`` rounds.
   Printed: CPU-time ratios, Redis commands per beat (the server's own
   ``INFO commandstats``), and the loop thread's time per beat.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, crawl, receiver, rotated, save, site_server, summary

COLLECTED = re.compile(r"Collected : (\d+)")
RARE = 3600  # seconds between beats: none but the start and final beats
BASELINE = "34e32de"  # a tree without the plain-data marker, to compare with


def count(tree: Path, variant: str, site: str, api: str, extra: dict[str, Any]) -> int:
    """One crawl of ``tree``'s code under callgrind: its instruction count."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = {**extra, "HEARTBEAT_MAX_INTERVAL": RARE}
        if "JOBDIR" in settings:
            settings["JOBDIR"] = str(Path(tmp, "job"))
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(tmp, 'callgrind.out')}",
                sys.executable,
                str(tree / "bench" / "crawl_process.py"),
                variant,
                site,
                api,
            ],
            capture_output=True,
            text=True,
            cwd=tree,
            check=False,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(tree),
                "PYTHONHASHSEED": "0",
                "BENCH_EXTRA_SETTINGS": json.dumps(settings),
            },
        )
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"{variant} under callgrind failed:\n{done.stderr[-3000:]}")
    return int(found.group(1))


def per_page(args: argparse.Namespace, trees: dict[str, Path]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        one = stack.enter_context(site_server(1)).url
        many = stack.enter_context(site_server(args.pages)).url
        api = stack.enter_context(receiver()).url
        jobs = []
        for queue, extra in (("memory", {}), ("jobdir", {"JOBDIR": "set per run"})):
            for name, tree in trees.items():
                for variant in ("none", f"heartbeat-{RARE}s"):
                    for site, pages in ((one, 1), (many, args.pages)):
                        jobs.append((queue, name, tree, variant, site, pages, extra))

        def run(job: tuple[Any, ...]) -> tuple[tuple[str, str, str, int], int]:
            queue, name, tree, variant, site, pages, extra = job
            instructions = count(tree, variant, site, api, extra)
            print(f"{queue:6} {name:8} {variant:16} {pages:5} pages: {instructions / 1e9:.3f} G")
            return (queue, name, variant.split("-")[0], pages), instructions

        with ThreadPoolExecutor(args.jobs) as pool:
            counts = dict(pool.map(run, jobs))
    print(f"\ninstructions per page that scrapy-heartbeat adds ({args.pages} pages):")
    for queue in ("memory", "jobdir"):
        for name in trees:

            def slope(variant: str, queue: str = queue, name: str = name) -> float:
                big, small = (
                    counts[(queue, name, variant, args.pages)],
                    counts[(queue, name, variant, 1)],
                )
                return (big - small) / (args.pages - 1)

            added = slope("heartbeat") - slope("none")
            results[f"{queue}/{name}"] = {"per_page": added, "none_per_page": slope("none")}
            base = slope("none") / 1e6
            print(f"{queue:6} {name:8} +{added / 1e3:6.1f} k  (unmonitored {base:.2f} M)")
    return results


def redis_commands(url: str) -> dict[str, int]:
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def shared(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    variants = ["none", "none-again", "heartbeat-1s", "heartbeat-1s-shared"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp))
        stack.callback(redis_server.stop)
        site = stack.enter_context(site_server(args.crawl_pages)).url
        api = stack.enter_context(receiver()).url
        for n in range(args.rounds):
            for variant in rotated(variants, n):
                before = redis_commands(redis_server.url)
                extra = {"HEARTBEAT_REDIS_URL": redis_server.url} if "shared" in variant else {}
                result = crawl(variant.removesuffix("-shared"), site, api, extra=extra)
                after = redis_commands(redis_server.url)
                result["redis_calls"] = {
                    k: after.get(k, 0) - before.get(k, 0)
                    for k in after
                    if after.get(k, 0) != before.get(k, 0) and k not in ("info",)
                }
                runs[variant].append(result)
                print(
                    f"round {n + 1} {variant:20} {result['cpu_seconds']:6.2f} CPU s, "
                    f"{result['pages_per_second']:6.0f} pages/s, beats {result['heartbeat_ok']}, "
                    f"redis {result['redis_calls']}",
                    flush=True,
                )
    base = [r["cpu_seconds"] for r in runs["none"]]
    ratios = {
        v: [r["cpu_seconds"] / b for r, b in zip(runs[v], base, strict=True)] for v in variants[1:]
    }
    print(f"\nCPU time over no monitoring, {args.crawl_pages} pages, median (min–max):")
    for v, values in ratios.items():
        print(f"  {v:20} {summary(values)}")
    vs_unshared = [
        s["cpu_seconds"] / h["cpu_seconds"]
        for s, h in zip(runs["heartbeat-1s-shared"], runs["heartbeat-1s"], strict=True)
    ]
    print(f"  shared / not shared  {summary(vs_unshared)}")
    # Client commands only (EVALSHA, and SCRIPT LOAD once per worker, on the
    # first EVALSHA's NOSCRIPT); what the script runs inside Redis is not a
    # round trip. The final beat makes two exchanges (see the extension).
    trips = [
        sum(v for k, v in r["redis_calls"].items() if k in ("evalsha", "eval", "script|load"))
        for r in runs["heartbeat-1s-shared"]
    ]
    beats = [r["heartbeat_ok"] + r["heartbeat_failed"] for r in runs["heartbeat-1s-shared"]]
    print(
        f"Redis round trips per crawl (EVALSHA/EVAL/SCRIPT LOAD): {summary(trips)} "
        f"for {summary(beats)} beats; nothing per URL"
    )
    loop = [r["heartbeat_loop_beat_mean_ms"] for r in runs["heartbeat-1s-shared"]]
    loop_plain = [r["heartbeat_loop_beat_mean_ms"] for r in runs["heartbeat-1s"]]
    print(
        f"loop-thread time per beat, ms: shared {summary(loop)}, not shared {summary(loop_plain)}"
    )
    return {
        "runs": runs,
        "cpu_ratio": {v: statistics.median(x) for v, x in ratios.items()},
        "shared_over_unshared": statistics.median(vs_unshared),
        "redis_round_trips": trips,
        "beats": beats,
        "loop_ms_per_beat": {
            "shared": statistics.median(loop),
            "plain": statistics.median(loop_plain),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--crawl-pages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-instructions", action="store_true")
    args = parser.parse_args()
    for tool in ("valgrind", "redis-server"):
        if shutil.which(tool) is None and not (tool == "valgrind" and args.skip_instructions):
            raise SystemExit(f"{tool} not found: apt-get install {tool}")
    report: dict[str, Any] = {"baseline": args.baseline}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_instructions:
            old = Path(tmp, "baseline")
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(old), args.baseline],
                cwd=ROOT, check=True, capture_output=True,
            )  # fmt: skip
            try:
                report["instructions"] = per_page(args, {"baseline": old, "this": ROOT})
            finally:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False
                )
    report["shared"] = shared(args)
    print(f"saved {save('fleet', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
