"""The counters a crawl reports, defined once.

The tracker counts them, the Redis exchange adds them up across workers, the
``JOBDIR`` state saves them and the payload renders them, each through
:class:`Counts` and :data:`COUNTER_NAMES`; :data:`WIRE_NAMES` maps each one to
its field of the platform's ``progress`` object.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

#: The largest counter a receiver stores (a 64-bit signed integer).
MAX_COUNT: Final = 2**63 - 1
#: The longest ``start_time`` kept: an ISO 8601 time with its offset.
MAX_TIME_LENGTH: Final = 40


@dataclass(frozen=True)
class Counts:
    total: int = 0
    successful: int = 0
    failed: int = 0
    items: int = 0
    errors: int = 0

    @property
    def crawled(self) -> int:
        return self.successful + self.failed


#: The counters' names, in the order of :class:`Counts`' fields.
COUNTER_NAMES: Final = tuple(f.name for f in fields(Counts))

#: Each counter's field in the payload's ``progress`` object.
WIRE_NAMES: Final = {
    "total": "total_urls",
    "successful": "successful_urls",
    "failed": "failed_urls",
    "items": "data_items",
    "errors": "error_count",
}
