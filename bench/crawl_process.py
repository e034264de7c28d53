"""One benchmark crawl, measured from inside: ``python bench/crawl_process.py
VARIANT SITE_URL API_URL [--pages N] [--delay S]`` prints one JSON line.

Measured here: items, the crawl phase's wall time and pages/s, a stall probe
(a looping call due every 10 ms; its lateness is how long the event loop was
blocked; the five largest stalls and when they happened), RSS at the start and
end of the crawl, the wall-clock time of "Closing spider" (the parent takes
the process's exit time and CPU time), and for scrapy-heartbeat the longest
its own work ran on the loop thread (one beat, or one result coming back).
With ``BENCH_GC=1``, every garbage collection too (``bench/stall.py``): the
largest stall with the collections inside it taken out, the collections' time
and the longest full one (off by default: a callback on every collection is
work the instruction counts would include).
With ``BENCH_TIMELINE=1``, the items crawled so far every 0.1 s (``timeline``:
``bench/contention.py --crawl`` compares two crawls run at once over the
time both were crawling).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scrapy
from scrapy import signals
from scrapy.crawler import AsyncCrawlerProcess
from scrapy.http import Response

PROBE_PERIOD = 0.010
#: With BENCH_TIMELINE=1: items crawled so far, sampled this often (seconds).
TIMELINE_PERIOD = 0.1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


class BenchSpider(scrapy.Spider):
    name = "bench"

    def __init__(self, site: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [f"{site}/p/0"]

    def parse(self, response: Response) -> Any:
        yield {"url": response.url, "price": response.css(".price::text").get()}
        yield from response.follow_all(css="a", callback=self.parse)


def variant_settings(variant: str, site: str, api: str) -> dict[str, Any]:
    heartbeat = {
        "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
        "HEARTBEAT_API_BASE_URL": api,
        "HEARTBEAT_EXECUTION_ID": "550e8400-e29b-41d4-a716-446655440000",
    }
    if variant in ("none", "none-again"):  # none-again: the A/A control
        return {}
    if variant == "heartbeat-10s":
        return {**heartbeat, "HEARTBEAT_INTERVAL": 10}
    if variant == "heartbeat-1s":
        return {**heartbeat, "HEARTBEAT_INTERVAL": 1, "HEARTBEAT_MIN_INTERVAL": 1}
    if variant.startswith("heartbeat-"):  # heartbeat-<seconds>, for the soak
        interval = float(variant.split("-", 1)[1].removesuffix("s"))
        return {**heartbeat, "HEARTBEAT_INTERVAL": interval, "HEARTBEAT_MIN_INTERVAL": interval}
    if variant == "scrapeops":
        return {
            "EXTENSIONS": {"scrapeops_scrapy.extension.ScrapeOpsMonitor": 500},
            "SCRAPEOPS_API_KEY": "bench",
            "SCRAPEOPS_ENDPOINT": api.rstrip("/") + "/scrapeops/",
        }
    if variant == "spidermon" or variant.startswith("spidermon-"):  # spidermon-<seconds>s
        period = float(variant.split("-", 1)[1].removesuffix("s")) if "-" in variant else 10
        return {
            "EXTENSIONS": {"spidermon.contrib.scrapy.extensions.Spidermon": 500},
            "SPIDERMON_ENABLED": True,
            "SPIDERMON_PERIODIC_MONITORS": {"bench.peers.PeriodicSuite": period},
        }
    raise SystemExit(f"unknown variant {variant!r}")


class Probe:
    """Due every 10 ms; records how late each call ran, and with
    ``record_collections`` every garbage collection meanwhile
    (``gc.callbacks``: a full collection of a crawl's heap stops every thread
    for tens of milliseconds, and any change in allocations moves when it
    comes), so that a stall can be told apart from the collections inside it."""

    def __init__(self, record_collections: bool = False) -> None:
        self.record_collections = record_collections
        self.lateness: list[float] = []
        self.at: list[float] = []
        self.due = 0.0
        self.task: Any = None
        #: (started, ended, generation), monotonic seconds
        self.collections: list[tuple[float, float, int]] = []
        self._collecting = 0.0

    def start(self) -> None:
        from scrapy.utils.asyncio import create_looping_call

        if self.record_collections:
            gc.callbacks.append(self._collection)
        self.task = create_looping_call(self.tick)
        self.due = time.monotonic()
        self.task.start(PROBE_PERIOD, now=True)

    def tick(self) -> None:
        now = time.monotonic()
        self.lateness.append(max(0.0, now - self.due))
        self.at.append(now)
        self.due = now + PROBE_PERIOD

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        # Collections never overlap (the GIL, and the collector's own lock),
        # whichever thread runs them.
        if phase == "start":
            self._collecting = time.monotonic()
        else:
            self.collections.append((self._collecting, time.monotonic(), info["generation"]))

    def largest(self, n: int = 5) -> list[tuple[float, float]]:
        """The n largest stalls: (milliseconds, seconds into the crawl)."""
        order = sorted(range(len(self.lateness)), key=self.lateness.__getitem__)[-n:]
        start = self.at[0] if self.at else 0.0
        return [
            (round(self.lateness[i] * 1000, 1), round(self.at[i] - start, 2))
            for i in reversed(order)
        ]

    def lateness_outside_collections(self) -> list[float]:
        """Each call's lateness less the collections' time inside it."""
        outside = []
        first = 0  # collections are in time order, and so are the calls
        for late, at in zip(self.lateness, self.at, strict=True):
            due = at - late
            while first < len(self.collections) and self.collections[first][1] <= due:
                first += 1
            collecting = 0.0
            for started, ended, _ in self.collections[first:]:
                if started >= at:
                    break
                collecting += min(ended, at) - max(started, due)
            outside.append(max(0.0, late - collecting))
        return outside

    def stop(self) -> None:
        if self.task is not None and self.task.running:
            self.task.stop()
        if self._collection in gc.callbacks:
            gc.callbacks.remove(self._collection)


class LoopTimer:
    """How long scrapy-heartbeat's own work runs on the loop thread: each
    beat (building the payload, handing it to the sender) and each result
    coming back; and the worker thread's CPU time for each HTTP attempt (its
    Python work holds the GIL, which the loop thread may have to wait for).
    Together they bound what one beat can add to a stall of the loop."""

    def __init__(self) -> None:
        self.seconds: list[tuple[float, str]] = []
        self.worker_cpu: list[float] = []  # appended to by the worker thread

    def install(self) -> None:
        from scrapy_heartbeat.client import HeartbeatClient
        from scrapy_heartbeat.extension import HeartbeatExtension
        from scrapy_heartbeat.sender import HeartbeatSender

        for cls, name in ((HeartbeatExtension, "beat"), (HeartbeatSender, "_periodic_done")):
            setattr(cls, name, self._timed(getattr(cls, name), name))
        send = HeartbeatClient.send

        def timed_send(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return send(*args, **kwargs)
            finally:
                self.worker_cpu.append(time.thread_time() - started)

        HeartbeatClient.send = timed_send  # type: ignore[method-assign]

    def largest(self) -> tuple[float, str]:
        return max(self.seconds, default=(0.0, "-"))

    def mean(self, name: str) -> float:
        times = [seconds for seconds, what in self.seconds if what == name]
        return sum(times) / len(times) if times else 0.0

    def _timed(self, method: Any, name: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds.append((time.perf_counter() - started, name))

        return timed


def ablate(parts: str) -> None:
    """Take parts of scrapy-heartbeat out (bench/ablate.py): ``engine`` and
    ``scheduler`` are the two observations (without the scheduler's there
    are no tokens, so the engine's is cut short too). What remains runs."""
    from scrapy_heartbeat import progress

    for part in filter(None, parts.split(",")):
        if part == "engine":
            progress.observe_engine = lambda engine, tracker: True  # type: ignore[assignment]
        elif part == "scheduler":
            progress.observe_scheduler = lambda scheduler, tracker, persists: True  # type: ignore[assignment]
        else:
            raise SystemExit(f"unknown part {part!r}")


class ClosingClock(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.closing: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.closing is None and record.getMessage().startswith("Closing spider"):
            self.closing = time.time()


def collections(probe: Probe) -> dict[str, float]:
    """The figures of ``BENCH_GC=1``, in milliseconds."""
    full = [end - start for start, end, generation in probe.collections if generation == 2]
    return {
        "stall_max_outside_gc_ms": round(
            max(probe.lateness_outside_collections(), default=0.0) * 1000, 2
        ),
        "gc_ms": round(sum(end - start for start, end, _ in probe.collections) * 1000, 1),
        "gc_full_collections": len(full),
        "gc_full_max_ms": round(max(full, default=0.0) * 1000, 1),
    }


def main() -> int:
    variant, site, api = sys.argv[1:4]
    settings: dict[str, Any] = {
        "LOG_LEVEL": "WARNING",
        "CONCURRENT_REQUESTS": 32,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
        # Scrapy 2.19 runs CONCURRENT_ITEMS (default 100) asyncio tasks per
        # response to process its output, which caps this crawl near 360
        # pages/s. One item per page needs one: a faster crawl, in which any
        # cost of monitoring weighs more, not less.
        "CONCURRENT_ITEMS": int(os.environ.get("BENCH_CONCURRENT_ITEMS", "1")),
        "TELNETCONSOLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        **variant_settings(variant, site, api),
        # e.g. a short close timeout for the fault runs (bench/stall.py)
        **json.loads(os.environ.get("BENCH_EXTRA_SETTINGS", "{}")),
    }
    if len(sys.argv) > 4:
        settings["DOWNLOAD_DELAY"] = float(sys.argv[4])
        settings["CONCURRENT_REQUESTS_PER_DOMAIN"] = 1
    reactor = os.environ.get("BENCH_REACTOR")
    if reactor:  # e.g. twisted.internet.epollreactor.EPollReactor
        from scrapy.crawler import CrawlerProcess

        process: Any = CrawlerProcess({**settings, "TWISTED_REACTOR": reactor})
    else:
        process = AsyncCrawlerProcess(settings)
    timer = LoopTimer()
    if variant.startswith("heartbeat"):
        timer.install()
        ablate(os.environ.get("BENCH_ABLATE", ""))
    crawler = process.create_crawler(BenchSpider)
    probe = Probe(record_collections=bool(os.environ.get("BENCH_GC")))
    clock = ClosingClock()
    logging.getLogger("scrapy.core.engine").addHandler(clock)
    marks: dict[str, float] = {}

    timeline: list[tuple[float, int]] = []  # (monotonic, items), BENCH_TIMELINE=1
    sampler: Any = None

    def sample() -> None:
        timeline.append(
            (round(time.monotonic(), 4), crawler.stats.get_value("item_scraped_count", 0))
        )

    def opened(spider: Any) -> None:
        nonlocal sampler
        marks["opened"] = time.monotonic()
        marks["rss_start"] = rss_bytes()
        probe.start()
        if os.environ.get("BENCH_TIMELINE"):
            from scrapy.utils.asyncio import create_looping_call

            sampler = create_looping_call(sample)
            sampler.start(TIMELINE_PERIOD, now=True)

    def closed(spider: Any, reason: str) -> None:
        probe.stop()
        if sampler is not None and sampler.running:
            sampler.stop()
            sample()
        marks["closed"] = time.monotonic()
        marks["rss_end"] = rss_bytes()

    crawler.signals.connect(opened, signal=signals.spider_opened)
    crawler.signals.connect(closed, signal=signals.spider_closed)
    process.crawl(crawler, site=site)
    process.start()
    stats = crawler.stats.get_stats()
    items = stats.get("item_scraped_count", 0)
    crawl_seconds = marks["closed"] - marks["opened"]
    lateness = sorted(probe.lateness) or [0.0]
    loop_max, loop_max_in = timer.largest()
    print(
        json.dumps(
            {
                "variant": variant,
                "items": items,
                "crawl_seconds": round(crawl_seconds, 3),
                "pages_per_second": round(items / crawl_seconds, 1),
                "stall_max_ms": round(lateness[-1] * 1000, 2),
                "stall_p99_ms": round(lateness[int(len(lateness) * 0.99)] * 1000, 2),
                "stall_largest": probe.largest(),
                "rss_start": marks["rss_start"],
                "rss_end": marks["rss_end"],
                "closing_at": clock.closing,
                "heartbeat_ok": stats.get("heartbeat/ok", 0),
                "heartbeat_failed": stats.get("heartbeat/failed", 0),
                "heartbeat_loop_max_ms": round(loop_max * 1000, 3),
                "heartbeat_loop_beat_mean_ms": round(timer.mean("beat") * 1000, 3),
                "heartbeat_loop_max_in": loop_max_in,
                "heartbeat_worker_cpu_max_ms": round(max(timer.worker_cpu, default=0.0) * 1000, 3),
                **({"timeline": timeline} if timeline else {}),
                **(collections(probe) if probe.record_collections else {}),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
