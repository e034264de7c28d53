"""Probes for ``bench/contention.py``: what part of a beat costs a crawl on
a shared CPU. Not part of the package; each is enabled in ``EXTENSIONS``."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from scrapy_heartbeat import HeartbeatExtension
from scrapy_heartbeat.client import HeartbeatResult
from scrapy_heartbeat.payload import heartbeat_body


class NoHttpHeartbeat(HeartbeatExtension):
    """The extension, its worker thread and payloads, with a client that
    answers each beat at once without any I/O."""

    def spider_opened(self, spider: Any) -> Any:
        opened = super().spider_opened(spider)
        if self.sender is not None:
            self.sender.client.send = lambda *args, **kwargs: HeartbeatResult("ok")  # type: ignore[method-assign]
        return opened


class TimerWatchdogHeartbeat(HeartbeatExtension):
    """The extension with each request timed by a watchdog thread of its own
    (``threading.Timer``, which cuts a reply that trickles in) instead of the
    event loop's timer: the cost of that thread."""

    def spider_opened(self, spider: Any) -> Any:
        opened = super().spider_opened(spider)
        if self.sender is not None:
            self.sender._call_later = None
        return opened


class LoopHttpHeartbeat(HeartbeatExtension):
    """Periodic beats posted by Twisted's Agent on the reactor thread, with
    no worker thread: what a loop-thread client would cost (the final beat
    still goes the usual way). A probe only: no deadline, no size bound."""

    def spider_opened(self, spider: Any) -> Any:
        opened = super().spider_opened(spider)
        sender = self.sender
        if sender is None:
            return opened
        from twisted.internet import reactor
        from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
        from twisted.web.http_headers import Headers

        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
        client = sender.client
        headers = Headers(
            {b"Content-Type": [b"application/json"], b"User-Agent": [b"scrapy-heartbeat"]}
        )
        state = {"in_flight": False}

        def send(status: str, progress: Any, prepare: Any = None) -> bool:
            if state["in_flight"]:
                return False
            state["in_flight"] = True
            body = heartbeat_body(client.execution_id, client.container_id, status, progress)
            producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
            d = agent.request(b"POST", client.heartbeat_url.encode(), headers, producer)
            d.addCallback(readBody)

            def done(raw: bytes) -> None:
                state["in_flight"] = False
                ok = json.loads(raw).get("status") == "ok"
                sender.stats.inc_value("heartbeat/ok" if ok else "heartbeat/failed")

            def failed(failure: Any) -> None:
                state["in_flight"] = False
                sender.stats.inc_value("heartbeat/failed")

            d.addCallbacks(done, failed)
            return True

        sender.send = send  # type: ignore[method-assign]
        return opened


class SleepingThread:
    """A thread that wakes once per HEARTBEAT_INTERVAL and does nothing."""

    def __init__(self, crawler: Crawler) -> None:
        self.interval = crawler.settings.getfloat("HEARTBEAT_INTERVAL", 1.0)
        self.stop = threading.Event()
        crawler.signals.connect(self.opened, signal=signals.spider_opened)
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SleepingThread:
        return cls(crawler)

    def opened(self, spider: Any) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def closed(self, spider: Any) -> None:
        self.stop.set()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            pass


class PinnedCrawl:
    """Pins the crawl's main thread to the CPU ``BENCH_PIN_CPU`` names, as
    the crawler is built; threads it starts later (the sender's, the
    reactor's pool) inherit it. ``scrapy bench`` has started its site server
    by then, so the server stays where the process started."""

    def __init__(self, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # 0: the calling thread, on Linux

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PinnedCrawl:
        cpu = crawler.settings.getint("BENCH_PIN_CPU", -1)
        if cpu < 0:
            raise NotConfigured
        return cls(cpu)


class MainThreadCounters:
    """Puts in the crawl's stats what its main thread went through between
    spider_opened and spider_closed: context switches, voluntary (it slept:
    waiting for the GIL, or for the loop's next event) and not (the
    scheduler took the CPU from it), its CPU time over wall time, and the
    CPU time of the process's other threads (the sender's among them). A
    thread of the extension that takes the GIL shows as the main thread's
    voluntary switches, whatever else the machine does."""

    def __init__(self, crawler: Crawler) -> None:
        self.stats = crawler.stats
        self.start: tuple[int, int, float, float, float] | None = None
        crawler.signals.connect(self.opened, signal=signals.spider_opened)
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> MainThreadCounters:
        return cls(crawler)

    @staticmethod
    def _now() -> tuple[int, int, float, float, float]:
        fields = {}
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        return (
            int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]),
            time.thread_time(),
            time.monotonic(),
            time.process_time(),
        )

    def opened(self, spider: Any) -> None:
        self.start = self._now()

    def closed(self, spider: Any) -> None:
        assert self.start is not None
        now = self._now()
        voluntary, involuntary, cpu, wall, process = (
            b - a for a, b in zip(self.start, now, strict=True)
        )
        self.stats.set_value("bench/main_voluntary_switches", voluntary)
        self.stats.set_value("bench/main_involuntary_switches", involuntary)
        self.stats.set_value("bench/main_cpu_share", round(cpu / wall, 4))
        # the sender's thread, the reactor's pool, a probe's thread
        self.stats.set_value("bench/other_threads_cpu_ms", round((process - cpu) * 1000, 1))
