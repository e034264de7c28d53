"""A fast local site for the benchmarks, in a process of its own.

    python bench/site_server.py [--pages 20000]

Prints ``http://127.0.0.1:PORT`` and serves ``/p/<n>`` for ``0 <= n <
pages``: page *n* links to pages ``5n+1 .. 5n+5`` (so a crawl from ``/p/0``
reaches them all) and back to ``/p/0`` (a duplicate the dupe filter drops).
Pages are built once and served from memory by Twisted's web server; on exit
(SIGTERM) it prints its own CPU seconds, so a benchmark can check it was not
the bottleneck. The ``/scrapeops/`` paths answer scrapeops-scrapy's API
calls, so that peer can post somewhere local.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.web import resource, server

SCRAPEOPS_REPLY = {
    "job_id": 1,
    "job_group_id": 1,
    "job_valid": True,
    "sdk_active": True,
    "stats_period_frequency": 10,
}


class Site(resource.Resource):
    isLeaf = True

    def __init__(self, pages: int, scrapeops_period: int) -> None:
        super().__init__()
        self.pages = [self._page(n, pages) for n in range(pages)]
        self.scrapeops = json.dumps(
            {**SCRAPEOPS_REPLY, "stats_period_frequency": scrapeops_period}
        ).encode()
        self.scrapeops_calls = 0

    @staticmethod
    def _page(n: int, pages: int) -> bytes:
        links = "".join(
            f'<a href="/p/{child}">page {child}</a>\n'
            for child in range(5 * n + 1, 5 * n + 6)
            if child < pages
        )
        return (
            f"<html><head><title>Page {n}</title></head><body><h1>Page {n}</h1>\n"
            f'<p class="price">{n % 97}.99</p>\n{links}<a href="/p/0">home</a></body></html>'
        ).encode()

    def render(self, request: Any) -> bytes:
        path = request.path.decode()
        if path.startswith("/scrapeops/"):
            self.scrapeops_calls += 1
            request.setHeader(b"Content-Type", b"application/json")
            return self.scrapeops
        if path.startswith("/p/"):
            try:
                return self.pages[int(path[3:])]
            except (ValueError, IndexError):
                pass
        request.setResponseCode(404)
        return b"not found"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=20_000)
    parser.add_argument("--scrapeops-period", type=int, default=10)
    args = parser.parse_args()
    site = Site(args.pages, args.scrapeops_period)
    factory = server.Site(site)
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(f"http://127.0.0.1:{port.getHost().port}", flush=True)

    def stop(*_: object) -> None:
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, stop)
    reactor.run()  # type: ignore[attr-defined]
    times = os.times()
    print(
        json.dumps(
            {"cpu_seconds": times.user + times.system, "scrapeops_calls": site.scrapeops_calls}
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
