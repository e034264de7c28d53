"""The payload contract of ``POST /api/v1/monitoring/heartbeat``.

Pure functions that turn counters into the JSON body the platform's spec
describes, and keep it small whatever the spider does.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Final, Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

Status = Literal["running", "paused", "completed", "failed"]
STATUSES: Final = ("running", "paused", "completed", "failed")

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
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
    """True for the canonical 8-4-4-4-12 hex form the platform expects."""
    return isinstance(value, str) and bool(_UUID_RE.match(value))


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
_STRING_FIELDS = ("current_url", "current_stage", "start_time")
MAX_CONTAINER_ID = 255


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def validate_body(body: object) -> str | None:
    """Check a request body against the spec; the reason (naming the field)
    or None when valid. The receiver answers 400 with this message."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for name in ("execution_id", "container_id", "timestamp"):
        if name not in body:
            return f"missing required field '{name}'"
    if not isinstance(body["execution_id"], str) or not is_uuid(body["execution_id"]):
        return "Invalid execution_id format"
    container = body["container_id"]
    if not isinstance(container, str) or not container or len(container) > MAX_CONTAINER_ID:
        return f"field 'container_id' must be a string of 1 to {MAX_CONTAINER_ID} characters"
    if not _is_int(body["timestamp"]) or body["timestamp"] < 0:
        return "field 'timestamp' must be a non-negative integer (unix seconds)"
    status = body.get("status")
    if status is not None and status not in STATUSES:
        return f"field 'status' must be one of {', '.join(STATUSES)}"
    progress = body.get("progress")
    if progress is None:
        return None
    if not isinstance(progress, dict):
        return "field 'progress' must be an object"
    for name in COUNTER_FIELDS:
        if name in progress and (not _is_int(progress[name]) or progress[name] < 0):
            return f"field 'progress.{name}' must be a non-negative integer"
    for name in _STRING_FIELDS:
        if name in progress and not isinstance(progress[name], str):
            return f"field 'progress.{name}' must be a string"
    if "percentage" in progress and (
        not _is_number(progress["percentage"]) or not 0 <= progress["percentage"] <= 100
    ):
        return "field 'progress.percentage' must be a number from 0 to 100"
    if "runtime_seconds" in progress and (
        not _is_number(progress["runtime_seconds"]) or progress["runtime_seconds"] < 0
    ):
        return "field 'progress.runtime_seconds' must be a non-negative number"
    return None
