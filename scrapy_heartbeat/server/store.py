"""The receiver's storage in SQLite (WAL mode): :class:`HeartbeatStore`,
which :class:`.pgstore.PostgresStore` is on PostgreSQL. The tables and
queries are :mod:`.schema`'s.

Written from one thread (the receiver's reactor thread). Writes are small and
``synchronous=NORMAL`` makes a commit cost no fsync, so a write takes tens of
microseconds: cheaper than handing it to another thread. A database that
another process holds locked must not stall that thread: SQLite waits at most
:data:`BUSY_TIMEOUT` for it, and then :class:`StoreUnavailable` is raised
(the receiver answers 503, and the client retries its final beat).

Reads from any other thread (the receiver's reads of the API and
``/metrics``, which may take long) use a connection of that thread's own:
in WAL mode they neither wait for the writes nor make them wait.

:meth:`HeartbeatStore.settle` claims each liveness transition with a
conditional update, so that it happens once however many receivers share
the rows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from scrapy_heartbeat.redact import describe
from scrapy_heartbeat.server import schema
from scrapy_heartbeat.server.liveness import FINISHED, STALE, LivenessRules, progress_key
from scrapy_heartbeat.server.progress import start_of
from scrapy_heartbeat.server.schema import ContainerRow, ExecutionRow, HistoryRow, LivenessRow

#: The longest SQLite waits for a lock another process holds, seconds: the
#: reactor thread waits that long, every other client with it.
BUSY_TIMEOUT = 0.05
#: The longest a read on another thread waits for a lock, seconds: no
#: client waits on that thread but the reader's own.
READ_BUSY_TIMEOUT = 5.0
#: Executions read per step of :meth:`HeartbeatStore.settle`: a few
#: milliseconds of the reactor thread each.
SETTLE_BATCH = 500
#: A transition to claim: the conditional update that claims it, and the
#: statements written only if it does.
Claim = tuple[schema.Statement, list[schema.Statement]]
#: How bad a sender's liveness is, for the grace: a grace never improves one.
_SEVERITY = {"running": 0, "stalled": 1, "late": 2, "lost": 3}
#: Containers an execution's detail shows at most, the latest first: one
#: execution's token must not make every reader's answer unbounded.
MAX_CONTAINERS_SHOWN = 1000
#: Rows deleted per statement when pruning, so that no delete holds the
#: database (and the reactor thread) for long.
PRUNE_BATCH = 1000
#: The most a client's timestamp is trusted ahead of the receiver's clock,
#: seconds, when ordering beats.
MAX_AHEAD = 300
#: History ids looked at per statement when thinning.
THIN_BATCH = 2000


class StoreUnavailable(Exception):
    """The database cannot be used now (locked by another process, full,
    down); the message is one line."""

    @classmethod
    def because(cls, exc: BaseException) -> StoreUnavailable:
        return cls(f"the database cannot be used: {describe(exc)}")


@contextlib.contextmanager
def _unavailable_as_such() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked, busy, disk full, I/O error
        raise StoreUnavailable.because(exc) from None


@contextlib.contextmanager
def _opened_as_such(path: str) -> Iterator[None]:
    """A file that cannot be opened as the receiver's database, said in
    one line with the fix."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise StoreUnavailable(
                "is not a SQLite database; give the receiver's database or a new file"
            ) from None
        raise StoreUnavailable(
            f"cannot be opened ({describe(exc)}); give a file this user can read and write, "
            "in a directory it can write"
        ) from None


def _opened(path: str) -> sqlite3.Connection:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StoreUnavailable(
            f"directory {folder} does not exist; create it or give a path in an existing one"
        )
    if not os.access(folder, os.W_OK):  # SQLite writes its -wal and -shm beside the file
        raise StoreUnavailable(f"directory {folder} is not writable by this user")
    with _opened_as_such(path):
        return sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def _loaded(progress: str | None) -> Any:
    return None if progress is None else json.loads(progress)


class HeartbeatStore:
    """SQLite; :class:`.pgstore.PostgresStore` is the same on PostgreSQL."""

    #: Whether a call may wait on the network: the receiver then calls this
    #: store from a thread, never from the reactor's.
    blocking = False

    def __init__(self, path: str, rules: LivenessRules | None = None) -> None:
        self.path = path
        self.rules = rules or LivenessRules()
        self._start_listening()
        self.db = _opened(path)
        with _opened_as_such(path):
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(schema.SCHEMA)
            self._migrate()
            for index in schema.INDEXES:
                self.db.execute(schema.create_index(*index))
        self._writer_thread = threading.get_ident()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def _start_listening(self) -> None:
        #: Since when this receiver could hear every beat: its start, or the
        #: end of the last database outage. A sender is never blamed for a
        #: silence the receiver could not have heard: each gets a fresh
        #: grace from then, rather than all turning lost (an alert each)
        #: before any could beat again.
        self.heard_since = time.time()
        self._deaf = False

    @contextlib.contextmanager
    def _listening(self) -> Iterator[None]:
        """Around storing beats and reading what to settle: notes when an
        outage ends, before anything is concluded from the silence."""
        try:
            yield
        except StoreUnavailable:
            self._deaf = True
            raise
        if self._deaf:
            self._deaf = False
            self.heard_since = time.time()

    def _migrate(self) -> None:
        for table in schema.MIGRATED_TABLES:
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column in schema.ADDED_COLUMNS:
                if column.split()[0] not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Callable[[str, tuple[Any, ...]], Any]]:
        """One transaction; what it yields runs a statement (``?``
        placeholders) in it and returns the cursor."""
        with _unavailable_as_such(), self.db:
            self.db.execute("BEGIN")
            yield self.db.execute

    def _write(self, *statements: schema.Statement) -> list[int]:
        """Run ``statements`` in one transaction; their row counts."""
        with self._transaction() as execute:
            return [execute(query, args).rowcount for query, args in statements]

    def _claim_each(
        self, claims: list[Claim], lost: Sequence[tuple[str, int]] = ()
    ) -> Iterator[list[int]]:
        """In one transaction, the ``lost`` executions confirmed at their
        counts of beats (see :func:`.schema.confirm_lost`), then each claim
        and the statements that follow it when it claimed a row; yields the
        claims' row counts once committed (a store that commits in parts
        yields each part's)."""
        counts = []
        with self._transaction() as execute:
            if lost:
                ids = tuple(eid for eid, _ in lost)
                execute(schema.confirm_lost(len(lost)), ids + tuple(itertools.chain(*lost)))
            for (query, args), following in claims:
                counts.append(execute(query, args).rowcount)
                if counts[-1]:
                    for then, then_args in following:
                        execute(then, then_args)
        yield counts

    def _write_rows(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        """The rows a writing statement returns (``RETURNING``), committed."""
        with self._transaction() as execute:
            return list(execute(query, args).fetchall())

    def _write_together(self, *statements: schema.Statement) -> None:
        """Like :meth:`_write`, for statements whose row counts nobody
        needs (a store over the network sends them as one)."""
        self._write(*statements)

    def _read(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with _unavailable_as_such():
            return self._reader().execute(query, args).fetchall()

    def _reader(self) -> sqlite3.Connection:
        """The writing connection on the thread that writes; elsewhere a
        connection of the calling thread's own, made once."""
        if threading.get_ident() == self._writer_thread or self.path == ":memory:":
            return self.db
        reader: sqlite3.Connection | None = getattr(self._local, "db", None)
        if reader is None:
            reader = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=READ_BUSY_TIMEOUT
            )
            reader.execute("PRAGMA query_only=ON")
            self._local.db = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    def close(self) -> None:
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self.db.close()

    def add(self, body: dict[str, Any], received_at: float | None = None) -> float:
        """Store one validated heartbeat; returns the network latency in
        seconds (server receive time minus the client's timestamp)."""
        statements, latency = self._statements(body, received_at)
        with self._listening():
            self._write_together(*statements)
        return latency

    def add_many(self, beats: list[tuple[dict[str, Any], float]]) -> list[float]:
        """Store several heartbeats (each with its receive time) in one
        transaction; their latencies."""
        with self._listening():
            return self._add_many(beats)

    def _add_many(self, beats: list[tuple[dict[str, Any], float]]) -> list[float]:
        planned = [self._statements(body, at) for body, at in beats]
        self._write(*(statement for statements, _ in planned for statement in statements))
        return [latency for _, latency in planned]

    def _statements(
        self, body: dict[str, Any], received_at: float | None
    ) -> tuple[list[schema.Statement], float]:
        """The statements that store one beat, and its latency."""
        now = time.time() if received_at is None else received_at
        latency = round(now - float(body["timestamp"]), 3)
        status = body.get("status")
        progress = body.get("progress")
        progress_json = None if progress is None else json.dumps(progress, ensure_ascii=False)
        key = progress_key(progress)
        start = start_of(progress) or (None, None)
        eid, cid = body["execution_id"], body["container_id"]
        # Ordered by the client's clock, but not by one far ahead: its state
        # would stand against every later beat.
        ts = min(body["timestamp"], int(now) + MAX_AHEAD)
        beat = (eid, cid, status, body["timestamp"], now, latency, progress_json)
        sent = (body["timestamp"], latency, latency, eid, cid, latency)
        state = (status, progress_json, now, now, key, now, *start)  # both rows alike
        execution = (eid, cid, latency, *state, *sent, status)
        container = (eid, cid, *state, ts, latency, status)
        statements = [
            (schema.INSERT_HEARTBEAT, beat),
            (schema.UPSERT_EXECUTION, execution),
            (schema.UPSERT_CONTAINER, container),
        ]
        return statements, latency

    def executions(
        self, status: str | None = None, now: float | None = None, seen_since: float = 0.0
    ) -> list[dict[str, Any]]:
        """Executions, latest first. ``status``: a client status, or one of
        the receiver's conclusions (``late``, ``lost``, ``stalled``),
        ``stale`` (late or lost) or ``active`` (not finished)."""
        query = schema.SELECT_EXECUTIONS + " WHERE e.last_seen >= ?"
        args: tuple[Any, ...] = (seen_since,)
        if status in ("running", "paused", "completed", "failed"):
            query += " AND e.status = ?"
            args += (status,)
        rows = self._execution_rows(query + " ORDER BY e.last_seen DESC", args)
        result = [self._execution(row, now) for row in rows]
        if status in ("late", "lost", "stalled"):
            result = [e for e in result if e["liveness"] == status]
        elif status == "stale":
            result = [e for e in result if e["stale"]]
        elif status == "active":
            result = [e for e in result if not e["finished"]]
        return result

    def execution(self, execution_id: str, now: float | None = None) -> dict[str, Any] | None:
        query = schema.SELECT_EXECUTIONS + " WHERE e.execution_id = ?"
        rows = self._execution_rows(query, (execution_id,))
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
        rows = map(
            ContainerRow._make,
            self._read(schema.SELECT_CONTAINERS, (execution_id, MAX_CONTAINERS_SHOWN)),
        )
        return [
            {
                "container_id": row.container_id,
                "status": row.status,
                "progress": _loaded(row.progress),
                "first_seen": iso(row.first_seen),
                "last_seen": iso(row.last_seen),
                "beats": row.beats,
                "start_time": row.start_time,
                **self._liveness(row.status, row.last_seen, row.interval, row.moved_at, now),
            }
            for row in rows
        ]

    def history(self, execution_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        rows = map(HistoryRow._make, self._read(schema.SELECT_HISTORY, (execution_id, limit)))
        return [
            {
                "container_id": row.container_id,
                "status": row.status,
                "timestamp": row.client_timestamp,
                "received_at": iso(row.received_at),
                "latency_seconds": row.latency,
                "progress": _loaded(row.progress),
            }
            for row in reversed(list(rows))
        ]

    def settle(
        self,
        now: float | None = None,
        batch: int = SETTLE_BATCH,
        then: Callable[[dict[str, Any], float], Sequence[schema.Statement]] | None = None,
    ) -> Iterator[dict[str, Any] | None]:
        """Decide each unsettled execution's liveness afresh and yield one
        transition event per execution whose liveness changed since last
        settled (old ``None`` for one never settled). The conditional
        update claims each transition: of receivers settling the same rows,
        one yields it. ``then(event, moment)`` gives the statements (the
        alerts to send) written in the transaction that claims it, only if
        it does: a transition is never claimed without them, nor they
        written twice. Looks at ``batch`` executions at a time, in the
        database, reads only those whose liveness changed, and yields None
        after each batch: a caller can hand the thread back between them.
        A store that claims a window in parts yields each part's events
        once it is committed, so a part that fails costs no event of the
        parts before it."""
        after = ""
        while True:
            moment = time.time() if now is None else now
            with self._listening():
                ends = self._read(schema.SETTLE_WINDOW_END, (after, batch - 1))
                until = ends[0][0] if ends else None
                found = self._read(*self._unsettled(moment, after, until))
            rows = [LivenessRow._make(r) for r in found]
            claiming = self._claim_window(rows, self._changed(rows, moment), moment, then)
            while True:  # each part's events once it is committed
                with self._listening():
                    claimed = next(claiming, None)
                if claimed is None:
                    break
                yield from claimed
            if until is None:
                return
            after = until
            yield None

    def _claim_window(
        self,
        rows: list[LivenessRow],
        changed: list[dict[str, Any]],
        moment: float,
        then: Callable[[dict[str, Any], float], Sequence[schema.Statement]] | None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Claim a window's transitions, with what follows each, and confirm
        its lost executions that stay lost; yields the events claimed, each
        time a part is committed. In id order, the order a batch of beats
        locks rows in, so that a claim and a batch never wait for each
        other in a cycle."""
        changed = sorted(changed, key=lambda e: e["execution_id"])
        claims: list[Claim] = [
            (
                (
                    schema.CLAIM_TRANSITION,
                    (e["liveness"], moment, e["beats"], e["execution_id"], e["old_liveness"] or ""),
                ),
                list(then(e, moment)) if then is not None else [],
            )
            for e in changed
        ]
        moved = {e["execution_id"] for e in changed}
        still_lost = sorted(
            (row.execution_id, row.beats)
            for row in rows
            if row.settled_liveness == "lost" and row.execution_id not in moved
        )
        if not claims and not still_lost:
            return
        done = 0
        for counts in self._claim_each(claims, still_lost):
            part, done = changed[done : done + len(counts)], done + len(counts)
            yield [event for event, count in zip(part, counts, strict=True) if count]

    def _unsettled(
        self, moment: float, after: str, until: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        """The query of :func:`.schema.select_unsettled` for a window, and
        its arguments."""
        inputs, rules = self.deciding_args(moment)
        window = (after,) if until is None else (after, until)
        query = schema.select_unsettled(self.rules.lost_after is not None, until is None)
        return query, (*inputs, *window, *rules)

    def deciding_args(self, moment: float) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The arguments of deciding liveness in SQL at ``moment`` (see
        :mod:`.schema`): those of the inputs, and those of the rules."""
        heard = self.heard_since
        rules: tuple[Any, ...] = (self.rules.stall_after,)
        if self.rules.lost_after is not None:
            rules = (self.rules.lost_after, *rules)
        return (moment, heard, heard, moment, heard, heard), rules

    def _changed(self, rows: list[LivenessRow], moment: float) -> list[dict[str, Any]]:
        """The executions of ``rows`` whose liveness is not the one last
        settled, each with that one as ``old_liveness``. Only those are
        read whole."""
        moved = [row.execution_id for row in rows if self._transition(row, moment)]
        changed = []
        for row in self.rows_of(moved):
            if self._transition(row, moment):
                found = self._execution(row, moment)
                changed.append({**found, "old_liveness": row.settled_liveness})
        return changed

    def _transition(self, row: ExecutionRow | LivenessRow, moment: float) -> bool:
        """Whether the execution's liveness differs from the one settled.
        While the grace after a start or an outage is all that differs
        (the sender silent since before it), only a worse liveness counts:
        the grace never makes a recovery, and what another receiver that
        heard all along settled stands."""
        heard = self._decide(row.status, row.last_seen, row.interval, row.moved_at, moment)
        settled = row.settled_liveness
        if heard == settled:
            return False
        strict = self.rules.decide(
            row.status, moment - row.last_seen, row.interval, moment - row.moved_at
        )
        if heard == strict or settled is None:
            return True
        return _SEVERITY.get(heard, 0) > _SEVERITY.get(settled, 0)

    def _decide(
        self, status: str, last: float, interval: float | None, moved: float, moment: float
    ) -> str:
        """The liveness, silence and stillness counted from when this
        receiver could hear at the earliest."""
        heard = self.heard_since
        return self.rules.decide(
            status, moment - max(last, heard), interval, moment - max(moved, heard)
        )

    def prune(self, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete up to ``batch`` of the oldest history rows received before
        ``before``; returns how many (fewer than ``batch``: none are left).
        The latest state of every execution and container stays."""
        [deleted] = self._write((schema.PRUNE_HISTORY, (batch, before)))
        return deleted

    def thin(self, after: int, before: float, bucket: float, batch: int = THIN_BATCH) -> int | None:
        """Thin the history rows after id ``after`` (the next ``batch`` ids)
        received before ``before`` to one per container per ``bucket``
        seconds (see :data:`.schema.THIN_HISTORY`). Returns the id to go on
        after, or None when the rows from there on are not all old enough
        yet (the caller starts there again next time)."""
        found = self._read(schema.NEXT_HISTORY_ROW, (after,))
        if not found or found[0][1] >= before:
            return None
        start = int(found[0][0]) - 1
        end = start + batch
        self._write((schema.THIN_HISTORY, (start, end, before, start, end, bucket)))
        beyond = self._read(schema.NEXT_HISTORY_ROW, (end,))
        # A range that reaches rows too new yet is thinned again next time.
        return end if beyond and beyond[0][1] < before else None

    def claim_alerts(
        self, webhook: str, owner: str, now: float, lease: float, limit: int
    ) -> list[schema.AlertRow]:
        """Lease up to ``limit`` of the alerts due for ``webhook`` to
        ``owner`` until ``now + lease``, oldest first."""
        query = schema.CLAIM_ALERTS.format(lock=self._skip_locked)
        rows = self._write_rows(query, (now + lease, owner, webhook, now, now, limit))
        return sorted(map(schema.AlertRow._make, rows))

    #: What makes receivers claiming at once take different alerts.
    _skip_locked = ""

    def alert_delivered(self, alert_id: int, now: float) -> None:
        self._write((schema.ALERT_DELIVERED, (now, alert_id)))

    def alert_retry(self, alert_id: int, owner: str, at: float) -> bool:
        """Another attempt at ``at``; False when ``owner``'s lease was lost."""
        return self._write((schema.ALERT_RETRY, (at, alert_id, owner))) == [1]

    def alert_given_up(self, alert_id: int, owner: str, now: float) -> bool:
        """Given up; False when ``owner``'s lease was lost (not by us)."""
        return self._write((schema.ALERT_GIVEN_UP, (now, alert_id, owner))) == [1]

    def release_alerts(self, owner: str) -> None:
        self._write((schema.RELEASE_ALERTS, (owner,)))

    def prune_alerts(
        self, before: float, orphaned_before: float = 0.0, batch: int = PRUNE_BATCH
    ) -> int:
        """Delete up to ``batch`` alerts delivered or given up before
        ``before``, or still waiting since before ``orphaned_before``; how
        many."""
        [deleted] = self._write((schema.PRUNE_ALERTS, (before, orphaned_before, batch)))
        return deleted

    def waiting_alerts(self) -> int:
        return int(self._read(schema.COUNT_WAITING_ALERTS)[0][0])

    def count(self) -> int:
        return int(self._read(schema.COUNT_HEARTBEATS)[0][0])

    def read(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of one read-only query of :mod:`.schema` (``?``
        placeholders); from a thread other than the writer's, on a
        connection of that thread's own."""
        return self._read(query, args)

    def described(self, row: ExecutionRow, now: float | None = None) -> dict[str, Any]:
        """One row of ``SELECT_EXECUTIONS`` as the read API shows it."""
        return self._execution(row, now)

    def rows_of(self, ids: list[str]) -> list[ExecutionRow]:
        """The executions ``ids`` (those that exist), in id order, as
        :data:`.schema.SELECT_EXECUTIONS` reads them."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        query = schema.SELECT_EXECUTIONS + f" WHERE e.execution_id IN ({marks})"
        return self._execution_rows(query + " ORDER BY e.execution_id", tuple(ids))

    def liveness_of(self, row: ExecutionRow, now: float) -> str:
        """Only the liveness of :meth:`described`: what a filter on it needs."""
        return self._decide(row.status, row.last_seen, row.interval, row.moved_at, now)

    def _execution_rows(self, query: str, args: tuple[Any, ...]) -> list[ExecutionRow]:
        return [ExecutionRow._make(row) for row in self._read(query, args)]

    def _execution(self, row: ExecutionRow, now: float | None) -> dict[str, Any]:
        return {
            "execution_id": row.execution_id,
            "container_id": row.container_id,
            "container_count": row.container_count,
            "status": row.status,
            "progress": _loaded(row.progress),
            "first_seen": iso(row.first_seen),
            "last_seen": iso(row.last_seen),
            "beats": row.beats,
            "start_time": row.start_time,
            "latency_seconds": row.latency,
            **self._liveness(row.status, row.last_seen, row.interval, row.moved_at, now),
        }

    def _liveness(
        self, status: str, last: float, interval: float | None, moved: float, now: float | None
    ) -> dict[str, Any]:
        """For an execution or a container alike: its liveness (see
        :mod:`.liveness`), the observed interval (None until two beats), and
        whether it is stale (late or lost: silent for over 2 intervals)."""
        moment = time.time() if now is None else now
        liveness = self._decide(status, last, interval, moved, moment)
        return {
            "liveness": liveness,
            "seconds_since_last_beat": round(moment - last, 3),
            "seconds_since_progress": round(moment - moved, 3),
            "interval_seconds": None if interval is None else round(interval, 3),
            "finished": status in FINISHED,
            "stale": liveness in STALE,
        }
