"""Bounded reads of executions for the read API, the dashboard and
``/metrics``: one page at a time, newest first (:func:`page`), counts by
state (:func:`summary`), and the unfinished executions up to a cap
(:func:`unfinished`).

A page continues after a keyset cursor on ``(last_seen, execution_id)``,
which stays right while beats move executions: an execution that beats
again jumps to the first page rather than shifting every later one. Client
statuses filter in SQL. The receiver's own conclusions (late, lost,
stalled, stale) depend on the interval observed and the time of the read,
so they are decided at the read, by the database on at most
:data:`SCAN_BUDGET` rows per page, then here on the few that match: a
filter that matches little answers a short (even empty) page with a cursor
to go on from, never a scan of the whole fleet.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import dataclass
from typing import Any

from scrapy_heartbeat.payload import canonical_uuid
from scrapy_heartbeat.server import schema
from scrapy_heartbeat.server.liveness import CONCLUDED, STALE
from scrapy_heartbeat.server.schema import ExecutionRow
from scrapy_heartbeat.server.store import HeartbeatStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Unfinished executions ``/metrics`` exports one by one at most
#: (``serve --metrics-max-executions``).
MAX_EXPORTED = 1000
#: Rows decided at most for one page of a liveness filter.
SCAN_BUDGET = 5000
#: ``?status=`` values decided from liveness, not stored.
DECIDED = (*CONCLUDED, "stale")
_FINISHED_SQL = " AND e.status NOT IN ('completed', 'failed')"
#: Before every cursor: larger than any time stored.
_START = (math.inf, "")

Cursor = tuple[float, str]


@dataclass(frozen=True)
class Page:
    executions: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(row: ExecutionRow) -> str:
    return _encode_key(row.last_seen, row.execution_id)


def _encode_key(last_seen: float, execution_id: str) -> str:
    raw = f"{float(last_seen)!r} {execution_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """A cursor :func:`encode_cursor` made; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(text) from None
    seen, _, execution_id = raw.partition(" ")
    last_seen = float(seen)  # ValueError for what is not a number
    if not math.isfinite(last_seen) or canonical_uuid(execution_id) != execution_id:
        raise ValueError(text)
    return last_seen, execution_id


def page(
    store: HeartbeatStore,
    status: str | None = None,
    limit: int = DEFAULT_LIMIT,
    after: Cursor | None = None,
    *,
    now: float | None = None,
    budget: int = SCAN_BUDGET,
) -> Page:
    """Up to ``limit`` executions newest first, after the cursor ``after``;
    ``status`` as the read API's ``?status=``; at most ``budget`` rows
    decided for a liveness filter."""
    moment = time.time() if now is None else now
    if status in DECIDED:
        return _decided(store, status, (limit, budget), after or _START, moment)
    where, args = _stored_filter(status)
    rows = _rows(store, where, args, after or _START, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        [store.described(row, moment) for row in rows],
        encode_cursor(rows[-1]) if more else None,
    )


def _stored_filter(status: str | None) -> tuple[str, tuple[Any, ...]]:
    if status == "active":
        return _FINISHED_SQL, ()
    if status is not None:
        return " AND e.status = ?", (status,)
    return "", ()


def _rows(
    store: HeartbeatStore, where: str, args: tuple[Any, ...], after: Cursor, limit: int
) -> list[ExecutionRow]:
    query = schema.SELECT_PAGE.format(where=where)
    found = store.read(query, (after[0], after[1], *args, limit))
    return [ExecutionRow._make(row) for row in found]


def _decided(
    store: HeartbeatStore, status: str, bounds: tuple[int, int], after: Cursor, moment: float
) -> Page:
    """A page of a liveness filter: of the ``budget`` rows after the
    cursor, the database decides each and returns the keys of those that
    match; they are then read whole and decided again here (a beat may
    have come between), the rules' last word."""
    limit, budget = bounds
    where, args = _necessary(store, status, moment)
    inputs, rules = store.deciding_args(moment)
    wanted = STALE if status == "stale" else (status,)
    query = schema.select_decided_page(store.rules.lost_after is not None, where, wanted)
    keys = store.read(query, (*inputs, *after, *args, budget, *rules, limit))
    found = _described_matches(store, [key[1] for key in keys], status, moment)
    if len(keys) == limit:
        return Page(found, _encode_key(*keys[-1]))
    end = store.read(schema.PAGE_WINDOW_END.format(where=where), (*after, *args, budget - 1))
    return Page(found, _encode_key(*end[0]) if end else None)


def _described_matches(
    store: HeartbeatStore, ids: list[str], status: str, moment: float
) -> list[dict[str, Any]]:
    """The executions ``ids`` as the read API shows them, in that order,
    those that still match ``status``."""
    by_id = {row.execution_id: row for row in store.rows_of(ids)}
    kept = [by_id[i] for i in ids if i in by_id]
    return [
        store.described(row, moment)
        for row in kept
        if _matches(store.liveness_of(row, moment), status)
    ]


def _necessary(store: HeartbeatStore, status: str, moment: float) -> tuple[str, tuple[Any, ...]]:
    """What SQL can tell of a liveness filter: only running executions are
    late, lost or stalled; none is lost before the shortest threshold, nor
    stalled before ``stall_after``."""
    where = " AND e.status = 'running'"
    args: tuple[Any, ...] = ()
    if status == "lost":
        where += " AND e.last_seen < ?"
        args = (moment - store.rules.lost_threshold(0.0),)
    elif status == "stalled":
        where += " AND COALESCE(e.moved_at, e.first_seen) < ?"
        args = (moment - store.rules.stall_after,)
    return where, args


def _matches(liveness: str, status: str) -> bool:
    if status == "stale":
        return liveness in STALE
    return liveness == status


def count_by_state(store: HeartbeatStore) -> dict[tuple[str, str], int]:
    """Executions counted by client status and liveness as last settled
    (every ``--check-every`` seconds): one aggregate, whatever the fleet."""
    return {(s, liveness): int(n) for s, liveness, n in store.read(schema.COUNT_BY_STATE)}


def summary(store: HeartbeatStore) -> dict[str, Any]:
    """:func:`count_by_state` as the read API shows it."""
    by_status: dict[str, int] = {}
    by_liveness: dict[str, int] = {}
    for (status, liveness), count in count_by_state(store).items():
        by_status[status] = by_status.get(status, 0) + count
        by_liveness[liveness] = by_liveness.get(liveness, 0) + count
    total = sum(by_status.values())
    finished = sum(by_status.get(s, 0) for s in ("completed", "failed"))
    stale = sum(by_liveness.get(s, 0) for s in STALE)
    return {
        "total": total,
        "active": total - finished,
        "stale": stale,
        "by_status": by_status,
        "by_liveness": by_liveness,
    }


def unfinished(
    store: HeartbeatStore, since: float, cap: int, now: float | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The newest unfinished executions that beat since ``since``, at most
    ``cap``; and how many more there are."""
    rows = _rows(store, _FINISHED_SQL + " AND e.last_seen >= ?", (since,), _START, cap)
    left_out = 0
    if len(rows) == cap:
        [(count,)] = store.read(schema.COUNT_UNFINISHED_SINCE, (since,))
        left_out = max(0, int(count) - cap)
    moment = time.time() if now is None else now
    return [store.described(row, moment) for row in rows], left_out
