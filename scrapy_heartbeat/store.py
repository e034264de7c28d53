"""The reference receiver's storage: every accepted heartbeat, one row per
execution with its latest state, and one row per (execution, container) with
that container's latest state, in SQLite (WAL mode).

Used from one thread (the receiver's reactor thread). Writes are small and
``synchronous=NORMAL`` makes a commit cost no fsync, so a write takes tens of
microseconds: cheaper than handing it to another thread. A database that
another process holds locked must not stall that thread: SQLite waits at most
:data:`BUSY_TIMEOUT` for it, and then :class:`StoreUnavailable` is raised
(the receiver answers 503, and the client retries its final beat).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

#: Beats an execution is assumed to send per this many seconds until it has
#: sent two (the spec's recommended interval).
DEFAULT_INTERVAL = 30.0
FINISHED = ("completed", "failed")

_SCHEMA = """
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
    status TEXT NOT NULL,
    progress TEXT,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    beats INTEGER NOT NULL,
    latency REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS containers (
    execution_id TEXT NOT NULL,
    container_id TEXT NOT NULL,
    status TEXT NOT NULL,
    progress TEXT,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    beats INTEGER NOT NULL,
    PRIMARY KEY (execution_id, container_id)
);
"""

_UPSERT = """
INSERT INTO executions VALUES (?, ?, COALESCE(?, 'running'), ?, ?, ?, 1, ?)
ON CONFLICT (execution_id) DO UPDATE SET
    container_id = excluded.container_id,
    status = COALESCE(?, executions.status),
    progress = COALESCE(excluded.progress, executions.progress),
    last_seen = excluded.last_seen,
    beats = executions.beats + 1,
    latency = excluded.latency
"""

_UPSERT_CONTAINER = """
INSERT INTO containers VALUES (?, ?, COALESCE(?, 'running'), ?, ?, ?, 1)
ON CONFLICT (execution_id, container_id) DO UPDATE SET
    status = COALESCE(?, containers.status),
    progress = COALESCE(excluded.progress, containers.progress),
    last_seen = excluded.last_seen,
    beats = containers.beats + 1
"""


_SELECT_EXECUTIONS = (
    "SELECT e.*, (SELECT COUNT(*) FROM containers c "
    "WHERE c.execution_id = e.execution_id) FROM executions e"
)


#: The longest SQLite waits for a lock another process holds, seconds: the
#: reactor thread waits that long, every other client with it.
BUSY_TIMEOUT = 0.05


class StoreUnavailable(Exception):
    """The database cannot be used now (locked by another process, full);
    the message is one line."""


@contextlib.contextmanager
def _unavailable_as_such() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked, busy, disk full, I/O error
        raise StoreUnavailable(f"the database cannot be used: {exc}") from None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class HeartbeatStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def add(self, body: dict[str, Any], received_at: float | None = None) -> float:
        """Store one validated heartbeat; returns the network latency in
        seconds (server receive time minus the client's timestamp)."""
        now = time.time() if received_at is None else received_at
        latency = round(now - float(body["timestamp"]), 3)
        status = body.get("status")
        progress = body.get("progress")
        progress_json = None if progress is None else json.dumps(progress, ensure_ascii=False)
        execution_id, container_id = body["execution_id"], body["container_id"]
        with _unavailable_as_such(), self.db:  # one transaction
            self.db.execute("BEGIN")
            self.db.execute(
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
            )
            self.db.execute(
                _UPSERT,
                (execution_id, container_id, status, progress_json, now, now, latency, status),
            )
            self.db.execute(
                _UPSERT_CONTAINER,
                (execution_id, container_id, status, progress_json, now, now, status),
            )
        return latency

    def executions(
        self, status: str | None = None, now: float | None = None
    ) -> list[dict[str, Any]]:
        query = _SELECT_EXECUTIONS
        args: tuple[Any, ...] = ()
        if status in ("stale", "active"):
            pass  # computed below
        elif status is not None:
            query += " WHERE e.status = ?"
            args = (status,)
        rows = self._read(query + " ORDER BY last_seen DESC", args)
        result = [self._execution(row, now) for row in rows]
        if status == "stale":
            result = [e for e in result if e["stale"]]
        elif status == "active":
            result = [e for e in result if not e["finished"]]
        return result

    def execution(self, execution_id: str, now: float | None = None) -> dict[str, Any] | None:
        rows = self._read(_SELECT_EXECUTIONS + " WHERE execution_id = ?", (execution_id,))
        return self._execution(rows[0], now) if rows else None

    def containers(self, execution_id: str, now: float | None = None) -> list[dict[str, Any]]:
        """The latest state of each container of an execution, latest first."""
        rows = self._read(
            "SELECT container_id, status, progress, first_seen, last_seen, beats "
            "FROM containers WHERE execution_id = ? ORDER BY last_seen DESC",
            (execution_id,),
        )
        result = []
        for container_id, status, progress, first, last, beats in rows:
            seen = _liveness(status, first, last, beats, now)
            result.append(
                {
                    "container_id": container_id,
                    "status": status,
                    "progress": None if progress is None else json.loads(progress),
                    "first_seen": iso(first),
                    "last_seen": iso(last),
                    "seconds_since_last_beat": round(seen["silent_for"], 3),
                    "beats": beats,
                    "interval_seconds": seen["interval_seconds"],
                    "stale": seen["stale"],
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

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM heartbeats")[0][0])

    def close(self) -> None:
        self.db.close()

    def _read(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with _unavailable_as_such():
            return self.db.execute(query, args).fetchall()

    @staticmethod
    def _execution(row: tuple[Any, ...], now: float | None) -> dict[str, Any]:
        execution_id, container_id, status, progress, first, last, beats, latency, containers = row
        seen = _liveness(status, first, last, beats, now)
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
            "interval_seconds": seen["interval_seconds"],
            "finished": seen["finished"],
            "stale": seen["stale"],
        }


def _liveness(
    status: str, first: float, last: float, beats: int, now: float | None
) -> dict[str, Any]:
    """The observed interval (None until two beats), whether the sender
    finished, how long it has been silent, and whether that is over twice
    its interval (the spec's 30 s until two beats): for an execution or a
    container alike."""
    interval = (last - first) / (beats - 1) if beats > 1 else None
    finished = status in FINISHED
    silent_for = (time.time() if now is None else now) - last
    return {
        "interval_seconds": None if interval is None else round(interval, 3),
        "finished": finished,
        "silent_for": silent_for,
        "stale": not finished and silent_for > 2 * (interval or DEFAULT_INTERVAL),
    }
