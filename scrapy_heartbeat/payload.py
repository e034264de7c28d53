"""The payload contract of ``POST /api/v1/monitoring/heartbeat``, shared by
both sides: the path, the statuses and fields, and pure functions that turn
counters into the JSON body the platform's spec describes, and keep it small
whatever the spider does. The receiver's checks of a body it is sent are
:mod:`scrapy_heartbeat.server.validation`.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final, Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

#: Where a heartbeat is POSTed, under the platform's base URL.
HEARTBEAT_PATH: Final = "/api/v1/monitoring/heartbeat"

Status = Literal["running", "paused", "completed", "failed"]
STATUSES: Final = ("running", "paused", "completed", "failed")

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

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


def is_uuid(value: object) -> bool:
    """True for the 8-4-4-4-12 hex form the platform expects (either case;
    nothing before or after it, not even a newline)."""
    return isinstance(value, str) and bool(_UUID_RE.fullmatch(value))


def canonical_uuid(value: object) -> str | None:
    """The lower-case form of an 8-4-4-4-12 id, or None: one execution is
    one id, however its sender spelled the hex digits."""
    return value.lower() if isinstance(value, str) and is_uuid(value) else None


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


#: The progress counters: non-negative integers.
COUNTER_FIELDS = (
    "total_urls",
    "crawled_urls",
    "successful_urls",
    "failed_urls",
    "data_items",
    "error_count",
)
#: The longest ``container_id`` a receiver takes.
MAX_CONTAINER_ID: Final = 255
