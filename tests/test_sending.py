"""Sending never gets in the crawl's way: each failure mode of the API is
crawled next to a healthy run of the same crawl."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

from tests.conftest import EXECUTION_ID
from tests.crawl import CrawlResult, run_crawl, run_crawls
from tests.servers import HeartbeatServer, SiteServer

FAST = {"HEARTBEAT_INTERVAL": 0.2, "HEARTBEAT_MIN_INTERVAL": 0.1}


def crawl_pages(site: SiteServer, api_url: str, pages: int = 30, **settings: Any) -> CrawlResult:
    return run_crawl(
        "tests.spiders.PagesSpider",
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": api_url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            "CONCURRENT_REQUESTS": 2,
            **FAST,
            **settings,
        },
        args={"site": site.url, "pages": str(pages)},
    )


def items_of(result: CrawlResult) -> list[Any]:
    return sorted(item["n"] for item in result.items)


def heartbeat_log_lines(result: CrawlResult) -> list[str]:
    return [
        line
        for line in result.log.splitlines()
        if re.search(r"\[scrapy_heartbeat[.\w]*\] (WARNING|ERROR)", line)
    ]


def test_rejection_logs_the_servers_message(pages_site: SiteServer) -> None:
    server = HeartbeatServer(behaviour="status_error")
    try:
        result = crawl_pages(pages_site, server.url, pages=5)
    finally:
        server.stop()
    lines = heartbeat_log_lines(result)
    assert "ERROR: Heartbeat rejected by the server: Invalid execution_id format" in lines[0]


def test_final_beat_waits_no_longer_than_close_timeout(pages_site: SiteServer) -> None:
    server = HeartbeatServer(behaviour="hang")
    try:
        result = crawl_pages(
            pages_site,
            server.url,
            pages=5,
            HEARTBEAT_TIMEOUT=30,  # the request itself would wait far longer
            HEARTBEAT_CLOSE_TIMEOUT=1.5,
        )
    finally:
        server.stop()
    assert result.returncode == 0
    assert len(result.items) == 5
    # generous margin: this guards against waiting for HEARTBEAT_TIMEOUT (30 s)
    assert result.close_seconds() <= 1.5 + 1.0
    assert re.search(
        r"no complete reply within [\d.]+s \(HEARTBEAT_CLOSE_TIMEOUT=1.5s reached\)", result.log
    )


def test_final_beat_is_retried_until_the_api_recovers(pages_site: SiteServer) -> None:
    server = HeartbeatServer(behaviour="http:503")
    try:
        import threading

        # the API comes back 0.6 s after the first 503 of the final beat
        def recover() -> None:
            while not any(b and b.get("status") == "completed" for b in server.bodies()):
                time.sleep(0.02)
            time.sleep(0.6)
            server.behaviour = "ok"

        threading.Thread(target=recover, daemon=True).start()
        result = crawl_pages(
            pages_site,
            server.url,
            pages=5,
            HEARTBEAT_RETRY_TIMES=5,
            HEARTBEAT_RETRY_DELAY=0.2,
            HEARTBEAT_CLOSE_TIMEOUT=10,
        )
    finally:
        server.stop()
    finals = [b for b in server.bodies() if b["status"] == "completed"]
    assert len(finals) >= 2, "the final beat was not retried"
    assert result.stats["heartbeat/final_delivered"] is True
    assert finals[-1]["progress"]["crawled_urls"] == 5


def test_at_most_one_beat_in_flight(pages_site: SiteServer) -> None:
    server = HeartbeatServer(behaviour="slow:1.0")
    pages_site.delay = 0.05  # type: ignore[attr-defined]
    try:
        result = crawl_pages(pages_site, server.url, pages=40, CONCURRENT_REQUESTS=1)
    finally:
        server.stop()
    arrivals = [r.at for r in server.received]
    # beats every 0.2 s, replies after 1 s: ticks in between are skipped
    assert result.stats["heartbeat/skipped_in_flight"] >= 3
    running = [
        t for t, r in zip(arrivals, server.received, strict=True) if r.body["status"] == "running"
    ]
    gaps = [b - a for a, b in itertools.pairwise(running)]
    assert gaps and min(gaps) >= 0.9, gaps
    assert len(result.items) == 40


def test_current_url_is_a_download_under_way(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    pages_site.delay = 0.6  # type: ignore[attr-defined]
    result = crawl_pages(pages_site, heartbeat_server.url, pages=2, CONCURRENT_REQUESTS=1)
    assert result.returncode == 0
    # beats every 0.2 s while the first page downloads: none has finished yet
    during_first = [
        b["progress"]
        for b in heartbeat_server.bodies()
        if b["status"] == "running"
        and b["progress"]["total_urls"] > 0
        and b["progress"]["crawled_urls"] == 0
    ]
    assert during_first, "no beat while the first page was downloading"
    assert any(p["current_url"].startswith(f"{pages_site.url}/page/") for p in during_first)
    assert heartbeat_server.bodies()[-1]["progress"]["current_url"].startswith(pages_site.url)


def test_stats_and_payload_shape(pages_site: SiteServer, heartbeat_server: HeartbeatServer) -> None:
    result = crawl_pages(pages_site, heartbeat_server.url, pages=10)
    stats = result.stats
    bodies = heartbeat_server.bodies()
    assert stats["heartbeat/sent"] == stats["heartbeat/ok"] == len(bodies)
    assert stats["heartbeat/final_status"] == "completed"
    first, last = bodies[0], bodies[-1]
    assert first["status"] == "running"
    assert first["progress"]["total_urls"] == 0  # sent as the spider opens
    assert set(last) == {"execution_id", "container_id", "timestamp", "status", "progress"}
    assert set(last["progress"]) == {
        "total_urls",
        "crawled_urls",
        "successful_urls",
        "failed_urls",
        "current_url",
        "current_stage",
        "data_items",
        "percentage",
        "runtime_seconds",
        "start_time",
        "error_count",
    }
    assert last["progress"]["current_stage"] == "已完成 (10/10)"
    assert abs(last["timestamp"] - time.time()) < 60
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", last["progress"]["start_time"])
    for received in heartbeat_server.received:
        assert received.path == "/api/v1/monitoring/heartbeat"
        assert received.headers["Content-Type"] == "application/json"
        assert len(received.raw) < 4096


def test_two_crawlers_in_one_process_report_separately(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    ids = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]
    common = {
        "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
        "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
        **FAST,
    }
    result = run_crawls(
        [
            {
                "spider": "tests.spiders.PagesSpider",
                "settings": {"HEARTBEAT_EXECUTION_ID": ids[0]},
                "args": {"site": pages_site.url, "pages": "7"},
            },
            {
                "spider": "tests.spiders.PagesSpider",
                "settings": {"HEARTBEAT_EXECUTION_ID": ids[1]},
                "args": {"site": pages_site.url, "pages": "13"},
            },
        ],
        settings=common,
    )
    assert result.returncode == 0, result.log[-2000:]
    for execution_id, pages in zip(ids, (7, 13), strict=True):
        stream = [b for b in heartbeat_server.bodies() if b["execution_id"] == execution_id]
        assert stream[-1]["status"] == "completed"
        final = stream[-1]["progress"]
        assert final["total_urls"] == final["crawled_urls"] == final["data_items"] == pages


def test_paused_engine_reports_paused(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = run_crawl(
        "tests.spiders.PausingSpider",
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            **FAST,
        },
        args={"site": pages_site.url, "pages": "3"},
    )
    assert result.returncode == 0, result.log[-2000:]
    statuses = [b["status"] for b in heartbeat_server.bodies()]
    assert "paused" in statuses
    assert statuses[-1] == "completed"
    paused = [b for b in heartbeat_server.bodies() if b["status"] == "paused"]
    assert paused[0]["progress"]["current_stage"].startswith("已暂停")


def test_periodic_beats_start_no_thread(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    """A periodic beat's deadline is a timer of the event loop, not a
    ``threading.Timer`` per request: on a CPU the crawl shares, every thread
    start is a hand-off of the GIL. The final beat keeps its own watchdog."""
    result = run_crawl(
        "tests.spiders.SlowPagesSpider",
        {
            "EXTENSIONS": {
                "scrapy_heartbeat.HeartbeatExtension": 500,
                "tests.spiders.ThreadStarts": 0,
            },
            "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            **FAST,
        },
        args={"site": pages_site.url, "pages": "30"},  # ~3 s
    )
    assert result.stats["heartbeat/ok"] >= 10, result.log[-2000:]
    # the final beat's watchdog, and the supersede timer if a beat was in flight
    assert result.stats["test/timers_started"] <= 2, result.stats
    assert result.stats["test/threads_started"] < result.stats["heartbeat/ok"]
