"""``scrapy bench``'s own spider, for ``scrapy runspider``: two crawls at
once against one bench server (``scrapy bench`` starts a server of its own
on a fixed port, so two of it cannot run side by side)."""

from scrapy.commands.bench import _BenchSpider


class BenchSpider(_BenchSpider):
    name = "follow"
