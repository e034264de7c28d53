"""Heartbeat bodies for the receiver's tests."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import EXECUTION_ID


def beat(**overrides: Any) -> dict[str, Any]:
    """The spec's example beat, sent now; ``field=...`` leaves a field out."""
    body: dict[str, Any] = {
        "execution_id": EXECUTION_ID,
        "container_id": "crawler-container-abc123",
        "status": "running",
        "progress": {
            "total_urls": 100,
            "crawled_urls": 45,
            "successful_urls": 42,
            "failed_urls": 3,
            "current_url": "https://example.com/page45",
            "current_stage": "爬取中 (45/100)",
            "data_items": 1250,
            "percentage": 45.0,
            "runtime_seconds": 1800,
            "start_time": "2024-01-01T10:00:00",
            "error_count": 0,
        },
        "timestamp": int(time.time()),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def worker_beat(
    execution_id: str, status: str = "running", crawled: int = 1, **kw: Any
) -> dict[str, Any]:
    """A small beat of one worker of ``execution_id``, sent now."""
    return {
        "execution_id": execution_id,
        "container_id": kw.pop("container_id", "worker-1"),
        "timestamp": int(time.time()),
        "status": status,
        "progress": {"total_urls": 100, "crawled_urls": crawled, "data_items": 2 * crawled},
        **kw,
    }
