"""The companion middleware the extension enables itself.

:class:`HeartbeatSpiderMiddleware` sees an exception raised by the spider's
``start()`` and says so with the private signal :data:`start_failed`, which
the extension listens to: neither imports the other's class. Each URL's
outcome is seen by observing the engine (see :mod:`scrapy_heartbeat._scrapy`),
which costs a crawl less than a downloader middleware would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import CloseSpider, NotConfigured

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: Spider middlewares closer to the spider have higher orders.
SPIDER_MIDDLEWARE_ORDER = 1000

#: Sent when the spider's ``start()`` raised (not ``CloseSpider``).
start_failed = object()


def enable_companions(crawler: Crawler) -> None:
    """Enable the companion middleware in ``crawler``'s settings, unless
    configured already (the extension calls this as it is built)."""
    for setting, component, order in COMPANIONS:
        try:
            crawler.settings.setdefault_in_component_priority_dict(setting, component, order)
        except TypeError:  # frozen settings: built outside Crawler's own set-up
            logger.warning(
                "scrapy-heartbeat: settings are frozen; add %(path)s to %(setting)s "
                "at %(order)d, or a failing start() will not make the final beat 'failed'",
                {
                    "path": f"scrapy_heartbeat.{component.__name__}",
                    "setting": setting,
                    "order": order,
                },
            )


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
    the final beat says ``failed``. ``CloseSpider`` raised there is the
    spider's own way to finish, not a failure.
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for item_or_request in start:
                yield item_or_request
        except CloseSpider:
            raise
        except Exception:
            self.crawler.signals.send_catch_log(signal=start_failed)
            raise


#: The middleware the extension enables itself: (setting, class, order).
COMPANIONS: tuple[tuple[str, type, int], ...] = (
    ("SPIDER_MIDDLEWARES", HeartbeatSpiderMiddleware, SPIDER_MIDDLEWARE_ORDER),
)
