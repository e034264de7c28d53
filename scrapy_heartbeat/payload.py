"""The payload contract of ``POST /api/v1/monitoring/heartbeat``.

Pure functions that turn counters into the JSON body the platform's spec
describes, and keep it small whatever the spider does.
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

Status = Literal["running", "paused", "completed", "failed"]
STATUSES: Final = ("running", "paused", "completed", "failed")

MAX_URL_LENGTH: Final = 2048
MAX_STAGE_LENGTH: Final = 200


class Progress(TypedDict, total=False):
    total_urls: int
    crawled_urls: int
    successful_urls: int
    failed_urls: int
    current_url: str
    current_stage: str
    data_items: int
    percentage: float
    runtime_seconds: float
    start_time: str
    error_count: int


def percentage(crawled: int, total: int) -> float:
    """``round(crawled / total * 100, 2)``, 0 when total is 0, never above 100."""
    if total <= 0:
        return 0.0
    return min(round(crawled / total * 100, 2), 100.0)


def clean_url(url: str | None, *, strip_query: bool = False) -> str:
    """The URL as safe to report: no ``user:password@``, optionally no query,
    no fragment, at most :data:`MAX_URL_LENGTH` characters."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url[:MAX_URL_LENGTH] if "@" not in url else ""
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "" if strip_query else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))[:MAX_URL_LENGTH]


def stage_text(fmt: str, **fields: Any) -> str:
    """Render the stage format, bounded in length; the format was validated."""
    try:
        text = fmt.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        text = f"{fields.get('stage', '')} ({fields.get('crawled')}/{fields.get('total')})"
    return text[:MAX_STAGE_LENGTH]


def heartbeat_body(
    execution_id: str,
    container_id: str,
    status: Status | str | None = None,
    progress: Progress | dict[str, Any] | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """The request body; ``timestamp`` defaults to now (client clock, seconds)."""
    body: dict[str, Any] = {
        "execution_id": execution_id,
        "container_id": container_id,
        "timestamp": int(time.time()) if timestamp is None else int(timestamp),
    }
    if status is not None:
        body["status"] = status
    if progress is not None:
        body["progress"] = dict(progress)
    return body
