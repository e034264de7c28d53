"""What monitoring costs a crawl when the CPU is shared: Scrapy's own
benchmark (``scrapy bench``: its local server, its link-following spider,
a fixed time) crawled with and without the extension, while a CPU-bound
process competes for the cores.

    python bench/contention.py [--rounds 8] [--load hog|idle] [--interval 1]
                               [--variants heartbeat,...] [--seconds 10] [--pin]

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

Variants (``bench/contention_probes.py`` holds the probes):

* ``none``, ``none-again``: no monitoring.
* ``heartbeat``: the extension, posting to the reference receiver.
* ``no-http``: the extension with a client that answers at once without any
  I/O: the worker thread still wakes for each beat.
* ``no-watchdog``: the extension, each request without the watchdog thread
  the client starts for it.
* ``loop-http``: the extension, its periodic beats posted by Twisted's Agent
  on the reactor thread instead of the worker thread.
* ``sleeper``: no extension; a thread that wakes once per interval and does
  nothing: the cost of a wake-up alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import receiver, rotated, save, summary

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
    if variant == "no-watchdog":
        return {"EXTENSIONS": {f"{PROBES}.NoWatchdogHeartbeat": 500}, **heartbeat}
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


def scrapy_bench(
    settings: dict[str, Any], seconds: float, others: list[int] | None = None
) -> dict[str, Any]:
    """One ``scrapy bench`` run; pages crawled and beats delivered. With
    ``others``, the process starts on those CPUs (its site server stays)."""
    args = [sys.executable, "-m", "scrapy.cmdline", "bench", "-s", f"CLOSESPIDER_TIMEOUT={seconds}"]
    if others is not None:
        args = ["taskset", "-c", ",".join(map(str, others)), *args]
    for name, value in settings.items():
        shown = json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)
        args += ["-s", f"{name}={shown}"]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        cwd=ROOT / "bench",  # no scrapy.cfg here: scrapy bench needs no project
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
        timeout=seconds + 120,
    )
    pages = re.search(r"'response_received_count': (\d+)", done.stderr)
    if done.returncode != 0 or pages is None:
        raise SystemExit(f"scrapy bench failed ({done.returncode}):\n{done.stderr[-3000:]}")
    ok = re.search(r"'heartbeat/ok': (\d+)", done.stderr)
    result = {"pages": int(pages.group(1)), "heartbeat_ok": int(ok.group(1)) if ok else 0}
    for name in ("main_voluntary_switches", "main_involuntary_switches", "main_cpu_share"):
        found = re.search(rf"'bench/{name}': ([\d.]+)", done.stderr)
        if found:
            result[name] = float(found.group(1))
    return result


@contextlib.contextmanager
def competing_load(load: str, hogs: int, cpu: int | None = None) -> Iterator[None]:
    """``hog``: CPU-bound processes on the same cores (or on ``cpu``) for
    the whole run."""
    processes = []
    pin = [] if cpu is None else ["taskset", "-c", str(cpu)]
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


def main() -> int:
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
    args = parser.parse_args()
    others, crawl_cpu = cpus() if args.pin else (None, None)
    if others is not None:
        os.sched_setaffinity(0, set(others))  # this script and the receiver it starts
    variants = ["none", *args.variants.split(","), "none-again"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    started = time.monotonic()
    with receiver() as api, competing_load(args.load, args.hogs, crawl_cpu):
        for n in range(args.rounds):
            for variant in rotated(variants, n):
                settings = counted(variant_settings(variant, api.url, args.interval))
                if crawl_cpu is not None:
                    settings = pinned(settings, crawl_cpu)
                result = scrapy_bench(settings, args.seconds, others)
                runs[variant].append(result)
                print(
                    f"round {n + 1}/{args.rounds} {variant:24} {result['pages']:6d} pages, "
                    f"beats ok {result['heartbeat_ok']}, main thread slept "
                    f"{result.get('main_voluntary_switches', 0):.0f} times, preempted "
                    f"{result.get('main_involuntary_switches', 0):.0f}, CPU share "
                    f"{result.get('main_cpu_share', 0):.3f}",
                    flush=True,
                )
    base = [r["pages"] for r in runs["none"]]
    print(
        f"\nscrapy bench, {args.seconds:g} s per run, load {args.load}"
        f"{f', crawl and load pinned to CPU {crawl_cpu}' if crawl_cpu is not None else ''}"
        f"{f' ({args.hogs} CPU-bound)' if args.load == 'hog' else ''}, interval "
        f"{args.interval:g} s, {args.rounds} rounds; pages over the unmonitored run of the "
        f"same round, median (min–max); {time.monotonic() - started:.0f} s in all"
    )
    control = [r["pages"] / b for r, b in zip(runs["none-again"], base, strict=True)]
    report: dict[str, Any] = {"settings": vars(args), "variants": {}}
    for variant in variants[1:]:
        ratios = [r["pages"] / b for r, b in zip(runs[variant], base, strict=True)]
        report["variants"][variant] = {
            "pages_ratio_median": statistics.median(ratios),
            "pages_ratio": ratios,
            "runs": runs[variant],
        }
        slept = [r.get("main_voluntary_switches", 0) for r in runs[variant]]
        share = [r.get("main_cpu_share", 0) for r in runs[variant]]
        print(
            f"  {variant:24} {summary(ratios)}; main thread slept {summary(slept, 0)} "
            f"times, CPU share {summary(share)}"
        )
    slept = [r.get("main_voluntary_switches", 0) for r in runs["none"]]
    share = [r.get("main_cpu_share", 0) for r in runs["none"]]
    print(
        f"  {'none':24} 1.0; main thread slept {summary(slept, 0)} times, "
        f"CPU share {summary(share)}"
    )
    low, high = min(control), max(control)
    print(f"  A/A spread {low:.3f}–{high:.3f}: a median inside it does not resolve")
    report["variants"]["none"] = {"runs": runs["none"]}
    if args.save:
        print(f"saved {save(args.save, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
