"""Probes for ``bench/contention.py``: what part of a beat costs a crawl on
a shared CPU. Not part of the package; each is enabled in ``EXTENSIONS``."""

from __future__ import annotations

import threading
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler

from scrapy_heartbeat import HeartbeatExtension
from scrapy_heartbeat.client import HeartbeatResult


class NoHttpHeartbeat(HeartbeatExtension):
    """The extension, its worker thread and payloads, with a client that
    answers each beat at once without any I/O."""

    def spider_opened(self, spider: Any) -> Any:
        opened = super().spider_opened(spider)
        if self.sender is not None:
            self.sender.client.send = lambda *args, **kwargs: HeartbeatResult("ok")  # type: ignore[method-assign]
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
