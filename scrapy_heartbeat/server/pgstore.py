"""The reference receiver's storage on PostgreSQL (``serve --db
postgresql://user@host/db``, psycopg 3: ``pip install
'scrapy-heartbeat[postgres]'``), so that several receivers behind a load
balancer share one database and any of them can fail.

The schema and queries are :mod:`.schema`'s, the behaviour :mod:`.store`'s;
only the dialect differs (types, placeholders, migration). A query waits on
the network, so
the receiver calls this store from its thread pool (``blocking``), never
from the reactor's thread; each thread has a connection of its own, made
again after the database went away. Statements are bounded by
:data:`STATEMENT_TIMEOUT_MS`, so a slow database answers 503 before the
client's own 10 s timeout.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg

from scrapy_heartbeat.server import schema
from scrapy_heartbeat.server.liveness import LivenessRules
from scrapy_heartbeat.server.store import Claim, HeartbeatStore, StoreUnavailable

CONNECT_TIMEOUT = 3
STATEMENT_TIMEOUT_MS = 5000
#: Every connection's settings: the statement timeout, and no JIT. The
#: planner's estimate for a window of settling runs far past JIT's cost
#: thresholds though the window reads few rows, and compiling it took
#: 500-650 ms of the database's CPU every round, beside the beats; none of
#: the receiver's queries runs long enough to repay a compilation.
SESSION_OPTIONS = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c jit=off"
#: Claims of settling per transaction: few enough that the rows they lock
#: are held for milliseconds, enough that a burst of new executions is
#: not a commit each.
CLAIM_CHUNK = 50


def _dialect(sql: str) -> str:
    return (
        sql.replace("INTEGER PRIMARY KEY", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("REAL", "DOUBLE PRECISION")
    )


def _placeholders(query: str) -> str:
    return query.replace("?", "%s")


@contextlib.contextmanager
def _unavailable_as_such() -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:  # down, unreachable, timed out, full
        raise StoreUnavailable.because(exc) from None


def _missing(db: psycopg.Connection[Any]) -> list[str]:
    """The DDL that creates what the database lacks, read from the catalog
    first: ``CREATE ... IF NOT EXISTS`` and ``ADD COLUMN IF NOT EXISTS``
    lock their table (``ALTER``: against every reader and writer) even when
    there is nothing to do, so a receiver starting beside others that are
    serving runs none of it."""
    names = {r[0] for r in db.execute(_CATALOG_NAMES).fetchall()}
    columns = set(db.execute(_CATALOG_COLUMNS).fetchall())
    wanted = [s.strip() for s in _dialect(schema.SCHEMA).split(";") if s.strip()]
    wanted += [schema.create_index(*index) for index in schema.INDEXES]
    missing = [s for s in wanted if _created(s) not in names]
    for table in schema.MIGRATED_TABLES:
        for column in schema.ADDED_COLUMNS:
            if (table, column.split()[0]) not in columns:
                missing.append(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {_dialect(column)}")
    return missing


#: The name of what a ``CREATE TABLE`` or ``CREATE INDEX`` creates.
_CREATED = re.compile(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)")


def _created(statement: str) -> str:
    found = _CREATED.match(statement)
    return found[1] if found else statement


_CATALOG_NAMES = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema()"
)
_CATALOG_COLUMNS = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema()"
)


def _together(statements: Sequence[schema.Statement]) -> schema.Statement:
    """Statements as one, so one round trip and one transaction: each but
    the last becomes a data-modifying ``WITH`` query (they write different
    tables, so no part needs to see what another writes)."""
    *first, (last, _) = statements
    parts = [f"s{i} AS ({q})" for i, (q, _) in enumerate(first)]
    query = (f"WITH {', '.join(parts)} " if parts else "") + last
    return _placeholders(query), tuple(a for _, args in statements for a in args)


T = TypeVar("T")


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CLAIM_CHUNK):
        yield items[start : start + CLAIM_CHUNK]


def _each(db: psycopg.Connection[Any], statements: Sequence[schema.Statement]) -> list[int]:
    """Run ``statements``, those in a row with the same query as one
    pipelined ``executemany``; each one's row count."""
    counts = []
    for query, group in itertools.groupby(statements, key=lambda statement: statement[0]):
        cursor = db.cursor()
        cursor.executemany(_placeholders(query), [args for _, args in group], returning=True)
        counts.append(cursor.rowcount)
        while cursor.nextset():
            counts.append(cursor.rowcount)
    return counts


class PostgresStore(HeartbeatStore):
    blocking = True

    def __init__(self, url: str, rules: LivenessRules | None = None) -> None:
        self.path = url
        self.rules = rules or LivenessRules()
        self._start_listening()
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        with self._connection() as db, db.transaction():
            # One receiver at a time creates or migrates the tables.
            db.execute("SELECT pg_advisory_xact_lock(7361)")
            for statement in _missing(db):
                db.execute(statement)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with _unavailable_as_such():
            db: psycopg.Connection[Any] | None = getattr(self._local, "db", None)
            if db is None or db.closed or db.broken:
                try:
                    db = psycopg.connect(
                        self.path,
                        autocommit=True,
                        connect_timeout=CONNECT_TIMEOUT,
                        options=SESSION_OPTIONS,
                    )
                except psycopg.ProgrammingError:  # a URL that cannot be parsed
                    # Not quoted: psycopg's message may hold part of the password.
                    raise StoreUnavailable(
                        "the URL cannot be parsed; check its percent-encoding and its options"
                    ) from None
                self._local.db = db
                with self._lock:
                    self._connections.append(db)
            yield db

    _skip_locked = " FOR UPDATE SKIP LOCKED"

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Callable[[str, tuple[Any, ...]], Any]]:
        with self._connection() as db, _unavailable_as_such(), db.transaction():
            yield lambda query, args: db.execute(_placeholders(query), args)

    def _write_together(self, *statements: schema.Statement) -> None:
        query, args = _together(statements)
        with self._connection() as db, _unavailable_as_such():
            db.execute(query, args)

    def _add_many(self, beats: list[tuple[dict[str, Any], float]]) -> list[float]:
        """One transaction, one pipelined ``executemany``: a batch of beats
        costs about one round trip, not five per beat."""
        planned = [self._statements(body, at) for body, at in beats]
        together = [_together(statements) for statements, _ in planned]
        # Rows locked in one order by every receiver, so two receivers'
        # batches wait for each other and never deadlock; the sort is
        # stable, so one container's beats keep the order they came in.
        order = sorted(
            range(len(beats)),
            key=lambda i: (beats[i][0]["execution_id"], beats[i][0]["container_id"]),
        )
        with self._connection() as db, _unavailable_as_such(), db.transaction():
            db.cursor().executemany(together[0][0], [together[i][1] for i in order])
        return [latency for _, latency in planned]

    def _claim_each(
        self, claims: list[Claim], lost: Sequence[tuple[str, int]] = ()
    ) -> Iterator[list[int]]:
        """As the base class does, in transactions of :data:`CLAIM_CHUNK`
        executions, each transaction's statements sent at once (pipelined
        ``executemany``), rows taken in the id order they come in: a row
        is held for a few round trips, not for a round trip per claim of
        the window, and a batch of beats that needs it waits milliseconds.
        Yields each transaction's counts once it is committed."""
        confirm = schema.confirm_lost(1)
        with self._connection() as db, _unavailable_as_such():
            for confirms in _chunks([(confirm, (eid, eid, beats)) for eid, beats in lost]):
                with db.transaction():
                    _each(db, confirms)
            for chunk in _chunks(claims):
                with db.transaction():
                    claimed = _each(db, [claim for claim, _ in chunk])
                    pairs = zip(chunk, claimed, strict=True)
                    _each(db, [s for (_, then), n in pairs if n for s in then])
                yield claimed

    def _read(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        for attempt in (1, 2):
            with self._connection() as db:
                try:
                    return db.execute(_placeholders(query), args).fetchall()
                except psycopg.OperationalError as exc:
                    # A connection the database dropped while it sat in the
                    # pool (a restart) is found broken only now: a read is
                    # asked again, once, on a new one.
                    if attempt == 2 or not db.broken:
                        raise StoreUnavailable.because(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
