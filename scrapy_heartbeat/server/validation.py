"""What the receiver takes as a heartbeat: :func:`parse_body` reads the
bytes and refuses values JSON or a database cannot hold, :func:`validate_body`
checks the result against the spec. Each returns a reason naming the field,
which the receiver answers with a 400.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from scrapy_heartbeat.payload import COUNTER_FIELDS, MAX_CONTAINER_ID, STATUSES, is_uuid

#: The largest integer a receiver stores (SQLite's and PostgreSQL's bigint).
MAX_INTEGER: Final = 2**63 - 1
#: 9999-12-31T23:59:59Z: a later ``timestamp`` is not unix seconds.
MAX_TIMESTAMP: Final = 253402300799
_STRING_FIELDS = ("current_url", "current_stage", "start_time")


class _Unstorable:
    """What the JSON parser returns for a value JSON or a database cannot
    hold; :func:`parse_body` names the field it was found in."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _constant(name: str) -> _Unstorable:
    return _Unstorable(f"is {name}, which is not JSON; send a finite number")


def _float(text: str) -> float | _Unstorable:
    value = float(text)
    return value if math.isfinite(value) else _Unstorable(f"is {text}, too large for a number")


def _int(text: str) -> int | _Unstorable:
    value = int(text)
    if abs(value) > MAX_INTEGER:
        return _Unstorable(f"is an integer larger than {MAX_INTEGER} (2**63 - 1)")
    return value


def parse_body(raw: bytes) -> tuple[Any, str | None]:
    """Parse a request body: the value, or a reason (naming the field) it
    cannot be taken. NaN, Infinity, numbers too large to store and strings
    that are not valid Unicode (a lone surrogate) are refused here; a
    receiver that stored them would answer its readers with invalid JSON."""
    try:
        body = json.loads(raw, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        return None, "body is nested too deeply"
    except ValueError:  # also invalid UTF-8, and integers of over 4300 digits
        return None, "body is not valid JSON"
    try:
        problem = _unstorable(body, "")
    except RecursionError:
        return None, "body is nested too deeply"
    return body, problem


def _unstorable(value: Any, path: str) -> str | None:
    if isinstance(value, _Unstorable):
        return f"field '{path}' {value.reason}"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"field '{path}' is not valid Unicode (a lone surrogate such as \\ud800)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            name = key.encode("utf-8", "backslashreplace").decode("utf-8")[:100]
            inner = f"{path}.{name}" if path else name
            problem = _unstorable(key, inner) or _unstorable(item, inner)
            if problem is not None:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = _unstorable(item, f"{path}[{index}]")
            if problem is not None:
                return problem
    return None


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
    if "\x00" in container:  # PostgreSQL's text cannot hold it; no host name has one
        return "field 'container_id' must not contain a NUL character (\\u0000)"
    if not _is_int(body["timestamp"]) or not 0 <= body["timestamp"] <= MAX_TIMESTAMP:
        return f"field 'timestamp' must be an integer of unix seconds, 0 to {MAX_TIMESTAMP}"
    status = body.get("status")
    if status is not None and status not in STATUSES:
        return f"field 'status' must be one of {', '.join(STATUSES)}"
    progress = body.get("progress")
    if progress is None:
        return None
    if not isinstance(progress, dict):
        return "field 'progress' must be an object"
    return _progress_problem(progress)


def _progress_problem(progress: dict[str, Any]) -> str | None:
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
