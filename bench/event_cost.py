"""Per-event cost and memory of the counting, driven directly.

    python bench/event_cost.py [--events 1000000]

A synthetic stream of N requests, N responses and N items goes straight into
the handlers (no signal dispatch, no network): one chunk of 10,000 real
Scrapy ``Request``/``Response`` objects, built outside the timed region, goes
through N / 10,000 times, as new URLs each time:

* scrapy-heartbeat: per request what its observation of the scheduler's
  ``enqueue_request`` adds (the same calls, and the engine's own handling of
  a download's Deferred, timed through bare components that answer at once,
  accepted and a new Deferred, are subtracted), including the garbage
  collections its allocations set off; per response what its observation of
  the engine's ``_handle_downloader_output`` adds to firing that Deferred;
  ``heartbeat-fallback`` is the same where the engine has no such method (a
  callback on the Deferred of the downloader's ``fetch``); per item
  ``item_scraped`` (the handler used only when CoreStats is off; with it on,
  items cost nothing: its stat is read at each beat);
* Scrapy's own stats, measured the same way: ``CoreStats.response_received``
  and ``CoreStats.item_scraped``, and, for requests (``CoreStats`` has no
  request handler), the ``DownloaderStats`` middleware's ``process_request``
  (on reused requests it is cheaper than in a crawl, as ``urlparse_cached``
  keeps each request's parsed URL: this makes the comparison harder for us).

Memory: tracemalloc's traced size after 10,000 and after N logical URLs have
gone through their whole life; the growth between the two is what the
tracker keeps per URL (nothing, by design).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrapy import Request
from scrapy.downloadermiddlewares.stats import DownloaderStats
from scrapy.extensions.corestats import CoreStats
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler
from twisted.internet.defer import Deferred

from bench.common import save
from scrapy_heartbeat._scrapy import observe_downloader, observe_engine, observe_scheduler
from scrapy_heartbeat.extension import HeartbeatExtension
from scrapy_heartbeat.progress import META_KEY, ProgressTracker
from scrapy_heartbeat.settings import load_config

CHUNK = 10_000


def chunk() -> tuple[list[Request], list[HtmlResponse]]:
    requests = [Request(f"http://example.com/p/{n}") for n in range(CHUNK)]
    responses = [HtmlResponse(r.url, status=200, request=r) for r in requests]
    return requests, responses


Part = Callable[[list[Request], list[HtmlResponse]], float]


def timed(events: int, parts: dict[str, dict[str, Part]]) -> dict[str, dict[str, float]]:
    """Total seconds spent inside the handlers for ``events`` of each kind.

    One chunk of requests and responses is built, then goes through every
    part in turn, ``events / CHUNK`` times, as new URLs each time (their
    token taken off): the parts share the machine's state of the moment, and
    building objects, which is not what is measured, takes no time.
    """
    totals = {who: dict.fromkeys(row, 0.0) for who, row in parts.items()}
    requests, responses = chunk()
    for _ in range(0, events, CHUNK):
        for who, row in parts.items():
            for kind, run in row.items():
                for r in requests:
                    r.meta.pop(META_KEY, None)
                gc.collect()
                totals[who][kind] += run(requests, responses)
    return totals


class Answering:
    """The observed engine components, answering at once and doing nothing
    else, so that only the observation is timed."""

    def enqueue_request(self, request: Request) -> bool:
        return True

    def fetch(self, request: Request) -> Deferred[HtmlResponse]:
        return Deferred()

    def _handle_downloader_output(self, result: object, request: Request) -> None:
        return None

    def download(self, request: Request) -> Deferred[HtmlResponse]:
        """What the engine does as a download starts: the downloader's Deferred
        gets the engine's handler."""
        d = self.fetch(request)
        d.addBoth(self._handle_downloader_output, request)
        return d


def observed(tracker: ProgressTracker, engine_hook: bool = True) -> Answering:
    """Observed as in a crawl; without ``engine_hook``, as where the engine
    has no ``_handle_downloader_output``: a callback on ``fetch``'s Deferred."""
    components = Answering()
    assert observe_scheduler(components, tracker, persists=False)
    if engine_hook:
        assert observe_engine(components, tracker)
    else:
        assert observe_downloader(components, tracker)
    return components


def heartbeat_parts(ext: HeartbeatExtension, engine_hook: bool = True) -> dict[str, Part]:
    """Each part is timed twice, through observed and through bare
    components; the difference is what the observation adds."""
    bare, engine = Answering(), observed(ext.tracker, engine_hook)

    def start(components: Answering, reqs: list[Request]) -> list[Deferred[HtmlResponse]]:
        downloads = []
        for r in reqs:
            components.enqueue_request(r)
            downloads.append(components.download(r))
        return downloads

    def finish(downloads: list[Deferred[HtmlResponse]], resps: list[HtmlResponse]) -> None:
        for d, resp in zip(downloads, resps, strict=True):
            d.callback(resp)

    def requests_(reqs: list[Request], resps: list[HtmlResponse]) -> float:
        elapsed = 0.0
        for components, sign in ((bare, -1), (engine, 1)):
            t = time.perf_counter()
            downloads = start(components, reqs)
            elapsed += sign * (time.perf_counter() - t)
            finish(downloads, resps)  # untimed
        return elapsed

    def responses_(reqs: list[Request], resps: list[HtmlResponse]) -> float:
        elapsed = 0.0
        for components, sign in ((bare, -1), (engine, 1)):
            downloads = start(components, reqs)  # untimed
            t = time.perf_counter()
            finish(downloads, resps)
            elapsed += sign * (time.perf_counter() - t)
        return elapsed

    def items_(reqs: list[Request], resps: list[HtmlResponse]) -> float:
        t = time.perf_counter()
        for _ in reqs:
            ext.item_scraped()
        return time.perf_counter() - t

    return {"request": requests_, "response": responses_, "item": items_}


def scrapy_parts(core: CoreStats, dstats: DownloaderStats, spider: object) -> dict[str, Part]:
    def requests_(reqs: list[Request], resps: list[HtmlResponse]) -> float:
        t = time.perf_counter()
        for r in reqs:
            dstats.process_request(r)
        return time.perf_counter() - t

    def responses_(reqs: list[Request], resps: list[HtmlResponse]) -> float:
        t = time.perf_counter()
        for _ in resps:  # CoreStats.response_received only takes the spider
            core.response_received(spider)  # type: ignore[arg-type]
        return time.perf_counter() - t

    def items_(reqs: list[Request], resps: list[HtmlResponse]) -> float:
        item = {"x": 1}
        t = time.perf_counter()
        for _ in reqs:
            core.item_scraped(item, spider)  # type: ignore[arg-type]
        return time.perf_counter() - t

    return {"request": requests_, "response": responses_, "item": items_}


def memory_growth(events: int) -> dict[str, int]:
    crawler = get_crawler(settings_dict={"HEARTBEAT_API_BASE_URL": "http://127.0.0.1:9"})
    ext = HeartbeatExtension(crawler, load_config(crawler.settings.get))  # type: ignore[arg-type]
    tracker = ext.tracker
    engine = observed(tracker)
    tracemalloc.start()
    marks: dict[str, int] = {}
    done = 0
    response = HtmlResponse("http://example.com/", status=200)  # only its status is read
    for target in (10_000, events):
        while done < target:
            for n in range(done, done + CHUNK):
                r = Request(f"http://example.com/p/{n}")  # a new URL each time
                engine.enqueue_request(r)
                engine.download(r).callback(response)
                ext.item_scraped()
            done += CHUNK
        tracker.settle(final=True)
        gc.collect()
        marks[f"traced_after_{target}"] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert tracker.total == tracker.crawled == events
    marks["growth_bytes"] = marks[f"traced_after_{events}"] - marks["traced_after_10000"]
    return marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    crawler = get_crawler(settings_dict={"HEARTBEAT_API_BASE_URL": "http://127.0.0.1:9"})
    config = load_config(crawler.settings.get)
    assert config is not None
    ext = HeartbeatExtension(crawler, config)
    crawler.stats.open_spider()
    spider = crawler._create_spider("bench") if hasattr(crawler, "_create_spider") else None
    core = CoreStats(crawler.stats)
    dstats = DownloaderStats(crawler.stats)

    seconds = timed(
        args.events,
        {
            "heartbeat": heartbeat_parts(ext),
            "heartbeat-fallback": heartbeat_parts(ext, engine_hook=False),
            "scrapy": scrapy_parts(core, dstats, spider),
        },
    )
    ns = {who: {k: v / args.events * 1e9 for k, v in row.items()} for who, row in seconds.items()}
    for row in ns.values():
        row["per_event"] = sum(row[k] for k in ("request", "response", "item")) / 3
    memory = memory_growth(args.events)
    print(f"{args.events:,} requests, responses and items each; ns per event")
    print(f"{'':18} {'request':>10} {'response':>10} {'item':>10} {'per event':>10}")
    for who, row in ns.items():
        print(
            f"{who:18} {row['request']:>10.0f} {row['response']:>10.0f} {row['item']:>10.0f} "
            f"{row['per_event']:>10.0f}"
        )
    print(
        f"memory: traced after 10,000 URLs {memory['traced_after_10000']:,} B, after "
        f"{args.events:,} {memory[f'traced_after_{args.events}']:,} B: growth "
        f"{memory['growth_bytes']:,} B (target < 65,536)"
    )
    save("event_cost", {"events": args.events, "ns": ns, "memory": memory})
    ok = (
        ns["heartbeat"]["per_event"] <= ns["scrapy"]["per_event"] and memory["growth_bytes"] < 65536
    )
    print("targets:", "PASS" if ok else "MISSED")
    print(json.dumps({"per_event_ns": {k: round(v["per_event"]) for k, v in ns.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
