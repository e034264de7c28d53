"""The companion downloader middleware that sees each URL's final outcome.

It sits outermost (order :data:`MIDDLEWARE_ORDER`), so ``process_response``
sees only final responses (retries and redirects have been turned into new
requests by then) and ``process_exception`` sees only what no other middleware
handled: a download error once retries are exhausted, or an ``IgnoreRequest``.
The optional ``spider`` arguments keep older Scrapy, which passes it, working.
:class:`~scrapy_heartbeat.extension.HeartbeatExtension` enables it itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import NotConfigured

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from typing_extensions import Self

    from scrapy_heartbeat.progress import ProgressTracker

MIDDLEWARE_ORDER = 0


class HeartbeatDownloaderMiddleware:
    def __init__(self, tracker: ProgressTracker):
        self.tracker = tracker

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        from scrapy_heartbeat.extension import HeartbeatExtension

        for extension in crawler.extensions.middlewares:
            if isinstance(extension, HeartbeatExtension):
                return cls(extension.tracker)
        raise NotConfigured  # the extension is off: nothing to count for

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
