from __future__ import annotations

import json

import pytest

from scrapy_heartbeat.payload import (
    MAX_STAGE_LENGTH,
    MAX_URL_LENGTH,
    clean_url,
    heartbeat_body,
    percentage,
    stage_text,
)


@pytest.mark.parametrize(
    ("crawled", "total", "expected"),
    [(0, 0, 0.0), (5, 0, 0.0), (45, 100, 45.0), (1, 3, 33.33), (2, 3, 66.67), (3, 3, 100.0)],
)
def test_percentage_follows_the_spec(crawled: int, total: int, expected: float) -> None:
    assert percentage(crawled, total) == expected


def test_percentage_never_exceeds_100() -> None:
    assert percentage(7, 5) == 100.0


def test_clean_url_strips_userinfo_and_fragment() -> None:
    assert clean_url("https://bob:pa55@example.com/p?q=1#frag") == "https://example.com/p?q=1"
    assert clean_url("https://example.com/p?token=abc", strip_query=True) == "https://example.com/p"
    assert clean_url(None) == ""


def test_clean_url_is_bounded() -> None:
    assert len(clean_url("https://example.com/" + "x" * 10_000)) == MAX_URL_LENGTH


def test_stage_text_is_bounded() -> None:
    text = stage_text("{stage} ({crawled}/{total})", stage="s" * 1000, crawled=1, total=2)
    assert len(text) == MAX_STAGE_LENGTH
    assert (
        stage_text("{stage} ({crawled}/{total})", stage="爬取中", crawled=45, total=100)
        == "爬取中 (45/100)"
    )


def test_body_matches_the_spec_example() -> None:
    body = heartbeat_body(
        "550e8400-e29b-41d4-a716-446655440000",
        "crawler-container-abc123",
        "running",
        {"total_urls": 100, "crawled_urls": 45},
        timestamp=1640995200,
    )
    assert body == {
        "execution_id": "550e8400-e29b-41d4-a716-446655440000",
        "container_id": "crawler-container-abc123",
        "status": "running",
        "progress": {"total_urls": 100, "crawled_urls": 45},
        "timestamp": 1640995200,
    }
    json.dumps(body)


def test_status_and_progress_are_optional() -> None:
    assert set(heartbeat_body("id", "c")) == {"execution_id", "container_id", "timestamp"}
