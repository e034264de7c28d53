"""The companion middleware the extension enables itself.

:class:`HeartbeatSpiderMiddleware` sees an exception raised by the spider's
``start()``; :class:`~scrapy_heartbeat.extension.HeartbeatExtension` enables it
itself. Each URL's outcome is seen by observing the engine (see
:mod:`scrapy_heartbeat.progress`), which costs a crawl less than a downloader
middleware would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

    from scrapy_heartbeat.progress import ProgressTracker

#: Spider middlewares closer to the spider have higher orders.
SPIDER_MIDDLEWARE_ORDER = 1000


def _tracker(crawler: Crawler) -> ProgressTracker:
    from scrapy_heartbeat.extension import HeartbeatExtension

    for extension in crawler.extensions.middlewares:
        if isinstance(extension, HeartbeatExtension):
            return extension.tracker
    raise NotConfigured  # the extension is off: nothing to count for


class HeartbeatDownloaderMiddleware:
    """No longer used: the extension observes each download's outcome itself.

    Kept so that settings naming it still load; it disables itself with a
    warning that says to remove it.
    """

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        raise NotConfigured(
            "scrapy_heartbeat.HeartbeatDownloaderMiddleware is no longer needed; "
            "remove it from DOWNLOADER_MIDDLEWARES"
        )


class HeartbeatSpiderMiddleware:
    """Sees an exception raised by the spider's ``start()``.

    Scrapy 2.18+ also sends ``spider_error`` for it; 2.13 to 2.17 only log it.
    Either way the crawl then ends as ``finished``, yet it did not do its job:
    the final beat says ``failed``.
    """

    def __init__(self, tracker: ProgressTracker):
        self.tracker = tracker

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(_tracker(crawler))

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for item_or_request in start:
                yield item_or_request
        except Exception:
            self.tracker.start_failed = True
            self.tracker.errors += 1
            raise
