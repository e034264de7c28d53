"""The final status the platform sees, for each way a crawl can end."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import EXECUTION_ID
from tests.crawl import run_crawl
from tests.servers import HeartbeatServer, SiteServer


def crawl(spider: str, site: SiteServer, server: HeartbeatServer, pages: int = 20, **settings: Any):  # type: ignore[no-untyped-def]
    return run_crawl(
        spider,
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            "CONCURRENT_REQUESTS": 1,
            **settings,
        },
        args={"site": site.url, "pages": str(pages)},
    )


@pytest.mark.parametrize(
    ("settings", "reason", "status"),
    [
        ({}, "finished", "completed"),
        ({"CLOSESPIDER_ITEMCOUNT": 3}, "closespider_itemcount", "completed"),
        ({"CLOSESPIDER_PAGECOUNT": 3}, "closespider_pagecount", "completed"),
        (
            {"HEARTBEAT_COMPLETED_REASONS": ["closespider_pagecount"], "CLOSESPIDER_PAGECOUNT": 3},
            "closespider_pagecount",
            "completed",
        ),
        (
            {"HEARTBEAT_COMPLETED_REASONS": ["only_this"], "CLOSESPIDER_PAGECOUNT": 3},
            "closespider_pagecount",
            "failed",
        ),
    ],
)
def test_finish_reason_maps_to_status(
    settings: dict[str, Any],
    reason: str,
    status: str,
    pages_site: SiteServer,
    heartbeat_server: HeartbeatServer,
) -> None:
    result = crawl("tests.spiders.PagesSpider", pages_site, heartbeat_server, **settings)
    assert result.reason == reason
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == status
    assert result.stats["heartbeat/final_status"] == status
    assert final["progress"]["data_items"] == len(result.items)


def test_error_count_close_is_failed(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl(
        "tests.spiders.RaisingSpider", pages_site, heartbeat_server, CLOSESPIDER_ERRORCOUNT=2
    )
    assert result.reason == "closespider_errorcount"
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "failed"
    assert final["progress"]["error_count"] >= 2
    assert final["progress"]["current_stage"].startswith("失败")


def test_exception_in_start_is_failed(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl("tests.spiders.BrokenStartSpider", pages_site, heartbeat_server, pages=2)
    assert result.returncode == 0
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "failed"
    assert final["progress"]["crawled_urls"] == 2
    assert final["progress"]["error_count"] == 1


def test_debug_logs_payloads_without_secrets(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = crawl(
        "tests.spiders.PagesSpider",
        pages_site,
        heartbeat_server,
        pages=3,
        HEARTBEAT_DEBUG=True,
        HEARTBEAT_HEADERS={"Authorization": "Bearer t0p-s3cret"},
        HEARTBEAT_API_BASE_URL=heartbeat_server.url.replace("http://", "http://user:pa55w0rd@"),
    )
    assert "Heartbeat payload (completed)" in result.log
    assert "t0p-s3cret" not in result.log
    assert "pa55w0rd" not in result.log
    # the explicit Authorization header wins over credentials in the URL, said once
    assert heartbeat_server.received[-1].headers["Authorization"] == "Bearer t0p-s3cret"
    assert result.log.count("the URL's credentials are not sent") == 1


def test_spider_stage_label(pages_site: SiteServer, heartbeat_server: HeartbeatServer) -> None:
    crawl(
        "tests.spiders.StageSpider",
        pages_site,
        heartbeat_server,
        pages=2,
        HEARTBEAT_STAGE_FORMAT="{stage}: {percentage}%",
    )
    assert heartbeat_server.bodies()[-1]["progress"]["current_stage"] == "解析详情页: 100.0%"
