"""Spiders and pipelines the tests crawl with (sites are served locally)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import scrapy
from scrapy import signals
from scrapy.exceptions import CloseSpider, DropItem
from scrapy.http import Response


class SiteSpider(scrapy.Spider):
    """Follows every link of the site at ``-a site=URL``; one item per page,
    except ``/raises``, whose callback raises."""

    name = "site"
    allowed_domains = ["127.0.0.1"]

    def __init__(self, site: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [site + "/"]

    def parse(self, response: Response) -> Iterator[Any]:
        if response.url.endswith("/raises"):
            raise ValueError("a callback that raises")
        yield {"url": response.url}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)


class SiteSpiderWithoutEngineHook(SiteSpider):
    """SiteSpider on an engine without ``_handle_downloader_output`` (as a
    future Scrapy might be): the extension falls back to a callback on the
    Deferred of the downloader's ``fetch``. Patched in the crawl's own process."""

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
        from scrapy_heartbeat import _scrapy

        _scrapy.observe_engine = lambda engine, tracker: False  # type: ignore[assignment]
        return super().from_crawler(crawler, *args, **kwargs)


class DropAndRaisePipeline:
    """Drops the item of ``/item-drop``; raises on the item of ``/item-raise``."""

    def process_item(self, item: dict[str, Any], spider: Any = None) -> dict[str, Any]:
        if item["url"].endswith("/item-drop"):
            raise DropItem("dropped on purpose")
        if item["url"].endswith("/item-raise"):
            raise RuntimeError("a pipeline that raises")
        return item


class PagesSpider(scrapy.Spider):
    """Crawls ``/page/0`` .. ``/page/<pages - 1>`` of ``-a site=URL``."""

    name = "pages"

    def __init__(self, site: str = "", pages: str = "20", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site = site
        self.pages = int(pages)

    async def start(self) -> Any:
        for n in range(self.pages):
            yield scrapy.Request(f"{self.site}/page/{n}", callback=self.parse)

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url, "n": int(response.url.rsplit("/", 1)[1])}


class PausingSpider(PagesSpider):
    """Pauses the engine for a second after the first response."""

    name = "pausing"

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        engine = self.crawler.engine
        if not getattr(self, "_paused_once", False):
            self._paused_once = True
            engine.pause()
            try:
                from scrapy.utils.asyncio import call_later  # works without a reactor
            except ImportError:  # Scrapy < 2.14
                from twisted.internet import reactor

                call_later = reactor.callLater  # type: ignore[attr-defined]
            call_later(1.0, engine.unpause)
        yield from super().parse(response)


class RaisingSpider(PagesSpider):
    name = "raising"

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        raise ValueError("every callback raises")


class BrokenStartSpider(PagesSpider):
    """Yields ``pages`` requests, then raises from ``start()``."""

    name = "broken_start"

    async def start(self) -> Any:
        async for request in super().start():
            yield request
        raise RuntimeError("start() broke")


class StageSpider(PagesSpider):
    name = "stage"
    heartbeat_stage = "解析详情页"


class BogusStageSpider(PagesSpider):
    name = "bogus_stage"
    heartbeat_stage = 42


class SlowPagesSpider(PagesSpider):
    """Many pages, slowly: a crawl to interrupt."""

    name = "slow_pages"
    custom_settings = {"CONCURRENT_REQUESTS": 1, "DOWNLOAD_DELAY": 0.1}


class SecretSpider(scrapy.Spider):
    """Crawls a URL with credentials and a token in its query."""

    name = "secret"

    def __init__(self, site: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        host = site.removeprefix("http://")
        self.start_urls = [f"http://crawluser:crawl-pa55@{host}/page/1?token=q-s3cret"]

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"n": 1}


class LongUrlSpider(scrapy.Spider):
    """A 10,000-character URL and a very long stage text."""

    name = "long_url"
    heartbeat_stage = "阶段" * 500

    def __init__(self, site: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [f"{site}/page/1?" + "q" * 10_000]

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"n": 1}


class FleetSpider(scrapy.Spider):
    """Crawls the fleet site (:func:`tests.fleet.fleet_site`) from ``/n/0``.

    Its start request goes through the dupe filter, so of several workers on
    one scrapy-redis queue only one crawls it. ``-a never_close=1`` keeps the
    spider open when idle, as scrapy-redis's ``RedisSpider`` does by default.
    """

    name = "fleet"

    def __init__(self, site: str = "", never_close: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site = site
        self.never_close = bool(never_close)

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
        from scrapy import signals

        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.idle, signal=signals.spider_idle)
        return spider

    def idle(self) -> None:
        if self.never_close:
            from scrapy.exceptions import DontCloseSpider

            raise DontCloseSpider

    async def start(self) -> Any:
        yield scrapy.Request(f"{self.site}/n/0", callback=self.parse)

    def closed(self, reason: str) -> None:
        """scrapy-redis 0.9.1 never disconnects its scheduler's and dupe
        filter's clients: without this, one of their sockets can outlive
        the crawl (a ResourceWarning at exit, which the tests treat as an
        error)."""
        # Not scrapy_heartbeat.progress.scheduler_of: some workers run
        # without the package.
        engine = self.crawler.engine
        slot = getattr(engine, "_slot", None) or getattr(engine, "slot", None)
        scheduler = getattr(slot, "scheduler", None)
        dupefilter = getattr(scheduler, "df", None)
        for owner in (scheduler, dupefilter):
            client = getattr(owner, "server", None)
            if client is not None:
                client.connection_pool.disconnect()

    def parse(self, response: Response) -> Iterator[Any]:
        if "/boom/" in response.url:
            raise ValueError("a callback that raises")
        yield {"url": response.url}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)


class ShardSpider(PagesSpider):
    """Crawls ``/page/<first>`` .. ``/page/<first + pages - 1>``: one shard."""

    name = "shard"

    def __init__(self, first: str = "0", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first = int(first)

    async def start(self) -> Any:
        for n in range(self.first, self.first + self.pages):
            yield scrapy.Request(f"{self.site}/page/{n}", callback=self.parse)


class ThreadStarts:
    """An extension that counts the threads started during the crawl, in
    its stats: ``test/threads_started`` and ``test/timers_started``
    (``threading.Timer``)."""

    def __init__(self, crawler: Any) -> None:
        self.stats = crawler.stats
        self.started: list[threading.Thread] = []
        original = self.original = threading.Thread.start
        started = self.started

        def start(thread: threading.Thread) -> None:
            started.append(thread)
            original(thread)

        threading.Thread.start = start  # type: ignore[method-assign]
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Any) -> ThreadStarts:
        return cls(crawler)

    def closed(self, spider: Any) -> None:
        threading.Thread.start = self.original  # type: ignore[method-assign]
        self.stats.set_value("test/threads_started", len(self.started))
        timers = [t for t in self.started if isinstance(t, threading.Timer)]
        self.stats.set_value("test/timers_started", len(timers))


class CloseFromStartSpider(PagesSpider):
    """Yields ``pages`` requests, then finishes with ``CloseSpider`` from
    ``start()``: Scrapy's own way to end a crawl, not a failure."""

    name = "close_from_start"

    async def start(self) -> Any:
        async for request in super().start():
            yield request
        raise CloseSpider("finished")


class ForeignMarkerSpider(PagesSpider):
    """Puts foreign values under the heartbeat's meta key as it yields."""

    name = "foreign_marker"

    async def start(self) -> Any:
        values: list[Any] = [(), None, [], "x", (1, 2), ("a", "b", "c", "d")]
        index = 0
        async for request in super().start():
            request.meta["_heartbeat_url"] = values[index % len(values)]
            index += 1
            yield request


class MarkerClobberingMiddleware:
    """A downloader middleware that sets the heartbeat's meta key to None on
    every request it sees."""

    def process_request(self, request: Any, spider: Any = None) -> None:
        request.meta["_heartbeat_url"] = None


class HandClosedSpider(PagesSpider):
    """Sends ``spider_closed`` by hand, through the synchronous
    ``send_catch_log``, from its first callback, then crawls on (as a
    plugin's or a test's own code may)."""

    name = "hand_closed"

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        if not getattr(self, "sent", False):
            self.sent = True
            self.crawler.signals.send_catch_log(
                signal=scrapy.signals.spider_closed, spider=self, reason="cancelled"
            )
        yield from super().parse(response)


class LostCloseSpider(PagesSpider):
    """Loses ``spider_closed`` for every receiver once idle (as when the
    engine cannot send it), then reports from ``engine_stopped``, after the
    extension's own handler, whether the extension still beats. With
    ``-a resend=1`` it sends ``spider_closed`` (``finished``) itself, through
    the synchronous ``send_catch_log``, once
    the engine closed the spider, before the extension hears
    ``engine_stopped``, as Scrapy's own tests do."""

    name = "lost_close"

    def __init__(self, resend: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resend = resend == "1"

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.lose_closed, signal=signals.spider_idle)
        if spider.resend:  # connected before the extension, so heard first
            crawler.signals.connect(spider.send_closed, signal=signals.engine_stopped)
        return spider

    def send_closed(self) -> None:
        for receiver in self.lost:
            self.crawler.signals.connect(receiver, signal=signals.spider_closed)
        self.crawler.signals.send_catch_log(
            signal=signals.spider_closed, spider=self, reason="finished"
        )

    def lose_closed(self) -> None:
        from pydispatch.dispatcher import getAllReceivers, liveReceivers

        # A list first: disconnecting while iterating skips every other one.
        closed = signals.spider_closed
        self.lost = list(liveReceivers(getAllReceivers(self.crawler, closed)))
        for receiver in self.lost:
            self.crawler.signals.disconnect(receiver, signal=closed)
        # Connected now, after the extension: receivers run in that order.
        self.crawler.signals.connect(self.stopped, signal=signals.engine_stopped)

    def stopped(self) -> None:
        from scrapy_heartbeat.extension import HeartbeatExtension

        for ext in self.crawler.extensions.middlewares:
            if isinstance(ext, HeartbeatExtension):
                running = ext.task is not None and ext.task.running
                self.logger.info("heartbeat loop running after the engine stopped: %s", running)
