"""Which store a ``--db`` names: a SQLite file, or a ``postgresql://`` URL."""

from __future__ import annotations

from scrapy_heartbeat.server.liveness import LivenessRules
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable

#: ``serve --db`` unless told otherwise: a SQLite file in the working directory.
DEFAULT_DB = "heartbeats.sqlite3"


def open_store(db: str, rules: LivenessRules | None = None) -> HeartbeatStore:
    """``db`` is a SQLite file, or a ``postgresql://`` URL (psycopg 3)."""
    if db.startswith(("postgresql://", "postgres://")):
        try:
            from scrapy_heartbeat.server.pgstore import PostgresStore
        except ImportError:
            raise StoreUnavailable(
                "--db postgresql://... needs psycopg 3: pip install 'scrapy-heartbeat[postgres]'"
            ) from None
        return PostgresStore(db, rules)
    return HeartbeatStore(db, rules)
