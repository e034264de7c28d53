"""Shutdown paths, bad input and secrets: each as a real crawl process."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXECUTION_ID
from tests.crawl import CrawlResult, RunningCrawl, run_crawl
from tests.servers import HeartbeatServer, SiteServer

ENABLED = {
    "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
    "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
    "HEARTBEAT_INTERVAL": 0.2,
    "HEARTBEAT_MIN_INTERVAL": 0.1,
}


def crawl(
    spider: str, site: SiteServer, server: HeartbeatServer, pages: int = 5, **settings: Any
) -> CrawlResult:
    return run_crawl(
        spider,
        {**ENABLED, "HEARTBEAT_API_BASE_URL": server.url, **settings},
        args={"site": site.url, "pages": str(pages)},
    )


# -- shutdown paths ------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_crawl_sends_failed_with_the_counts_then(
    signum: int, pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    running = RunningCrawl(
        [
            {
                "spider": "tests.spiders.SlowPagesSpider",
                "settings": {**ENABLED, "HEARTBEAT_API_BASE_URL": heartbeat_server.url},
                "args": {"site": pages_site.url, "pages": "500"},
            }
        ],
        settings={"HEARTBEAT_API_BASE_URL": heartbeat_server.url},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        bodies = heartbeat_server.bodies()
        if bodies and bodies[-1]["progress"]["crawled_urls"] >= 5:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the crawl never got going")
    running.process.send_signal(signum)
    result = running.finish(timeout=60)

    assert result.reason == "shutdown"
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "failed"
    progress = final["progress"]
    # the counts at that moment: what the crawl really did before it stopped
    assert progress["data_items"] == result.stats["item_scraped_count"] == len(result.items)
    assert progress["crawled_urls"] == result.stats["response_received_count"]
    assert 5 <= progress["crawled_urls"] < 500
    assert progress["total_urls"] > progress["crawled_urls"]
    assert result.stats["heartbeat/final_delivered"] is True


def test_closespider_timeout_is_completed(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl(
        "tests.spiders.SlowPagesSpider",
        pages_site,
        heartbeat_server,
        pages=500,
        CLOSESPIDER_TIMEOUT=1,
    )
    assert result.reason == "closespider_timeout"
    assert heartbeat_server.bodies()[-1]["status"] == "completed"


# -- bad input -------------------------------------------------------------------

NON_FATAL = {
    "HEARTBEAT_INTERVAL": "often",
    "HEARTBEAT_TIMEOUT": -1,
    "HEARTBEAT_CLOSE_TIMEOUT": "never",
    "HEARTBEAT_RETRY_TIMES": 2.5,
    "HEARTBEAT_RETRY_DELAY": -5,
    "HEARTBEAT_DEBUG": "maybe",
    "HEARTBEAT_STRIP_QUERY": "perhaps",
    "HEARTBEAT_STAGE_FORMAT": "{nope}",
    "HEARTBEAT_STAGE_LABELS": ["running"],
    "HEARTBEAT_COMPLETED_REASONS": 7,
    "HEARTBEAT_MIN_INTERVAL": "x",
}


def test_every_unusable_value_gets_one_line_and_reporting_goes_on(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl("tests.spiders.PagesSpider", pages_site, heartbeat_server, **NON_FATAL)
    assert result.returncode == 0
    assert len(result.items) == 5
    errors = [line for line in result.log.splitlines() if " ERROR: " in line]
    for name, value in NON_FATAL.items():
        naming = [line for line in errors if f"{name}={value!r}" in line]
        assert len(naming) == 1, (name, errors)
        assert "using the default" in naming[0]
    assert len(errors) == len(NON_FATAL)
    assert heartbeat_server.bodies()[-1]["status"] == "completed"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"HEARTBEAT_API_BASE_URL": "data-platform-api:8000"},
            "HEARTBEAT_API_BASE_URL='data-platform-api:8000' is not an http(s) URL",
        ),
        ({"HEARTBEAT_HEADERS": ["Authorization: x"]}, "HEARTBEAT_HEADERS is a list, not a mapping"),
        (
            {"HEARTBEAT_TLS_VERIFY": "/nonexistent/ca.pem"},
            "HEARTBEAT_TLS_VERIFY='/nonexistent/ca.pem' is not a readable CA bundle",
        ),
        ({"HEARTBEAT_EXECUTION_ID": "job-17"}, "HEARTBEAT_EXECUTION_ID='job-17' is not a UUID"),
    ],
)
def test_unusable_setting_disables_with_one_line_and_the_crawl_runs(
    settings: dict[str, Any],
    expected: str,
    pages_site: SiteServer,
    heartbeat_server: HeartbeatServer,
) -> None:
    result = crawl("tests.spiders.PagesSpider", pages_site, heartbeat_server, **settings)
    assert result.returncode == 0
    assert len(result.items) == 5
    errors = [line for line in result.log.splitlines() if " ERROR: " in line]
    assert len(errors) == 1, errors
    assert expected in errors[0]
    assert heartbeat_server.bodies() == []


def test_bogus_spider_attribute_gets_one_line(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl("tests.spiders.BogusStageSpider", pages_site, heartbeat_server)
    errors = [line for line in result.log.splitlines() if " ERROR: " in line]
    assert len(errors) == 1
    assert "spider attribute heartbeat_stage=42 is not a non-empty string" in errors[0]
    assert heartbeat_server.bodies()[-1]["progress"]["current_stage"] == "已完成 (5/5)"


# -- secrets and data ------------------------------------------------------------


def test_secrets_never_reach_any_log_line_nor_payload(
    pages_site: SiteServer, tmp_path: Path
) -> None:
    server = HeartbeatServer(behaviour="http:500")  # failures log the most
    try:
        result = run_crawl(
            "tests.spiders.SecretSpider",
            {
                **ENABLED,
                "LOG_LEVEL": "DEBUG",
                "HEARTBEAT_DEBUG": True,
                "HEARTBEAT_STRIP_QUERY": True,
                "HEARTBEAT_HEADERS": {"X-Api-Key": "h-s3cret-header"},
                "HEARTBEAT_API_BASE_URL": server.url.replace("http://", "http://apiuser:api-pa55@"),
                "HEARTBEAT_CLOSE_TIMEOUT": 1,
                "HEARTBEAT_RETRY_DELAY": 0.1,
                "RETRY_ENABLED": False,
            },
            args={"site": pages_site.url},
        )
    finally:
        server.stop()
    # Scrapy 2.19's Twisted download handler refuses URLs with userinfo
    # ("invalid hostname"), the reactorless one fetches them: either way the
    # URL was crawled once
    assert server.received[-1].body["progress"]["crawled_urls"] == 1
    ours = [
        line
        for line in result.log.splitlines()
        if "[scrapy_heartbeat" in line or "[urllib3" in line
    ]
    assert any("Heartbeat payload" in line for line in ours), "debug payload logging was off"
    # header values and API credentials travel only through our code: no line at all
    for secret in ("h-s3cret-header", "api-pa55"):
        assert secret not in result.log
    # crawled URLs' credentials and query tokens: Scrapy logs its own requests,
    # so we check every line of ours, and every payload
    for secret in ("crawl-pa55", "crawluser", "q-s3cret"):
        assert not [line for line in ours if secret in line]
        for received in server.received:
            assert secret.encode() not in received.raw
    assert server.received[-1].body["progress"]["current_url"] == f"{pages_site.url}/page/1"
    assert server.received[0].headers["X-Api-Key"] == "h-s3cret-header"


def test_payload_stays_under_4_kib(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = run_crawl(
        "tests.spiders.LongUrlSpider",
        {**ENABLED, "HEARTBEAT_API_BASE_URL": heartbeat_server.url, "URLLENGTH_LIMIT": 100_000},
        args={"site": pages_site.url},
    )
    assert result.returncode == 0
    sizes = [len(r.raw) for r in heartbeat_server.received]
    assert max(sizes) < 4096, sizes
    final = heartbeat_server.bodies()[-1]["progress"]
    assert len(final["current_url"]) == 2048
    assert final["current_url"].startswith(f"{pages_site.url}/page/")
    assert len(final["current_stage"]) == 200
