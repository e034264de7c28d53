"""The receiver's tables, their migrations, and every query the stores run,
written once with ``?`` placeholders for SQLite and PostgreSQL alike
(:mod:`.pgstore` translates the dialect), beside the shape of the rows each
query reads.

``alert_outbox`` holds one row per alert and webhook, written in the
transaction that claims the transition, until it is delivered or given up
(see :mod:`.delivery`).

``heartbeats`` keeps every accepted beat; ``executions`` one row per
execution with its latest state, ``containers`` one row per (execution,
container) with that container's. Besides what clients sent, each state row
keeps what :mod:`.liveness` needs: when its counters last moved, the gaps
between its beats (the last three, and their count and sum), and the
liveness last settled; the client's timestamp of the beat its state is
from (``client_ts``), so that a beat that arrives late replaces nothing newer;
and the earliest ``start_time`` its beats sent (as sent, and as seconds since
the epoch in ``started_at``), which a later beat without one does not lose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from scrapy_heartbeat.server.liveness import (
    DEFAULT_INTERVAL,
    LATE_AFTER_INTERVALS,
    LOST_AFTER_AT_LEAST,
    LOST_AFTER_INTERVALS,
)

#: The latest state of a sender, in ``executions`` and ``containers`` alike.
_STATE_COLUMNS = """
    status TEXT NOT NULL,
    progress TEXT,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    beats INTEGER NOT NULL,
    progress_key TEXT,
    moved_at REAL,
    gaps INTEGER NOT NULL DEFAULT 0,
    gap_seconds REAL NOT NULL DEFAULT 0,
    liveness TEXT,
    liveness_since REAL,
    client_ts REAL,
    gap1 REAL,
    gap2 REAL,
    gap3 REAL,
    clock_offset REAL,
    start_time TEXT,
    started_at REAL,
    settled_beats INTEGER
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS heartbeats (
    id INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    status TEXT,
    client_timestamp INTEGER NOT NULL,
    received_at REAL NOT NULL,
    latency REAL NOT NULL,
    progress TEXT
);
CREATE INDEX IF NOT EXISTS heartbeats_by_execution ON heartbeats (execution_id, id);
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    container_id TEXT NOT NULL,
    latency REAL NOT NULL,{_STATE_COLUMNS}
);
CREATE TABLE IF NOT EXISTS containers (
    execution_id TEXT NOT NULL,
    container_id TEXT NOT NULL,{_STATE_COLUMNS},
    PRIMARY KEY (execution_id, container_id)
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    webhook TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    owner TEXT,
    delivered_at REAL,
    given_up_at REAL
);
CREATE INDEX IF NOT EXISTS alert_outbox_waiting ON alert_outbox (webhook, id)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
"""

#: The tables whose columns grew since 0.1.0, and the columns added, for
#: databases an older receiver created.
MIGRATED_TABLES = ("executions", "containers")
ADDED_COLUMNS = (
    "progress_key TEXT",
    "moved_at REAL",
    "gaps INTEGER NOT NULL DEFAULT 0",
    "gap_seconds REAL NOT NULL DEFAULT 0",
    "liveness TEXT",
    "liveness_since REAL",
    "client_ts REAL",
    "gap1 REAL",
    "gap2 REAL",
    "gap3 REAL",
    "clock_offset REAL",
    "start_time TEXT",
    "started_at REAL",
    "settled_beats INTEGER",
)


#: Whether the beat being upserted is newer than the state it would replace:
#: a beat that arrives late (a retry, another receiver's slower path, a
#: worker's last ``running`` overtaken by the fleet's ending) replaces
#: nothing newer, and reopens a final status only when sent a second or
#: more after it (a resumed job); of two beats sent together, the later to
#: arrive wins.
#: ``client_ts`` is when the beat was sent: for a container, by its own
#: clock; for an execution, by the receiver's (see :data:`UPSERT_EXECUTION`).
_NEWER = """({t}.client_ts IS NULL OR excluded.client_ts >= {t}.client_ts
            + CASE WHEN {t}.status IN ('completed', 'failed')
                AND excluded.status NOT IN ('completed', 'failed') THEN 1 ELSE 0 END)"""


def _if_newer(table: str, column: str, value: str) -> str:
    newer = _NEWER.format(t=table)
    return f"{column} = CASE WHEN {newer} THEN {value} ELSE {table}.{column} END"


def _upsert_state(table: str, extra: Sequence[tuple[str, str]] = (), tail: str = "") -> str:
    """The upsert of one sender's latest state. What the client said is
    taken from a newer beat only; when the receiver heard it (``last_seen``,
    the gaps) and when it started (the earliest ``start_time``) from every
    beat. A gap after a ``paused`` beat is not an interval, and a resume
    restarts the stall clock."""
    moved = f"""CASE
            WHEN {table}.status = 'paused' THEN excluded.last_seen
            WHEN excluded.progress_key IS NOT NULL AND ({table}.progress_key IS NULL
                OR excluded.progress_key <> {table}.progress_key) THEN excluded.last_seen
            ELSE COALESCE({table}.moved_at, {table}.first_seen) END"""
    gap = f"""CASE WHEN excluded.last_seen > {table}.last_seen
            THEN excluded.last_seen - {table}.last_seen ELSE 0 END"""
    counted = f"{table}.status <> 'paused'"
    earlier = f"{table}.started_at IS NULL OR excluded.started_at < {table}.started_at"
    said = ",\n        ".join(
        _if_newer(table, column, value)
        for column, value in [
            ("status", f"COALESCE(?, {table}.status)"),
            ("progress", f"COALESCE(excluded.progress, {table}.progress)"),
            ("progress_key", f"COALESCE(excluded.progress_key, {table}.progress_key)"),
            ("moved_at", moved),
            *extra,
            ("client_ts", "excluded.client_ts"),
        ]
    )
    return f"""
    SET {said},
        last_seen = CASE WHEN excluded.last_seen > {table}.last_seen
            THEN excluded.last_seen ELSE {table}.last_seen END,
        beats = {table}.beats + 1,
        gaps = {table}.gaps + CASE WHEN {counted} THEN 1 ELSE 0 END,
        gap_seconds = {table}.gap_seconds + CASE WHEN {counted} THEN {gap} ELSE 0 END,
        gap1 = CASE WHEN {counted} THEN {gap} ELSE {table}.gap1 END,
        gap2 = CASE WHEN {counted} THEN {table}.gap1 ELSE {table}.gap2 END,
        gap3 = CASE WHEN {counted} THEN {table}.gap2 ELSE {table}.gap3 END,
        start_time = CASE WHEN {earlier} THEN excluded.start_time ELSE {table}.start_time END,
        started_at = CASE WHEN {earlier} THEN excluded.started_at ELSE {table}.started_at END{tail}
    """


INSERT_HEARTBEAT = (
    "INSERT INTO heartbeats (execution_id, container_id, status, "
    "client_timestamp, received_at, latency, progress) VALUES (?, ?, ?, ?, ?, ?, ?)"
)

#: How far a container's clock is behind the receiver's, seconds: the
#: least of its beats' ``received - sent`` (network delay only adds to it),
#: let up by a tenth of a second a beat; a beat later than any delivery is
#: delayed (two minutes) says the clock was set: that is learnt at once.
_NEXT_OFFSET = """CASE WHEN {c}.clock_offset IS NULL OR {lat} < {c}.clock_offset + 0.1
            OR {lat} > {c}.clock_offset + 120 THEN {lat} ELSE {c}.clock_offset + 0.1 END"""
#: The offset a beat is ordered by: the one known before it, never a clock
#: set learnt from the beat itself, which a beat delayed for minutes would
#: otherwise pass for (and reopen a final state). Arguments: its latency, twice.
_ORDER_OFFSET = """CASE WHEN c.clock_offset + 0.1 < ? THEN c.clock_offset + 0.1 ELSE ? END"""

#: Arguments: the inserted values, then ``SET``'s status. An execution's
#: containers need not share a clock: its beats are ordered by when they
#: were sent on the receiver's clock (the client's timestamp plus its
#: container's offset), so the fleet's ending sent by a worker whose clock
#: lags still ends it, and another worker's delayed beat does not reopen it.
#: Beats of different containers sent within a delivery's delay of each
#: other may be taken in the order they arrive.
UPSERT_EXECUTION = (
    "INSERT INTO executions (execution_id, container_id, latency, status, progress, "
    "first_seen, last_seen, beats, progress_key, moved_at, start_time, started_at, client_ts) "
    "VALUES (?, ?, ?, COALESCE(?, 'running'), ?, ?, ?, 1, ?, ?, ?, ?, "
    f"? + COALESCE((SELECT {_ORDER_OFFSET} FROM containers c "
    "WHERE c.execution_id = ? AND c.container_id = ?), ?)) "
    "ON CONFLICT (execution_id) DO UPDATE"
    + _upsert_state(
        "executions",
        [
            ("container_id", "excluded.container_id"),
            ("latency", "excluded.latency"),
        ],
    )
)

#: Arguments: the inserted values, then ``SET``'s status.
UPSERT_CONTAINER = (
    "INSERT INTO containers (execution_id, container_id, status, progress, "
    "first_seen, last_seen, beats, progress_key, moved_at, start_time, started_at, "
    "client_ts, clock_offset) "
    "VALUES (?, ?, COALESCE(?, 'running'), ?, ?, ?, 1, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (execution_id, container_id) DO UPDATE"
    + _upsert_state(
        "containers",
        tail=",\n        clock_offset = "
        + _NEXT_OFFSET.format(c="containers", lat="excluded.clock_offset"),
    )
)

#: A sender's interval: the median of its last three gaps between beats
#: (the larger of two, the one), so that one long silence (the receiver
#: down for an hour) or a changed rhythm moves it for a beat or two at most;
#: the mean of every gap for a row no newer receiver has written yet.
_INTERVAL = """CASE
        WHEN {t}.gap3 IS NOT NULL THEN CASE
            WHEN ({t}.gap1 - {t}.gap2) * ({t}.gap3 - {t}.gap1) >= 0 THEN {t}.gap1
            WHEN ({t}.gap2 - {t}.gap1) * ({t}.gap3 - {t}.gap2) >= 0 THEN {t}.gap2
            ELSE {t}.gap3 END
        WHEN {t}.gap2 IS NOT NULL THEN CASE WHEN {t}.gap1 > {t}.gap2 THEN {t}.gap1 ELSE {t}.gap2 END
        WHEN {t}.gap1 IS NOT NULL THEN {t}.gap1
        WHEN {t}.gaps > 0 THEN {t}.gap_seconds / {t}.gaps END"""

#: An execution's interval is its slowest container's: with many
#: containers the gaps between the execution's own beats say nothing.
_SLOWEST_INTERVAL = f"""(SELECT MAX({_INTERVAL.format(t="c")}) FROM containers c
        WHERE c.execution_id = e.execution_id AND c.gaps > 0)"""

#: Read as :class:`ExecutionRow`; a ``WHERE`` clause may follow.
SELECT_EXECUTIONS = f"""
SELECT e.execution_id, e.container_id, e.status, e.progress, e.first_seen, e.last_seen,
    e.beats, e.latency, COALESCE(e.moved_at, e.first_seen), e.liveness,
    (SELECT COUNT(*) FROM containers c WHERE c.execution_id = e.execution_id),
    {_SLOWEST_INTERVAL}, e.start_time
FROM executions e
"""


class ExecutionRow(NamedTuple):
    execution_id: str
    container_id: str
    status: str
    progress: str | None
    first_seen: float
    last_seen: float
    beats: int
    latency: float
    moved_at: float
    settled_liveness: str | None
    container_count: int
    interval: float | None
    start_time: str | None


#: The id that ends a window of settling: the given number of executions
#: after an id, in id order (none: the rest is the last window).
SETTLE_WINDOW_END = (
    "SELECT execution_id FROM executions WHERE execution_id > ? "
    "ORDER BY execution_id LIMIT 1 OFFSET ?"
)

#: What deciding an execution's liveness in SQL takes of it (as
#: :meth:`.liveness.LivenessRules.decide` does in Python): the silence and
#: stillness counted from when the receiver could hear (arguments: the
#: moment and that time, twice each), and the interval the rules use (the
#: spec's 30 s until one is observed).
_LIVENESS_INPUTS = f"""e.status, e.liveness,
        COALESCE(NULLIF({_SLOWEST_INTERVAL}, 0), {DEFAULT_INTERVAL!r}) AS every,
        ? - CASE WHEN e.last_seen > ? THEN e.last_seen ELSE ? END AS silent,
        ? - CASE WHEN COALESCE(e.moved_at, e.first_seen) > ?
            THEN COALESCE(e.moved_at, e.first_seen) ELSE ? END AS still"""


#: The client statuses that are their own liveness, whatever the silence.
_OWN_LIVENESS = "('completed', 'failed', 'paused')"

#: Executions no round can change the liveness of until they beat again:
#: a status settled as itself (the rules never look past it), and a ``lost``
#: confirmed at its count of beats (silence only grows, and under a grace
#: nothing recovers). Settling skips them: at fleet scale they are most rows.
_SETTLED_FOR_GOOD = f"""COALESCE(
        e.liveness IN {_OWN_LIVENESS} AND e.liveness = e.status
        OR e.liveness = 'lost' AND e.settled_beats = e.beats, FALSE)"""


def confirm_lost(count: int) -> str:
    """Confirms ``count`` executions settled ``lost`` and still silent, each
    at the count of beats it was read with (arguments: the ids, then id and
    count for each): from then on settling skips them, until a beat changes
    the count. Found by the key; SQLite confirms a window's worth in one
    statement, PostgreSQL one execution per statement, so that rows are
    locked in id order."""
    ids = ", ".join(["?"] * count)
    read = " ".join(["WHEN ? THEN ?"] * count)
    return (
        "UPDATE executions SET settled_beats = beats "
        f"WHERE execution_id IN ({ids}) AND liveness = 'lost' "
        f"AND beats = CASE execution_id {read} END"
    )


#: A LIMIT no query reaches: it only keeps a window from being folded in.
_UNREACHED = 2**62


def _decided(lost_after: bool) -> str:
    """The liveness of a row ``w`` of :data:`_LIVENESS_INPUTS`, decided as
    the rules do. Arguments: ``lost_after`` when the rules have one, then
    ``stall_after``. A window that gives the rows has a LIMIT, which keeps
    either database from folding it into the query around it: that would
    compute the interval's subquery once for each use here."""
    late = f"w.silent > {LATE_AFTER_INTERVALS} * w.every"
    lost = "w.silent > ?"  # x > max(a, b) exactly when x > a and x > b
    if not lost_after:
        lost = f"w.silent > {LOST_AFTER_INTERVALS} * w.every AND w.silent > {LOST_AFTER_AT_LEAST!r}"
    return f"""CASE
        WHEN w.status IN {_OWN_LIVENESS} THEN w.status
        WHEN {late} AND {lost} THEN 'lost'
        WHEN {late} THEN 'late'
        WHEN w.still > ? THEN 'stalled'
        ELSE 'running' END"""


def select_unsettled(lost_after: bool, last_window: bool) -> str:
    """What settling needs of each execution of a window of ids (read as
    :class:`LivenessRow`; its interval the one the rules use), for those
    whose liveness decided now is not the one settled, and the ``lost``
    ones not yet confirmed (see :data:`_SETTLED_FOR_GOOD`): the database,
    not Python, looks at the fleet every round. Arguments: those of
    :data:`_LIVENESS_INPUTS`, the id after which the window starts, the
    one it ends at (unless ``last_window``), then those of
    :func:`_decided`. The ids bound the window, not a count: executions
    another writer adds between :data:`SETTLE_WINDOW_END` and this query
    push none out of it."""
    until = "" if last_window else " AND e.execution_id <= ?"
    return f"""
SELECT w.execution_id, w.status, w.last_seen, w.moved, w.liveness, w.every, w.beats
FROM (
    SELECT e.execution_id, e.last_seen, COALESCE(e.moved_at, e.first_seen) AS moved,
        e.beats, {_LIVENESS_INPUTS}
    FROM executions e
    WHERE e.execution_id > ?{until} AND NOT {_SETTLED_FOR_GOOD}
    ORDER BY e.execution_id LIMIT {_UNREACHED}
) w
WHERE w.liveness IS NULL OR w.liveness = 'lost' OR w.liveness <> {_decided(lost_after)}
ORDER BY w.execution_id"""


def select_decided_page(lost_after: bool, where: str, wanted: Sequence[str]) -> str:
    """The keys (``last_seen``, ``execution_id``) of the executions whose
    liveness decided now is one of ``wanted``, among a window of the newest
    after a keyset cursor, at most a given number. Arguments: those of
    :data:`_LIVENESS_INPUTS`, the cursor, those of ``where`` (more
    conditions, ``AND ...``), the window's size, those of :func:`_decided`,
    and how many at most."""
    names = ", ".join(f"'{name}'" for name in wanted)
    return f"""
SELECT w.last_seen, w.execution_id
FROM (
    SELECT e.execution_id, e.last_seen, {_LIVENESS_INPUTS}
    FROM executions e
    WHERE (e.last_seen, e.execution_id) < (?, ?){where}
    ORDER BY e.last_seen DESC, e.execution_id DESC LIMIT ?
) w
WHERE {_decided(lost_after)} IN ({names})
ORDER BY w.last_seen DESC, w.execution_id DESC LIMIT ?"""


#: The key of the row that ends a window of a page: the given number of
#: executions after a keyset cursor (none: fewer are left). ``{where}`` as
#: for :data:`SELECT_PAGE`.
PAGE_WINDOW_END = (
    "SELECT e.last_seen, e.execution_id FROM executions e "
    "WHERE (e.last_seen, e.execution_id) < (?, ?){where} "
    "ORDER BY e.last_seen DESC, e.execution_id DESC LIMIT 1 OFFSET ?"
)


class LivenessRow(NamedTuple):
    execution_id: str
    status: str
    last_seen: float
    moved_at: float
    settled_liveness: str | None
    interval: float | None
    beats: int


#: The conditional update that claims a transition: of receivers settling
#: the same row, one changes it. It keeps the count of beats the liveness
#: was decided at (none if a beat came meanwhile). Arguments: the liveness,
#: the moment, that count, the id, the liveness it replaces.
CLAIM_TRANSITION = (
    "UPDATE executions SET liveness = ?, liveness_since = ?, "
    "settled_beats = CASE WHEN beats = ? THEN beats END "
    "WHERE execution_id = ? AND COALESCE(liveness, '') = ?"
)

#: Read as :class:`ContainerRow`, latest first.
SELECT_CONTAINERS = f"""
SELECT c.container_id, c.status, c.progress, c.first_seen, c.last_seen, c.beats,
    COALESCE(c.moved_at, c.first_seen), {_INTERVAL.format(t="c")}, c.start_time
FROM containers c WHERE c.execution_id = ? ORDER BY c.last_seen DESC LIMIT ?
"""


class ContainerRow(NamedTuple):
    container_id: str
    status: str
    progress: str | None
    first_seen: float
    last_seen: float
    beats: int
    moved_at: float
    interval: float | None
    start_time: str | None


#: Read as :class:`HistoryRow`, latest first, at most a given number.
SELECT_HISTORY = (
    "SELECT container_id, status, client_timestamp, received_at, latency, progress "
    "FROM heartbeats WHERE execution_id = ? ORDER BY id DESC LIMIT ?"
)


class HistoryRow(NamedTuple):
    container_id: str
    status: str | None
    client_timestamp: int
    received_at: float
    latency: float
    progress: str | None


#: Up to a given number of the oldest history rows received before a time.
PRUNE_HISTORY = (
    "DELETE FROM heartbeats WHERE id IN "
    "(SELECT id FROM heartbeats ORDER BY id LIMIT ?) AND received_at < ?"
)

#: Thins the history rows of an id range received before a time to the
#: first of each container's time bucket; a beat with a status other than
#: ``running`` is kept whatever its bucket. Arguments: the range and the
#: time, then the range again and the bucket's seconds.
THIN_HISTORY = """
DELETE FROM heartbeats WHERE id > ? AND id <= ? AND received_at < ?
    AND (status IS NULL OR status = 'running')
    AND id NOT IN (
        SELECT MIN(id) FROM heartbeats WHERE id > ? AND id <= ?
        GROUP BY execution_id, container_id, CAST(received_at / ? AS INTEGER))
"""

#: The first history row after an id, and when it was received.
NEXT_HISTORY_ROW = "SELECT id, received_at FROM heartbeats WHERE id > ? ORDER BY id LIMIT 1"

COUNT_HEARTBEATS = "SELECT COUNT(*) FROM heartbeats"

Statement = tuple[str, tuple[Any, ...]]

#: Indexes that keep the read API's pages and ``/metrics`` bounded: newest
#: first, overall and by status; the counts by state read only an index.
#: Each is ``(name, table, columns)``.
INDEXES = (
    ("executions_by_last_seen", "executions", "last_seen, execution_id"),
    ("executions_by_status", "executions", "status, last_seen, execution_id"),
    ("executions_by_state", "executions", "status, liveness"),
)


def create_index(name: str, table: str, columns: str) -> str:
    return f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})"


#: The newest executions after a keyset cursor (``last_seen``,
#: ``execution_id``), at most a given number; read as :class:`ExecutionRow`.
#: ``{where}`` is more conditions (``AND ...``), or nothing. The cursor is a
#: row value, which both databases search in the index on the same pair:
#: spelt as ``a < ? OR (a = ? AND b < ?)`` beside another condition on
#: ``last_seen``, SQLite read every match, with its subqueries, to sort it.
SELECT_PAGE = (
    SELECT_EXECUTIONS + " WHERE (e.last_seen, e.execution_id) < (?, ?){where}"
    " ORDER BY e.last_seen DESC, e.execution_id DESC LIMIT ?"
)

#: Executions by client status and settled liveness (NULL until the first
#: check after their first beat): ``(status, liveness, count)`` rows.
COUNT_BY_STATE = (
    "SELECT status, COALESCE(liveness, status), COUNT(*) FROM executions GROUP BY status, 2"
)

#: Unfinished executions that beat since a time.
COUNT_UNFINISHED_SINCE = (
    "SELECT COUNT(*) FROM executions WHERE status NOT IN ('completed', 'failed') AND last_seen >= ?"
)


#: One alert for one webhook (its key: a hash of the URL, never the URL,
#: whose credentials stay out of the database). Arguments: the event id,
#: the key, the JSON payload, its creation time, twice.
INSERT_ALERT = (
    "INSERT INTO alert_outbox (event_id, webhook, payload, created_at, next_attempt_at) "
    "VALUES (?, ?, ?, ?, ?)"
)

#: Leases up to a number of a webhook's alerts that are due and not leased
#: (or whose lease ran out: a receiver that stopped or crashed) to one
#: receiver, oldest first; read as :class:`AlertRow`. ``{lock}`` is empty
#: on SQLite (one writer at a time makes the update atomic) and ``FOR
#: UPDATE SKIP LOCKED`` on PostgreSQL, so that receivers claiming together
#: take different rows and wait for none. Arguments: the lease's end, the
#: owner, the key, now, now, the number.
CLAIM_ALERTS = """
UPDATE alert_outbox SET lease_until = ?, owner = ?
WHERE id IN (SELECT id FROM alert_outbox
    WHERE webhook = ? AND delivered_at IS NULL AND given_up_at IS NULL
        AND (lease_until IS NULL OR lease_until < ?) AND next_attempt_at <= ?
    ORDER BY id LIMIT ?{lock})
RETURNING id, payload, created_at, attempts
"""


class AlertRow(NamedTuple):
    id: int
    payload: str
    created_at: float
    attempts: int


#: Delivered whoever holds the lease now: the webhook said 2xx.
#: Arguments: now, the id.
ALERT_DELIVERED = (
    "UPDATE alert_outbox SET delivered_at = ?, lease_until = NULL "
    "WHERE id = ? AND delivered_at IS NULL"
)

#: Another attempt later, by whichever receiver claims it then; only by the
#: lease's holder. Arguments: when, the id, the owner.
ALERT_RETRY = (
    "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_at = ?, "
    "lease_until = NULL, owner = NULL "
    "WHERE id = ? AND owner = ? AND delivered_at IS NULL AND given_up_at IS NULL"
)

#: Given up, by the lease's holder only, so that one receiver logs it.
#: Arguments: now, the id, the owner.
ALERT_GIVEN_UP = (
    "UPDATE alert_outbox SET attempts = attempts + 1, given_up_at = ?, lease_until = NULL "
    "WHERE id = ? AND owner = ? AND delivered_at IS NULL AND given_up_at IS NULL"
)

#: A stopping receiver's leases, handed back so that the next to claim (a
#: restart) need not wait for them to run out. Arguments: the owner.
RELEASE_ALERTS = (
    "UPDATE alert_outbox SET lease_until = NULL, owner = NULL "
    "WHERE owner = ? AND delivered_at IS NULL AND given_up_at IS NULL"
)

#: Up to a number of the oldest alerts delivered or given up before a
#: time, or still waiting since before another: those of a webhook no
#: receiver has any more (none gives them up). Arguments: both times, the
#: number.
PRUNE_ALERTS = (
    "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox "
    "WHERE COALESCE(delivered_at, given_up_at) < ? "
    "OR (delivered_at IS NULL AND given_up_at IS NULL AND created_at < ?) "
    "ORDER BY id LIMIT ?)"
)

#: Alerts neither delivered nor given up.
COUNT_WAITING_ALERTS = (
    "SELECT COUNT(*) FROM alert_outbox WHERE delivered_at IS NULL AND given_up_at IS NULL"
)
