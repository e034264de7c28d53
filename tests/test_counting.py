"""The counting rules, held against a site that exercises each of them.

Every expected number below is derived by hand from the site map in
:func:`counting_site`; the comments say which page makes which count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXECUTION_ID
from tests.crawl import CrawlResult, run_crawl
from tests.servers import HeartbeatServer, SiteServer, free_port, html, redirect, status

REACTORS = {
    "asyncio": {},
    "epoll": {"TWISTED_REACTOR": "twisted.internet.epollreactor.EPollReactor"},
    "reactorless": {"TWISTED_REACTOR_ENABLED": False},
}


@pytest.fixture
def counting_site() -> Iterator[SiteServer]:
    site = SiteServer()
    refused = f"http://127.0.0.1:{free_port()}/refused"

    def flaky503(handler: Any, hit: int) -> None:
        handler.respond(503 if hit == 1 else 200, "<html>recovered</html>")

    def slow(handler: Any, hit: int) -> None:
        time.sleep(2.0)  # DOWNLOAD_TIMEOUT is 0.5 s in these crawls
        handler.respond(200, "too late")

    site.pages.update(
        {
            "/robots.txt": lambda h, hit: h.respond(200, "User-agent: *\nDisallow: /private/\n"),
            "/": html(
                "/a",
                "/a",  # duplicate link: filtered, not counted
                "/b",
                "http://offsite.example/x",  # offsite: not counted
                "/private/secret",  # robots.txt forbids: skipped
                "/redirect-301",  # 301 -> /r-target 200: successful
                "/chain-1",  # 302 -> /chain-2 -> 302 -> /chain-end: successful
                "/redirect-seen",  # 301 -> /a, already seen: successful
                "/redirect-offsite",  # 302 -> offsite: skipped
                "/missing",  # 404: failed
                "/error500",  # 500 through all retries: failed
                "/flaky503",  # 503 then 200 on retry: successful
                refused,  # connection refused, retries exhausted: failed
                "/slow",  # download timeout, retries exhausted: failed
                "/raises",  # callback raises: successful URL, one error
                "/item-drop",  # item dropped by a pipeline: not a data item
                "/item-raise",  # pipeline raises: one error, not a data item
                "/deep/0",  # more redirects than REDIRECT_MAX_TIMES: skipped
            ),
            # Links back to the start URL. Scrapy schedules start requests with
            # dont_filter=True, so the dupe filter never saw "/" and accepts
            # this link: "/" really is crawled twice, and counted twice.
            "/a": html("/", "/b"),
            "/b": html("/"),
            "/private/secret": html(),
            "/redirect-301": redirect(301, "/r-target"),
            "/r-target": html("/"),
            "/chain-1": redirect(302, "/chain-2"),
            "/chain-2": redirect(302, "/chain-end"),
            "/chain-end": html(),
            "/redirect-seen": redirect(301, "/a"),
            "/redirect-offsite": redirect(302, "http://offsite.example/y"),
            "/error500": status(500),
            "/flaky503": flaky503,
            "/slow": slow,
            "/raises": html(),
            "/item-drop": html(),
            "/item-raise": html(),
            **{f"/deep/{n}": redirect(302, f"/deep/{n + 1}") for n in range(6)},
        }
    )
    yield site
    site.stop()


EXPECTED = {
    # / (twice: the start request, then the link back from /a), /a, /b,
    # /redirect-301, /chain-1, /redirect-seen, /missing, /error500, /flaky503,
    # refused, /slow, /raises, /item-drop, /item-raise
    "total_urls": 15,
    "crawled_urls": 15,
    # / (twice), /a, /b, /redirect-301, /chain-1, /redirect-seen, /flaky503,
    # /raises, /item-drop, /item-raise
    "successful_urls": 11,
    # /missing, /error500, refused, /slow
    "failed_urls": 4,
    # items from / (twice), /a, /b, /r-target, /chain-end, /flaky503
    # (/item-drop is dropped, /item-raise errors, /raises yields none)
    "data_items": 7,
    # the /raises callback and the /item-raise pipeline
    "error_count": 2,
    "percentage": 100.0,
}


def crawl_site(
    site: SiteServer,
    server: HeartbeatServer,
    spider: str = "tests.spiders.SiteSpider",
    **settings: Any,
) -> CrawlResult:
    return run_crawl(
        spider,
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "ITEM_PIPELINES": {"tests.spiders.DropAndRaisePipeline": 300},
            "HEARTBEAT_API_BASE_URL": server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            "ROBOTSTXT_OBEY": True,
            "DOWNLOAD_TIMEOUT": 0.5,
            "RETRY_TIMES": 2,
            "CONCURRENT_REQUESTS": 4,
            "REDIRECT_MAX_TIMES": 3,
            **settings,
        },
        args={"site": site.url},
    )


def final_progress(server: HeartbeatServer) -> dict[str, Any]:
    bodies = server.bodies()
    assert bodies, "no heartbeat received"
    assert bodies[-1]["status"] == "completed", bodies[-1]
    progress: dict[str, Any] = bodies[-1]["progress"]
    return progress


@pytest.mark.parametrize("reactor", list(REACTORS))
def test_final_beat_equals_ground_truth(
    reactor: str, counting_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl_site(counting_site, heartbeat_server, **REACTORS[reactor])
    assert result.returncode == 0, result.log[-3000:]
    assert result.reason == "finished"
    progress = final_progress(heartbeat_server)
    assert {k: progress[k] for k in EXPECTED} == EXPECTED
    # the ground truth Scrapy itself records agrees
    assert progress["data_items"] == result.stats["item_scraped_count"] == len(result.items)
    assert result.stats["robotstxt/forbidden"] == 1
    # offsite.example/x from both crawls of "/", and the redirect to /y
    assert result.stats["offsite/filtered"] == 3
    assert result.stats["heartbeat/final_delivered"] is True
    # every page the site served more than once was a retry, not a new URL
    assert counting_site.hits["/error500"] == 3
    assert counting_site.hits["/flaky503"] == 2
    assert counting_site.hits["/"] == 2
    assert counting_site.hits["/a"] == 1  # the redirect from /redirect-seen was dropped
    assert counting_site.hits["/deep/3"] == 1
    assert "/deep/4" not in counting_site.hits  # max redirections reached


@pytest.mark.parametrize("jobdir", [False, True])
def test_ground_truth_without_the_engine_hook(
    jobdir: bool, counting_site: SiteServer, heartbeat_server: HeartbeatServer, tmp_path: Path
) -> None:
    """Where the engine has no ``_handle_downloader_output``, outcomes come
    from a callback on the downloader's ``fetch``: the same counts."""
    settings = {"JOBDIR": str(tmp_path / "job")} if jobdir else {}
    result = crawl_site(
        counting_site, heartbeat_server, "tests.spiders.SiteSpiderWithoutEngineHook", **settings
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.reason == "finished"
    progress = final_progress(heartbeat_server)
    assert {k: progress[k] for k in EXPECTED} == EXPECTED
    assert "observing outcomes on the downloader's fetch" in result.log  # the fallback ran
    assert "cannot observe" not in result.log


def test_final_beat_equals_ground_truth_with_a_disk_queue(
    counting_site: SiteServer, heartbeat_server: HeartbeatServer, tmp_path: Path
) -> None:
    """With JOBDIR the scheduler queues copies of the requests on disk: every
    retry and redirect hop must still be seen as the same logical URL."""
    result = crawl_site(counting_site, heartbeat_server, JOBDIR=str(tmp_path / "job"))
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["scheduler/enqueued/disk"] > 0
    progress = final_progress(heartbeat_server)
    assert {k: progress[k] for k in EXPECTED} == EXPECTED


def test_progress_is_monotonic_and_consistent(
    counting_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl_site(
        counting_site,
        heartbeat_server,
        HEARTBEAT_INTERVAL=0.2,
        HEARTBEAT_MIN_INTERVAL=0.1,
        DOWNLOAD_DELAY=0.05,
    )
    assert result.returncode == 0
    bodies = heartbeat_server.bodies()
    assert len(bodies) >= 4, "expected several beats during the crawl"
    assert [b["status"] for b in bodies[:-1]] == ["running"] * (len(bodies) - 1)
    previous = 0
    for body in bodies:
        p = body["progress"]
        assert p["crawled_urls"] == p["successful_urls"] + p["failed_urls"]
        assert p["crawled_urls"] <= p["total_urls"]
        assert p["crawled_urls"] >= previous
        previous = p["crawled_urls"]
        assert p["current_stage"].endswith(f"({p['crawled_urls']}/{p['total_urls']})")
        assert body["execution_id"] == EXECUTION_ID
        assert isinstance(body["timestamp"], int)
    assert final_progress(heartbeat_server)["crawled_urls"] == EXPECTED["total_urls"]


def test_resumed_jobdir_crawl_counts_the_requests_it_restores(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer, tmp_path: Path
) -> None:
    """Requests queued on disk by the first run carry that run's markers; the
    second run continues the first one's counters (saved in the JOBDIR) and
    counts the requests it restores as its own."""
    settings = {
        "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
        "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
        "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        "JOBDIR": str(tmp_path / "job"),
        "CONCURRENT_REQUESTS": 1,
    }
    args = {"site": pages_site.url, "pages": "12"}
    first = run_crawl("tests.spiders.PagesSpider", {**settings, "CLOSESPIDER_ITEMCOUNT": 3}, args)
    assert first.returncode == 0
    second = run_crawl("tests.spiders.PagesSpider", settings, args)
    assert second.returncode == 0
    crawled_first = {item["n"] for item in first.items}
    crawled_second = {item["n"] for item in second.items}
    assert crawled_first | crawled_second == set(range(12))  # the resume did its job
    assert crawled_second and not crawled_first & crawled_second
    progress = heartbeat_server.bodies()[-1]["progress"]
    # the start requests are all duplicates in the second run: everything it
    # crawled came from the first run's disk queue, and nothing twice
    assert progress["total_urls"] == progress["successful_urls"] == 12
    assert progress["data_items"] == len(first.items) + len(second.items) == 12
