"""The companion middlewares the extension enables itself.

:class:`HeartbeatDownloaderMiddleware` sees each URL's final outcome.

It sits outermost (order :data:`MIDDLEWARE_ORDER`), so ``process_response``
sees only final responses (retries and redirects have been turned into new
requests by then) and ``process_exception`` sees only what no other middleware
handled: a download error once retries are exhausted, or an ``IgnoreRequest``.
The optional ``spider`` arguments keep older Scrapy, which passes it, working.
:class:`~scrapy_heartbeat.extension.HeartbeatExtension` enables it itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from typing_extensions import Self

    from scrapy_heartbeat.progress import ProgressTracker

MIDDLEWARE_ORDER = 0
#: Spider middlewares closer to the spider have higher orders.
SPIDER_MIDDLEWARE_ORDER = 1000


def _tracker(crawler: Crawler) -> ProgressTracker:
    from scrapy_heartbeat.extension import HeartbeatExtension

    for extension in crawler.extensions.middlewares:
        if isinstance(extension, HeartbeatExtension):
            return extension.tracker
    raise NotConfigured  # the extension is off: nothing to count for


class HeartbeatDownloaderMiddleware:
    def __init__(self, tracker: ProgressTracker):
        self.tracker = tracker

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(_tracker(crawler))

    def process_request(self, request: Request, spider: Spider | None = None) -> None:
        self.tracker.download_started(request)

    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Response:
        self.tracker.download_finished(request, response=response)
        return response

    def process_exception(
        self, request: Request, exception: Exception, spider: Spider | None = None
    ) -> None:
        self.tracker.download_finished(request, exception=exception)


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
