"""The reference receiver's storage: every accepted heartbeat, one row per
execution with its latest state, and one row per (execution, container) with
that container's latest state, in SQLite (WAL mode).

Used from one thread (the receiver's reactor thread). Writes are small and
``synchronous=NORMAL`` makes a commit cost no fsync, so a write takes tens of
microseconds: cheaper than handing it to another thread. A database that
another process holds locked must not stall that thread: SQLite waits at most
:data:`BUSY_TIMEOUT` for it, and then :class:`StoreUnavailable` is raised
(the receiver answers 503, and the client retries its final beat).

Besides what clients sent, each row keeps what :mod:`liveness` needs: when
its counters last moved, the gaps between its beats, and the liveness last
settled by :meth:`HeartbeatStore.settle` (whose conditional update is what
makes each transition happen once, however many receivers share the rows).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from scrapy_heartbeat.liveness import FINISHED, LivenessRules, progress_key

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

_SCHEMA = f"""
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

#: Columns added since 0.1.0, for databases an older receiver created.
_ADDED_COLUMNS = (
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


_INSERT_EXECUTION = (
    "INSERT INTO executions (execution_id, container_id, latency, status, progress, "
    "first_seen, last_seen, beats, progress_key, moved_at) "
    "VALUES (?, ?, ?, COALESCE(?, 'running'), ?, ?, ?, 1, ?, ?) "
    "ON CONFLICT (execution_id) DO UPDATE"
    + _upsert_state(
        "executions",
        ",\n        container_id = excluded.container_id, latency = excluded.latency",
    )
)

_INSERT_CONTAINER = (
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

_SELECT_EXECUTIONS = f"""
SELECT e.execution_id, e.container_id, e.status, e.progress, e.first_seen, e.last_seen,
    e.beats, e.latency, COALESCE(e.moved_at, e.first_seen), e.liveness,
    (SELECT COUNT(*) FROM containers c WHERE c.execution_id = e.execution_id),
    {_SLOWEST_INTERVAL}
FROM executions e
"""

#: What settling needs of each execution: its liveness, not its progress.
_SELECT_LIVENESS = f"""
SELECT e.execution_id, e.status, e.last_seen, COALESCE(e.moved_at, e.first_seen), e.liveness,
    {_SLOWEST_INTERVAL}
FROM executions e
"""

#: Rows whose liveness may change: all but those settled as finished.
_UNSETTLED = (
    "(e.liveness IS NULL OR e.liveness <> e.status OR e.status NOT IN ('completed', 'failed'))"
)

#: The longest SQLite waits for a lock another process holds, seconds: the
#: reactor thread waits that long, every other client with it.
BUSY_TIMEOUT = 0.05
#: Executions read per step of :meth:`HeartbeatStore.settle`: a few
#: milliseconds of the reactor thread each.
SETTLE_BATCH = 100
#: How long history rows are kept by default (``serve --keep-days``).
KEEP_DAYS = 14.0
#: Rows deleted per statement when pruning, so that no delete holds the
#: database (and the reactor thread) for long.
PRUNE_BATCH = 1000


class StoreUnavailable(Exception):
    """The database cannot be used now (locked by another process, full);
    the message is one line."""


@contextlib.contextmanager
def _unavailable_as_such() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked, busy, disk full, I/O error
        raise StoreUnavailable(f"the database cannot be used: {exc}") from None


def open_store(db: str, rules: LivenessRules | None = None) -> HeartbeatStore:
    """``db`` is a SQLite file, or a ``postgresql://`` URL (psycopg 3)."""
    if db.startswith(("postgresql://", "postgres://")):
        try:
            from scrapy_heartbeat.pgstore import PostgresStore
        except ImportError:
            raise StoreUnavailable(
                "--db postgresql://... needs psycopg 3: pip install 'scrapy-heartbeat[postgres]'"
            ) from None
        return PostgresStore(db, rules)
    return HeartbeatStore(db, rules)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class HeartbeatStore:
    """SQLite; :class:`pgstore.PostgresStore` is the same on PostgreSQL.
    Queries are written once, with ``?`` placeholders, for both."""

    #: Whether a call may wait on the network: the receiver then calls this
    #: store from a thread, never from the reactor's.
    blocking = False

    def __init__(self, path: str, rules: LivenessRules | None = None) -> None:
        self.path = path
        self.rules = rules or LivenessRules()
        self.db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        for table in ("executions", "containers"):
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column in _ADDED_COLUMNS:
                if column.split()[0] not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> list[int]:
        """Run ``statements`` in one transaction; their row counts."""
        with _unavailable_as_such(), self.db:
            self.db.execute("BEGIN")
            return [self.db.execute(query, args).rowcount for query, args in statements]

    def _write_together(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Like :meth:`_write`, for statements whose row counts nobody
        needs (a store over the network sends them as one)."""
        self._write(*statements)

    def _read(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with _unavailable_as_such():
            return self.db.execute(query, args).fetchall()

    def close(self) -> None:
        self.db.close()

    def add(self, body: dict[str, Any], received_at: float | None = None) -> float:
        """Store one validated heartbeat; returns the network latency in
        seconds (server receive time minus the client's timestamp)."""
        statements, latency = self._statements(body, received_at)
        self._write_together(*statements)
        return latency

    def add_many(self, beats: list[tuple[dict[str, Any], float]]) -> list[float]:
        """Store several heartbeats (each with its receive time) in one
        transaction; their latencies."""
        planned = [self._statements(body, at) for body, at in beats]
        self._write(*(statement for statements, _ in planned for statement in statements))
        return [latency for _, latency in planned]

    def _statements(
        self, body: dict[str, Any], received_at: float | None
    ) -> tuple[list[tuple[str, tuple[Any, ...]]], float]:
        now = time.time() if received_at is None else received_at
        latency = round(now - float(body["timestamp"]), 3)
        status = body.get("status")
        progress = body.get("progress")
        progress_json = None if progress is None else json.dumps(progress, ensure_ascii=False)
        key = progress_key(progress)
        execution_id, container_id = body["execution_id"], body["container_id"]
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "INSERT INTO heartbeats (execution_id, container_id, status, "
                "client_timestamp, received_at, latency, progress) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    execution_id,
                    container_id,
                    status,
                    body["timestamp"],
                    now,
                    latency,
                    progress_json,
                ),
            ),
            (  # the values, then SET's status
                _INSERT_EXECUTION,
                (
                    execution_id,
                    container_id,
                    latency,
                    status,
                    progress_json,
                    now,
                    now,
                    key,
                    now,
                    status,
                ),
            ),
            (
                _INSERT_CONTAINER,
                (execution_id, container_id, status, progress_json, now, now, key, now, status),
            ),
        ]
        return statements, latency

    def executions(
        self, status: str | None = None, now: float | None = None, seen_since: float = 0.0
    ) -> list[dict[str, Any]]:
        """Executions, latest first. ``status``: a client status, or one of
        the receiver's conclusions (``late``, ``lost``, ``stalled``),
        ``stale`` (late or lost) or ``active`` (not finished)."""
        query = _SELECT_EXECUTIONS + " WHERE e.last_seen >= ?"
        args: tuple[Any, ...] = (seen_since,)
        if status in ("running", "paused", "completed", "failed"):
            query += " AND e.status = ?"
            args += (status,)
        rows = self._read(query + " ORDER BY e.last_seen DESC", args)
        result = [self._execution(row, now) for row in rows]
        if status in ("late", "lost", "stalled"):
            result = [e for e in result if e["liveness"] == status]
        elif status == "stale":
            result = [e for e in result if e["stale"]]
        elif status == "active":
            result = [e for e in result if not e["finished"]]
        return result

    def execution(self, execution_id: str, now: float | None = None) -> dict[str, Any] | None:
        rows = self._read(_SELECT_EXECUTIONS + " WHERE e.execution_id = ?", (execution_id,))
        return self._execution(rows[0], now) if rows else None

    def detail(self, execution_id: str) -> dict[str, Any] | None:
        """The execution with its containers and its history, or None."""
        found = self.execution(execution_id)
        if found is None:
            return None
        return {
            **found,
            "containers": self.containers(execution_id),
            "history": self.history(execution_id),
        }

    def containers(self, execution_id: str, now: float | None = None) -> list[dict[str, Any]]:
        """The latest state of each container of an execution, latest first."""
        rows = self._read(
            "SELECT container_id, status, progress, first_seen, last_seen, beats, "
            "COALESCE(moved_at, first_seen), gaps, gap_seconds "
            "FROM containers WHERE execution_id = ? ORDER BY last_seen DESC",
            (execution_id,),
        )
        result = []
        for container_id, status, progress, first, last, beats, moved, gaps, gap_s in rows:
            seen = self._liveness(status, last, gap_s / gaps if gaps else None, moved, now)
            result.append(
                {
                    "container_id": container_id,
                    "status": status,
                    "progress": None if progress is None else json.loads(progress),
                    "first_seen": iso(first),
                    "last_seen": iso(last),
                    "beats": beats,
                    **seen,
                }
            )
        return result

    def history(self, execution_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT container_id, status, client_timestamp, received_at, latency, progress "
            "FROM heartbeats "
            "WHERE execution_id = ? ORDER BY id DESC LIMIT ?",
            (execution_id, limit),
        )
        return [
            {
                "container_id": container_id,
                "status": status,
                "timestamp": client_ts,
                "received_at": iso(received),
                "latency_seconds": latency,
                "progress": None if progress is None else json.loads(progress),
            }
            for container_id, status, client_ts, received, latency, progress in reversed(rows)
        ]

    def settle(
        self, now: float | None = None, batch: int = SETTLE_BATCH
    ) -> Iterator[dict[str, Any] | None]:
        """Decide each unsettled execution's liveness afresh and yield one
        transition event per execution whose liveness changed since last
        settled (old ``None`` for one never settled). The conditional
        update claims each transition: of receivers settling the same rows,
        one yields it. Reads ``batch`` rows at a time, and yields None after
        each batch: a caller can hand the thread back between them."""
        after = ""
        while True:
            moment = time.time() if now is None else now
            rows = self._read(
                _SELECT_LIVENESS
                + f" WHERE {_UNSETTLED} AND e.execution_id > ? ORDER BY e.execution_id LIMIT ?",
                (after, batch),
            )
            decide = self.rules.decide
            moved = [  # the few whose liveness changed: only they are read whole
                execution_id
                for execution_id, status, last, since, settled, interval in rows
                if decide(status, moment - last, interval, moment - since) != settled
            ]
            changed = []
            if moved:
                marks = ", ".join("?" * len(moved))
                for row in self._read(
                    _SELECT_EXECUTIONS
                    + f" WHERE e.execution_id IN ({marks}) ORDER BY e.execution_id",
                    tuple(moved),
                ):
                    found = self._execution(row, moment)
                    if found["liveness"] != row[9]:
                        changed.append({**found, "old_liveness": row[9]})
            claims = [
                (
                    "UPDATE executions SET liveness = ?, liveness_since = ? "
                    "WHERE execution_id = ? AND COALESCE(liveness, '') = ?",
                    (e["liveness"], moment, e["execution_id"], e["old_liveness"] or ""),
                )
                for e in changed
            ]
            # One transaction per batch: ten thousand new executions are not
            # ten thousand commits.
            claimed = self._write(*claims) if claims else []
            for event, count in zip(changed, claimed, strict=True):
                if count:
                    yield event
            if len(rows) < batch:
                return
            after = rows[-1][0]
            yield None

    def prune(self, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete up to ``batch`` of the oldest history rows received before
        ``before``; returns how many (fewer than ``batch``: none are left).
        The latest state of every execution and container stays."""
        [deleted] = self._write(
            (
                "DELETE FROM heartbeats WHERE id IN "
                "(SELECT id FROM heartbeats ORDER BY id LIMIT ?) AND received_at < ?",
                (batch, before),
            )
        )
        return deleted

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM heartbeats")[0][0])

    def _execution(self, row: tuple[Any, ...], now: float | None) -> dict[str, Any]:
        (
            execution_id,
            container_id,
            status,
            progress,
            first,
            last,
            beats,
            latency,
            moved,
            _settled,
            containers,
            interval,
        ) = row
        return {
            "execution_id": execution_id,
            "container_id": container_id,
            "container_count": containers,
            "status": status,
            "progress": None if progress is None else json.loads(progress),
            "first_seen": iso(first),
            "last_seen": iso(last),
            "beats": beats,
            "latency_seconds": latency,
            **self._liveness(status, last, interval, moved, now),
        }

    def _liveness(
        self, status: str, last: float, interval: float | None, moved: float, now: float | None
    ) -> dict[str, Any]:
        """For an execution or a container alike: its liveness (see
        :mod:`liveness`), the observed interval (None until two beats), and
        whether it is stale (late or lost: silent for over 2 intervals)."""
        moment = time.time() if now is None else now
        liveness = self.rules.decide(status, moment - last, interval, moment - moved)
        return {
            "liveness": liveness,
            "seconds_since_last_beat": round(moment - last, 3),
            "seconds_since_progress": round(moment - moved, 3),
            "interval_seconds": None if interval is None else round(interval, 3),
            "finished": status in FINISHED,
            "stale": liveness in ("late", "lost"),
        }
