from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import scrapy
from scrapy.http import Response


class BooksSpider(scrapy.Spider):
    """Crawls the bundled bookshop site: ``scrapy crawl books -a site=URL``."""

    name = "books"
    allowed_domains = ["127.0.0.1", "localhost"]

    def __init__(self, site: str = "http://127.0.0.1:8001", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [site.rstrip("/") + "/index.html"]

    def parse(self, response: Response) -> Iterator[Any]:
        title = response.css("h1.book::text").get()
        if title:
            yield {
                "title": title,
                "price": response.css(".price::text").get(),
                "url": response.url,
            }
        yield from response.follow_all(response.css("a::attr(href)").getall(), callback=self.parse)
