"""The receiver's tables, their migrations, and every query the stores run,
written once with ``?`` placeholders for SQLite and PostgreSQL alike
(:mod:`.pgstore` translates the dialect), beside the shape of the rows each
query reads.

``heartbeats`` keeps every accepted beat; ``executions`` one row per
execution with its latest state, ``containers`` one row per (execution,
container) with that container's. Besides what clients sent, each state row
keeps what :mod:`.liveness` needs: when its counters last moved, the gaps
between its beats, and the liveness last settled.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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
    liveness_since REAL
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
)


def _upsert_state(table: str, extra: str = "") -> str:
    """The upsert of one sender's latest state. A gap after a ``paused``
    beat is not an interval, and a resume restarts the stall clock."""
    return f"""
    SET status = COALESCE(?, {table}.status),
        progress = COALESCE(excluded.progress, {table}.progress),
        last_seen = excluded.last_seen,
        beats = {table}.beats + 1,
        progress_key = COALESCE(excluded.progress_key, {table}.progress_key),
        moved_at = CASE
            WHEN {table}.status = 'paused' THEN excluded.last_seen
            WHEN excluded.progress_key IS NOT NULL AND ({table}.progress_key IS NULL
                OR excluded.progress_key <> {table}.progress_key) THEN excluded.last_seen
            ELSE COALESCE({table}.moved_at, {table}.first_seen) END,
        gaps = {table}.gaps + CASE WHEN {table}.status = 'paused' THEN 0 ELSE 1 END,
        gap_seconds = {table}.gap_seconds + CASE WHEN {table}.status = 'paused' THEN 0
            ELSE excluded.last_seen - {table}.last_seen END{extra}
    """


INSERT_HEARTBEAT = (
    "INSERT INTO heartbeats (execution_id, container_id, status, "
    "client_timestamp, received_at, latency, progress) VALUES (?, ?, ?, ?, ?, ?, ?)"
)

#: Arguments: the inserted values, then ``SET``'s status.
UPSERT_EXECUTION = (
    "INSERT INTO executions (execution_id, container_id, latency, status, progress, "
    "first_seen, last_seen, beats, progress_key, moved_at) "
    "VALUES (?, ?, ?, COALESCE(?, 'running'), ?, ?, ?, 1, ?, ?) "
    "ON CONFLICT (execution_id) DO UPDATE"
    + _upsert_state(
        "executions",
        ",\n        container_id = excluded.container_id, latency = excluded.latency",
    )
)

#: Arguments: the inserted values, then ``SET``'s status.
UPSERT_CONTAINER = (
    "INSERT INTO containers (execution_id, container_id, status, progress, "
    "first_seen, last_seen, beats, progress_key, moved_at) "
    "VALUES (?, ?, COALESCE(?, 'running'), ?, ?, ?, 1, ?, ?) "
    "ON CONFLICT (execution_id, container_id) DO UPDATE" + _upsert_state("containers")
)

#: An execution's interval is its slowest container's mean gap between
#: beats: with many containers the gaps between the execution's own beats
#: say nothing.
_SLOWEST_INTERVAL = """(SELECT MAX(c.gap_seconds / c.gaps) FROM containers c
        WHERE c.execution_id = e.execution_id AND c.gaps > 0)"""

#: Read as :class:`ExecutionRow`; a ``WHERE`` clause may follow.
SELECT_EXECUTIONS = f"""
SELECT e.execution_id, e.container_id, e.status, e.progress, e.first_seen, e.last_seen,
    e.beats, e.latency, COALESCE(e.moved_at, e.first_seen), e.liveness,
    (SELECT COUNT(*) FROM containers c WHERE c.execution_id = e.execution_id),
    {_SLOWEST_INTERVAL}
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


#: What settling needs of each execution, its liveness, not its progress;
#: read as :class:`LivenessRow`, those that may change, after an
#: execution_id, a batch at a time.
SELECT_UNSETTLED = f"""
SELECT e.execution_id, e.status, e.last_seen, COALESCE(e.moved_at, e.first_seen), e.liveness,
    {_SLOWEST_INTERVAL}
FROM executions e
WHERE (e.liveness IS NULL OR e.liveness <> e.status OR e.status NOT IN ('completed', 'failed'))
    AND e.execution_id > ? ORDER BY e.execution_id LIMIT ?
"""


class LivenessRow(NamedTuple):
    execution_id: str
    status: str
    last_seen: float
    moved_at: float
    settled_liveness: str | None
    interval: float | None


#: The conditional update that claims a transition: of receivers settling
#: the same row, one changes it.
CLAIM_TRANSITION = (
    "UPDATE executions SET liveness = ?, liveness_since = ? "
    "WHERE execution_id = ? AND COALESCE(liveness, '') = ?"
)

#: Read as :class:`ContainerRow`, latest first.
SELECT_CONTAINERS = (
    "SELECT container_id, status, progress, first_seen, last_seen, beats, "
    "COALESCE(moved_at, first_seen), gaps, gap_seconds "
    "FROM containers WHERE execution_id = ? ORDER BY last_seen DESC"
)


class ContainerRow(NamedTuple):
    container_id: str
    status: str
    progress: str | None
    first_seen: float
    last_seen: float
    beats: int
    moved_at: float
    gaps: int
    gap_seconds: float


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
#: ``{where}`` is more conditions (``AND ...``), or nothing.
SELECT_PAGE = (
    SELECT_EXECUTIONS
    + " WHERE (e.last_seen < ? OR (e.last_seen = ? AND e.execution_id < ?)){where}"
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
