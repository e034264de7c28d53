"""What monitoring costs a crawl when the CPU is shared: Scrapy's own
benchmark (``scrapy bench``: its local server, its link-following spider,
a fixed time) crawled with and without the extension, while a CPU-bound
process competes for the cores.

    python bench/contention.py [--rounds 8] [--load hog|idle] [--interval 1]
                               [--variants heartbeat,...] [--seconds 10] [--pin]
                               [--side-by-side] [--crawl PAGES]

``--pin``: the crawl's threads and the CPU-bound process share one CPU
(the last), everything else (the receiver, ``scrapy bench``'s site server,
this script) runs on the others: the crawl's share of its CPU is then fixed
by the scheduler, not by what else the machine is doing, and whatever makes
the crawl's threads wait for each other shows in full.

Each round runs every variant once, the unmonitored crawl first and again
last-but-rotated (``none-again``, the A/A control), in an order rotated by
round. A variant's figure is its pages crawled over the unmonitored crawl's
of the same round, summarised as median (min–max) over rounds; the A/A
control's spread is the noise floor a figure must clear to mean anything.

``--side-by-side``: each variant (the A/A control too) crawls at the same
time as an unmonitored crawl, both on the crawl's CPU with ``--pin``, so
that both see the same machine: on this VM, the pages a crawl does per CPU
second drift by up to ±17% between runs a minute apart, which sequential
pairs cannot tell from a cost; run at once, two unmonitored crawls agree
within ~3–4%. Each pair starts in turn. ``--crawl PAGES``: the repository's
crawl of a PAGES-page site (``bench/crawl_process.py``, side by side), each
counted over the time both were crawling.

Variants (``bench/contention_probes.py`` holds the probes):

* ``none``, ``none-again``: no monitoring.
* ``heartbeat``: the extension, posting to the reference receiver.
* ``no-http``: the extension with a client that answers at once without any
  I/O: the worker thread still wakes for each beat.
* ``timer-watchdog``: the extension, each request with a watchdog thread of
  its own (``threading.Timer``), as before the event loop timed beats.
* ``loop-http``: the extension, its periodic beats posted by Twisted's Agent
  on the reactor thread instead of the worker thread.
* ``sleeper``: no extension; a thread that wakes once per interval and does
  nothing: the cost of a wake-up alone.
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    median_interval,
    receiver,
    rotated,
    run_crawl_process,
    save,
    site_server,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent
EXECUTION_ID = "550e8400-e29b-41d4-a716-446655440000"
PROBES = "bench.contention_probes"


def variant_settings(variant: str, api: str, interval: float) -> dict[str, Any]:
    heartbeat = {
        "HEARTBEAT_API_BASE_URL": api,
        "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        "HEARTBEAT_INTERVAL": interval,
        "HEARTBEAT_MIN_INTERVAL": 0,
    }
    if variant in ("none", "none-again"):
        return {}
    if variant == "heartbeat":
        return {"EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500}, **heartbeat}
    if variant == "no-http":
        return {"EXTENSIONS": {f"{PROBES}.NoHttpHeartbeat": 500}, **heartbeat}
    if variant == "timer-watchdog":
        return {"EXTENSIONS": {f"{PROBES}.TimerWatchdogHeartbeat": 500}, **heartbeat}
    if variant == "loop-http":
        return {"EXTENSIONS": {f"{PROBES}.LoopHttpHeartbeat": 500}, **heartbeat}
    if variant == "sleeper":
        return {"EXTENSIONS": {f"{PROBES}.SleepingThread": 500}, "HEARTBEAT_INTERVAL": interval}
    if variant.startswith("heartbeat-"):  # heartbeat-<setting>=<value>, for experiments
        name, _, value = variant.removeprefix("heartbeat-").partition("=")
        return {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            **heartbeat,
            name: json.loads(value),
        }
    raise SystemExit(f"unknown variant {variant!r}")


def counted(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the main thread's context switches counted."""
    extensions = {**settings.get("EXTENSIONS", {}), f"{PROBES}.MainThreadCounters": 0}
    return {**settings, "EXTENSIONS": extensions}


def pinned(settings: dict[str, Any], cpu: int) -> dict[str, Any]:
    """``settings`` with the crawl's threads pinned to ``cpu``."""
    extensions = {**settings.get("EXTENSIONS", {}), f"{PROBES}.PinnedCrawl": 0}
    return {**settings, "EXTENSIONS": extensions, "BENCH_PIN_CPU": cpu}


def cpus() -> tuple[list[int], int]:
    """The CPUs for everything else, and the crawl's CPU (the last)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    return available[:-1], available[-1]


def on_cpus(cpus: list[int] | None) -> list[str]:
    """The command prefix that starts a process on ``cpus`` (None: anywhere)."""
    return [] if cpus is None else ["taskset", "-c", ",".join(map(str, cpus))]


#: What ``bench.contention_probes.MainThreadCounters`` puts in the stats.
COUNTERS = (
    "main_voluntary_switches",
    "main_involuntary_switches",
    "main_cpu_share",
    "other_threads_cpu_ms",
)
#: ``scrapy bench``'s own settings, for its spider run side by side.
BENCH_SETTINGS = {"LOG_LEVEL": "INFO", "LOGSTATS_INTERVAL": 1}


def start_bench(
    settings: dict[str, Any],
    seconds: float,
    others: list[int] | None = None,
    side_by_side: bool = False,
) -> subprocess.Popen[str]:
    """Start one ``scrapy bench`` run. With ``others``, the process starts on
    those CPUs (its site server stays). ``side_by_side``: ``scrapy bench``'s
    spider alone (``bench/bench_spider.py``), crawling the bench server this
    script started."""
    # scrapy bench is not a crawl: the extension reports from it only when asked.
    command = ["bench", "-s", "HEARTBEAT_ALL_COMMANDS=True"]
    if side_by_side:
        command = ["runspider", str(ROOT / "bench" / "bench_spider.py")]
        settings = {**BENCH_SETTINGS, **settings}
    args = [
        *on_cpus(others),
        sys.executable,
        "-m",
        "scrapy.cmdline",
        *command,
        "-s",
        f"CLOSESPIDER_TIMEOUT={seconds}",
    ]
    for name, value in settings.items():
        shown = json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)
        args += ["-s", f"{name}={shown}"]
    return subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT / "bench",  # no scrapy.cfg here: scrapy bench needs no project
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def bench_result(process: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    """A run's pages crawled, beats delivered and the probes' counters."""
    _, stderr = process.communicate(timeout=seconds + 120)
    pages = re.search(r"'response_received_count': (\d+)", stderr)
    if process.returncode != 0 or pages is None:
        raise SystemExit(f"scrapy bench failed ({process.returncode}):\n{stderr[-3000:]}")
    ok = re.search(r"'heartbeat/ok': (\d+)", stderr)
    result = {"pages": int(pages.group(1)), "heartbeat_ok": int(ok.group(1)) if ok else 0}
    for name in COUNTERS:
        found = re.search(rf"'bench/{name}': ([\d.]+)", stderr)
        if found:
            result[name] = float(found.group(1))
    return result


def scrapy_bench(
    settings: dict[str, Any], seconds: float, others: list[int] | None = None
) -> dict[str, Any]:
    """One ``scrapy bench`` run, to its end."""
    return bench_result(start_bench(settings, seconds, others), seconds)


@contextlib.contextmanager
def bench_server(others: list[int] | None) -> Iterator[None]:
    """``scrapy bench``'s site server (on ``others``), for side-by-side runs."""
    args = [*on_cpus(others), sys.executable, "-u", "-m", "scrapy.utils.benchserver"]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "Bench server at http://localhost:8998"
        yield
    finally:
        server.kill()
        server.wait()


@contextlib.contextmanager
def competing_load(load: str, hogs: int, cpu: int | None = None) -> Iterator[None]:
    """``hog``: CPU-bound processes on the same cores (or on ``cpu``) for
    the whole run."""
    processes = []
    pin = on_cpus(None if cpu is None else [cpu])
    if load == "hog":
        processes = [
            subprocess.Popen([*pin, sys.executable, "-c", "while True: pass"]) for _ in range(hogs)
        ]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()


def crawl_variant(variant: str, interval: float) -> str:
    """``bench/crawl_process.py``'s name for ``variant``."""
    if variant in ("none", "none-again"):
        return variant
    if variant == "heartbeat":
        return f"heartbeat-{interval:g}s"
    raise SystemExit(f"--crawl runs the variant heartbeat only, not {variant!r}")


def crawl_side_by_side(
    pair: list[str], site: str, api: str, interval: float, cpu: int | None
) -> list[dict[str, Any]]:
    """The repository's crawl (``bench/crawl_process.py``) twice at once, on
    ``cpu``; each result's ``pages`` are those it crawled while both crawled
    (from their timelines: CLOCK_MONOTONIC is one clock for all processes),
    so that the first to finish does not hand the other a larger share."""
    prefix = tuple(on_cpus(None if cpu is None else [cpu]))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                run_crawl_process,
                crawl_variant(v, interval),
                site,
                api,
                prefix=prefix,
                env={"BENCH_TIMELINE": "1"},
            )
            for v in pair
        ]
        results = [future.result()[0] for future in futures]
    lines = [result.pop("timeline") for result in results]
    start = max(line[0][0] for line in lines)
    end = min(line[-1][0] for line in lines)
    for result, line in zip(results, lines, strict=True):
        result["pages"] = items_at(line, end) - items_at(line, start)
        result["window_seconds"] = round(end - start, 2)
    return results


def items_at(line: list[list[float]], when: float) -> float:
    """Items crawled by ``when``, interpolated along a timeline."""
    times = [t for t, _ in line]
    i = bisect.bisect_left(times, when)
    if i == 0:
        return line[0][1]
    if i == len(line):
        return line[-1][1]
    (t0, n0), (t1, n1) = line[i - 1], line[i]
    return n0 + (n1 - n0) * (when - t0) / (t1 - t0) if t1 > t0 else n1


def show(n: int, rounds: int, variant: str, result: dict[str, Any]) -> None:
    if "window_seconds" in result:  # --crawl
        print(
            f"round {n + 1}/{rounds} {variant:24} {result['pages']:7.0f} pages in the "
            f"{result['window_seconds']:.1f} s both crawled, {result['items']} in all, "
            f"beats ok {result['heartbeat_ok']}",
            flush=True,
        )
        return
    print(
        f"round {n + 1}/{rounds} {variant:24} {result['pages']:7.0f} pages, "
        f"beats ok {result['heartbeat_ok']}, main thread slept "
        f"{result.get('main_voluntary_switches', 0):.0f} times, preempted "
        f"{result.get('main_involuntary_switches', 0):.0f}, CPU share "
        f"{result.get('main_cpu_share', 0):.3f}, other threads "
        f"{result.get('other_threads_cpu_ms', 0):.0f} CPU ms",
        flush=True,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--load", choices=["idle", "hog"], default="hog")
    parser.add_argument("--hogs", type=int, default=1, help="CPU-bound processes (default 1)")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--variants", default="heartbeat")
    parser.add_argument("--save", default="", help="bench/results/<name>.json")
    parser.add_argument(
        "--pin", action="store_true", help="the crawl and the load on one CPU, the rest elsewhere"
    )
    parser.add_argument(
        "--crawl",
        type=int,
        default=0,
        metavar="PAGES",
        help="the repository's crawl of a PAGES-page site instead of scrapy bench (side by side)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="each variant crawls at the same time as an unmonitored crawl (on one CPU with --pin)",
    )
    return parser.parse_args()


@dataclass
class Rounds:
    """Every variant's runs and, beside each, the unmonitored run it is
    compared with (``bases``: the same round's, or the one run beside it)."""

    args: argparse.Namespace
    variants: list[str]
    others: list[int] | None  # with --pin: the CPUs for all but the crawls
    crawl_cpu: int | None  # with --pin: the crawls' CPU
    runs: dict[str, list[dict[str, Any]]] = field(init=False)
    bases: dict[str, list[dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self.runs = {v: [] for v in self.variants}
        self.bases = {v: [] for v in self.variants}  # each one's "none"

    def settings_of(self, variant: str, api: Any) -> dict[str, Any]:
        settings = counted(variant_settings(variant, api.url, self.args.interval))
        return settings if self.crawl_cpu is None else pinned(settings, self.crawl_cpu)

    def sequential(self, n: int, api: Any) -> None:
        """Round ``n``: each variant, and the unmonitored crawl, in turn."""
        for variant in rotated(["none", *self.variants], n):
            result = scrapy_bench(self.settings_of(variant, api), self.args.seconds, self.others)
            for v in self.variants if variant == "none" else [variant]:
                (self.bases if variant == "none" else self.runs)[v].append(result)
            show(n, self.args.rounds, variant, result)

    def side_by_side(self, n: int, api: Any, site: Any) -> None:
        """Round ``n``: each variant at the same time as an unmonitored crawl."""
        for variant in rotated(self.variants, n):
            pair = [variant, "none"] if n % 2 else ["none", variant]  # who starts first
            results = dict(zip(pair, self.pair(pair, api, site), strict=True))
            self.runs[variant].append(results[variant])
            self.bases[variant].append(results["none"])
            show(n, self.args.rounds, variant, results[variant])
            show(n, self.args.rounds, "  beside it: none", results["none"])

    def pair(self, pair: list[str], api: Any, site: Any) -> list[dict[str, Any]]:
        """The results of ``pair``'s variants, run at the same time."""
        args = self.args
        if args.crawl:
            return crawl_side_by_side(pair, site.url, api.url, args.interval, self.crawl_cpu)
        processes = [
            start_bench(self.settings_of(v, api), args.seconds, self.others, side_by_side=True)
            for v in pair
        ]
        return [bench_result(p, args.seconds) for p in processes]


def headline(args: argparse.Namespace, crawl_cpu: int | None, elapsed: float) -> str:
    """What the table below it compares, and how."""
    what = f"the {args.crawl:,}-page crawl" if args.crawl else f"scrapy bench, {args.seconds:g} s"
    if args.crawl:
        how = "crawled while both crawled, beside an unmonitored crawl run at the same time"
    elif args.side_by_side:
        how = "beside an unmonitored crawl run at the same time"
    else:
        how = "over the unmonitored run of the same round"
    return (
        f"\n{what} per run, load {args.load}"
        f"{f', crawls and load pinned to CPU {crawl_cpu}' if crawl_cpu is not None else ''}"
        f"{f' ({args.hogs} CPU-bound)' if args.load == 'hog' else ''}, interval "
        f"{args.interval:g} s, {args.rounds} rounds; pages {how}, median (min–max); "
        f"{elapsed:.0f} s in all"
    )


def report_on(args: argparse.Namespace, rounds: Rounds) -> dict[str, Any]:
    """Prints each variant's pages over its unmonitored runs', and returns
    what ``--save`` saves."""
    variants, runs, bases = rounds.variants, rounds.runs, rounds.bases
    report: dict[str, Any] = {"settings": vars(args), "variants": {}}
    ratios = {
        v: [r["pages"] / b["pages"] for r, b in zip(runs[v], bases[v], strict=True)]
        for v in variants
    }
    for variant in variants:
        report["variants"][variant] = {
            "pages_ratio_median": statistics.median(ratios[variant]),
            "pages_ratio": ratios[variant],
            "runs": runs[variant],
            "beside" if args.side_by_side else "none_of_round": bases[variant],
        }
        print(f"  {variant:24} {summary(ratios[variant])}; {counters(runs[variant])}")
    print(f"  {'none':24} 1.0; {counters(bases[variants[0]])}")
    for variant in variants:
        low, high, coverage = median_interval(ratios[variant])
        report["variants"][variant]["median_interval"] = [low, high, coverage]
        print(f"  {variant:24} median within {low:.3f}–{high:.3f} ({coverage:.0%} confidence)")
    low, high, _ = median_interval(ratios["none-again"])
    margin = max(abs(low - 1), abs(high - 1))
    print(
        f"  the A/A median's interval reaches {margin:.1%} from 1: "
        "a smaller difference does not resolve"
    )
    return report


def main() -> int:
    args = parse_args()
    others, crawl_cpu = cpus() if args.pin else (None, None)
    if others is not None:
        os.sched_setaffinity(0, set(others))  # this script and the receiver it starts
    rounds = Rounds(args, [*args.variants.split(","), "none-again"], others, crawl_cpu)
    started = time.monotonic()
    if args.crawl:
        args.side_by_side = True
        server: Any = site_server(args.crawl)
    else:
        server = bench_server(others) if args.side_by_side else contextlib.nullcontext()
    with receiver() as api, server as site, competing_load(args.load, args.hogs, crawl_cpu):
        for n in range(args.rounds):
            if args.side_by_side:
                rounds.side_by_side(n, api, site)
            else:
                rounds.sequential(n, api)
    print(headline(args, crawl_cpu, time.monotonic() - started))
    report = report_on(args, rounds)
    if args.save:
        print(f"saved {save(args.save, report)}")
    return 0


def counters(runs: list[dict[str, Any]]) -> str:
    if not any("main_cpu_share" in r for r in runs):  # --crawl: bench/crawl_process.py's runs
        return f"{summary([r['items'] for r in runs], 0)} items in all"
    slept = [r.get("main_voluntary_switches", 0) for r in runs]
    share = [r.get("main_cpu_share", 0) for r in runs]
    others = [r.get("other_threads_cpu_ms", 0) for r in runs]
    return (
        f"main thread slept {summary(slept, 0)} times, CPU share {summary(share)}; "
        f"other threads {summary(others, 0)} CPU ms"
    )


if __name__ == "__main__":
    sys.exit(main())
