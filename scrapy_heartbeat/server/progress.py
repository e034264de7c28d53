"""What the receiver keeps of a valid beat's ``progress``: the spec's
fields, each bounded, and nothing else (:func:`kept_progress`); and the
time its ``start_time`` names (:func:`start_of`).

A beat is validated first (:mod:`.validation`): a spec field of the wrong
type is a 400, as the spec asks. What is left is accepted and trimmed,
never refused: a field the spec does not name is dropped (a newer or a
foreign client must not have its beats fail), and a string is cut to its
bound. Each beat is stored and kept for ``--keep-days``: without bounds,
every beat could keep a whole ``--max-body`` of JSON for weeks.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Final, NamedTuple

from scrapy_heartbeat.payload import COUNTER_FIELDS

#: The longest each string field is stored, in bytes of its JSON text
#: (UTF-8, as stored and as the read API answers it).
MAX_STRING_BYTES: Final = {"current_url": 2048, "current_stage": 1024, "start_time": 64}
#: The spec's progress fields; any other is dropped.
SPEC_FIELDS: Final = frozenset(
    (*COUNTER_FIELDS, *MAX_STRING_BYTES, "percentage", "runtime_seconds")
)
#: The most one stored ``progress`` can take, as JSON: the strings at their
#: bounds, every key, 64-bit integers and the longest float text.
MAX_PROGRESS_BYTES: Final = 4096


class Trimmed(NamedTuple):
    """What was not kept of a beat's progress."""

    dropped: int  # fields the spec does not name
    truncated: tuple[str, ...]  # string fields cut to their bound


def kept_progress(progress: dict[str, Any]) -> tuple[dict[str, Any], Trimmed]:
    """The spec's fields of a validated ``progress``, each string cut to
    :data:`MAX_STRING_BYTES`, and what was left out."""
    kept = {name: value for name, value in progress.items() if name in SPEC_FIELDS}
    truncated = []
    for name, limit in MAX_STRING_BYTES.items():
        if name in kept:
            cut = _cut(kept[name], limit)
            if cut != kept[name]:
                kept[name] = cut
                truncated.append(name)
    return kept, Trimmed(len(progress) - len(kept), tuple(truncated))


def _stored_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def _cut(text: str, limit: int) -> str:
    """The longest-ish prefix of ``text`` stored in at most ``limit`` bytes.
    A character takes 1 to 6 bytes (``\\u0000``), so each step removes a
    sixth of the excess in characters at least: never past the bound."""
    if len(text) <= limit // 6 or _stored_size(text) <= limit:
        return text
    text = text[:limit]
    while (excess := _stored_size(text) - limit) > 0:
        text = text[: len(text) - max(1, excess // 6)]
    return text


#: The ISO 8601 times taken as a ``start_time``: a date, then perhaps a time
#: to the minute, second, millisecond or microsecond, and an offset or ``Z``.
#: Every Python the receiver runs on reads them alike, and so do browsers.
_ISO_TIME: Final = re.compile(
    r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{3}(?:\d{3})?)?)?(?:Z|[+-]\d\d:\d\d)?)?",
    re.ASCII,
)


def start_of(progress: object) -> tuple[str, float] | None:
    """A beat's ``start_time``, and the time it names in seconds since the
    epoch, so that the earliest any beat sent can be kept; None for a beat
    without one, or one that is not an ISO 8601 time (:data:`_ISO_TIME`).
    A time without an offset is taken as UTC."""
    text = progress.get("start_time") if isinstance(progress, dict) else None
    if not isinstance(text, str) or not _ISO_TIME.fullmatch(text):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:  # a month 13, a 25th hour
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return text, when.timestamp()
