"""Runs real crawls in a process of their own and writes what happened as JSON.

    python -m tests.crawl_runner CONFIG.json OUTPUT.json

CONFIG holds ``crawls``: a list of ``{"spider": "module:Class", "settings": {},
"args": {}}`` run together in one process (two crawlers, one process).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any

from scrapy import signals
from scrapy.utils.misc import load_object

#: HEARTBEAT_TEST_RUN_MODE runs every crawl of the suite in one mode (tox's
#: reactorless env); a test that sets its own reactor settings keeps them.
RUN_MODES: dict[str, dict[str, Any]] = {
    "asyncio": {},
    "epoll": {"TWISTED_REACTOR": "twisted.internet.epollreactor.EPollReactor"},
    "reactorless": {"TWISTED_REACTOR_ENABLED": False},
}


class _WithoutThePackage:
    """A process where ``scrapy_heartbeat`` cannot be imported, as on a
    worker whose image lacks it (``HEARTBEAT_TEST_WITHOUT_PACKAGE=1``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "scrapy_heartbeat" or name.startswith("scrapy_heartbeat."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def main(config_path: str, output_path: str) -> int:
    if os.environ.get("HEARTBEAT_TEST_WITHOUT_PACKAGE"):
        sys.meta_path.insert(0, _WithoutThePackage())  # type: ignore[arg-type]
    # Every warning reaches the log, where tests.crawl refuses them.
    warnings.simplefilter("always")
    logging.captureWarnings(True)
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    crawls = config["crawls"]
    base: dict[str, Any] = {
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "%(asctime)s.%(msecs)03d [%(name)s] %(levelname)s: %(message)s",
        "TELNETCONSOLE_ENABLED": False,
        **config.get("settings", {}),
    }
    if not {"TWISTED_REACTOR", "TWISTED_REACTOR_ENABLED"} & set(base):
        base.update(RUN_MODES[os.environ.get("HEARTBEAT_TEST_RUN_MODE", "asyncio")])
    reactor = base.get("TWISTED_REACTOR", "")
    asyncio_mode = not reactor or "asyncio" in reactor
    try:
        from scrapy.crawler import AsyncCrawlerProcess
    except ImportError:  # Scrapy < 2.13
        AsyncCrawlerProcess = None
    cls: Any
    if asyncio_mode and AsyncCrawlerProcess is not None:
        cls = AsyncCrawlerProcess
    else:
        from scrapy.crawler import CrawlerProcess

        cls = CrawlerProcess
    process = cls(base)
    results: list[dict[str, Any]] = []
    keep_alive: list[Any] = []
    for crawl in crawls:
        base_cls = load_object(crawl["spider"])
        # a subclass per crawl: two crawls of one spider keep their own settings
        spidercls = type(
            base_cls.__name__,
            (base_cls,),
            {"custom_settings": {**(base_cls.custom_settings or {}), **crawl.get("settings", {})}},
        )
        crawler = process.create_crawler(spidercls)
        result: dict[str, Any] = {"items": [], "stats": {}}

        def scraped(item: Any, result: dict[str, Any] = result) -> None:
            result["items"].append(dict(item))

        def closed(
            spider: Any, reason: str, result: dict[str, Any] = result, crawler: Any = crawler
        ) -> None:
            result["reason"] = reason

        keep_alive.extend((scraped, closed))  # signals hold receivers weakly
        crawler.signals.connect(scraped, signal=signals.item_scraped)
        crawler.signals.connect(closed, signal=signals.spider_closed)
        results.append(result)
        process.crawl(crawler, **crawl.get("args", {}))
        result["crawler"] = crawler
    process.start()
    for result in results:
        crawler = result.pop("crawler")
        result["stats"] = {
            k: (v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in crawler.stats.get_stats().items()
        }
    with open(output_path, "w", encoding="utf-8") as f:
        json.dump({"crawls": results}, f, default=str)
    return 0 if all("reason" in r for r in results) else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
