"""Receivers on one real PostgreSQL never lock themselves: the schema is
migrated once, at start, under an advisory lock, and only what is missing;
no request runs DDL, so an open read transaction elsewhere (a psql session,
pg_dump) and a second receiver starting under load cost no beat."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
import requests

from scrapy_heartbeat.server import open_store
from scrapy_heartbeat.server.pgstore import CLAIM_CHUNK
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable
from tests.server.beats import worker_beat
from tests.server.postgres_server import PostgresServer
from tests.server.serving import HEARTBEAT, Serve


def test_scrapes_and_beats_pass_an_open_read_transaction(
    serve: Callable[..., Serve], postgres_server: PostgresServer
) -> None:
    db = postgres_server.database()
    one = serve(db=db)
    eid = str(uuid.uuid4())
    assert one.post(worker_beat(eid)).status_code == 200
    with psycopg.connect(db) as reader:  # a transaction left open, as psql's BEGIN
        reader.execute("SELECT * FROM executions LIMIT 1").fetchall()
        codes = [one.get("/metrics").status_code]
        for n in range(5):
            codes.append(one.post(worker_beat(eid, crawled=n)).status_code)
            codes.append(one.get("/metrics").status_code)
        two = serve(db=db)  # a second receiver starts meanwhile
        codes += [
            two.post(worker_beat(eid, crawled=9)).status_code,
            two.get("/metrics").status_code,
        ]
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert codes == [200] * 13


def test_two_receivers_scraped_under_load_never_deadlock(
    serve: Callable[..., Serve], postgres_server: PostgresServer
) -> None:
    db = postgres_server.database()
    one = serve(db=db)
    executions = [str(uuid.uuid4()) for _ in range(20)]
    codes: list[int] = []
    scrapes: list[int] = []
    receivers = [one]
    done = threading.Event()

    def fleet(worker: int) -> None:
        with requests.Session() as session:
            n = 0
            while not done.is_set():
                target = receivers[n % len(receivers)]
                body = worker_beat(executions[n % 20], crawled=n, container_id=f"w{worker}")
                codes.append(
                    session.post(target.url + HEARTBEAT, json=body, timeout=10).status_code
                )
                n += 1

    def scraper() -> None:
        while not done.is_set():
            for target in list(receivers):
                scrapes.append(requests.get(target.url + "/metrics", timeout=10).status_code)
            time.sleep(0.1)

    workers = [threading.Thread(target=fleet, args=(w,)) for w in range(6)]
    workers.append(threading.Thread(target=scraper))
    for t in workers:
        t.start()
    try:
        time.sleep(1)
        receivers.append(serve(db=db))  # starts while beats and scrapes flow
        time.sleep(4)
    finally:
        done.set()
        for t in workers:
            t.join(30)
    with psycopg.connect(db) as check:
        check.execute("SELECT pg_stat_force_next_flush()")
        [(deadlocks,)] = check.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchall()
    assert len(codes) > 100 and set(codes) == {200}
    assert len(scrapes) > 10 and set(scrapes) == {200}
    assert deadlocks == 0


def _locked_by_others(db: str) -> set[str]:
    """The executions whose rows another transaction holds locked now."""
    with psycopg.connect(db) as probe:
        every = {r[0] for r in probe.execute("SELECT execution_id FROM executions")}
        free = probe.execute("SELECT execution_id FROM executions FOR UPDATE SKIP LOCKED")
        return every - {r[0] for r in free}


def _waiting_for_a_lock(db: str, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    with psycopg.connect(db, autocommit=True) as probe:
        while time.monotonic() < deadline:
            query = "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            if probe.execute(query).fetchone() != (0,):
                return True
            time.sleep(0.05)
    return False


#: Holds one execution's row, as a batch of beats does while it stores.
_LOCK_ROW = "SELECT 1 FROM executions WHERE execution_id = %s FOR UPDATE"


def _unsettled_executions(store: HeartbeatStore, count: int) -> tuple[float, list[str]]:
    """``count`` new executions, one beat each, none settled: the next round
    claims each. The moment to settle at, and their ids in id order."""
    now = time.time()
    ids = sorted(str(uuid.uuid4()) for _ in range(count))
    store.add_many([(worker_beat(eid), now - 1000) for eid in ids])
    return now, ids


@pytest.mark.parametrize("kind", ["transitions", "lost"])
def test_settling_locks_few_rows_at_a_time_in_id_order(
    postgres_server: PostgresServer, kind: str
) -> None:
    """A round that claims a whole window (a fleet's new executions, or lost
    ones to confirm) holds only a small chunk of rows locked at a time, and
    takes them in id order, the order a batch of beats takes them in: a
    batch waits for a chunk, never for the window, and never in a cycle."""
    db = postgres_server.database()
    store = open_store(db)
    try:
        now, ids = _unsettled_executions(store, 300)
        if kind == "lost":  # as a receiver that did not confirm them left them
            store._write(("UPDATE executions SET liveness = 'lost', settled_beats = NULL", ()))
        blocked = ids[220]  # within the fifth chunk of 50
        with psycopg.connect(db) as holder:
            holder.execute(_LOCK_ROW, (blocked,))
            settling = threading.Thread(target=lambda: list(store.settle(now)))
            settling.start()
            assert _waiting_for_a_lock(db)
            held = _locked_by_others(db) - {blocked}
        settling.join(30)
        assert not settling.is_alive()
        assert held and all(eid < blocked for eid in held)
        assert len(held) < CLAIM_CHUNK
        settled = store.read("SELECT COUNT(*) FROM executions WHERE settled_beats = beats")
        assert settled == [(300,)]
    finally:
        store.close()


def test_a_round_cut_short_reports_every_part_it_committed(
    postgres_server: PostgresServer,
) -> None:
    """Settling commits a window in parts; when the database goes away in
    the middle, the transitions of the parts committed before are still
    reported (they are claimed: no later round reports them), and the rest
    are claimed by the next round."""
    db = postgres_server.database()
    store = open_store(db)
    try:
        now, ids = _unsettled_executions(store, 120)
        reported: list[str] = []
        failures: list[BaseException] = []

        def settle() -> None:
            try:
                for event in store.settle(now):
                    if event is not None:
                        reported.append(event["execution_id"])
            except StoreUnavailable as exc:
                failures.append(exc)

        with psycopg.connect(db) as holder:
            holder.execute(_LOCK_ROW, (ids[2 * CLAIM_CHUNK + 10],))  # within the third part
            settling = threading.Thread(target=settle)
            settling.start()
            assert _waiting_for_a_lock(db)
            with psycopg.connect(db, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            settling.join(30)
        assert not settling.is_alive() and len(failures) == 1
        assert reported == ids[: 2 * CLAIM_CHUNK]
        rest = [e["execution_id"] for e in store.settle(now) if e is not None]
        assert rest == ids[2 * CLAIM_CHUNK :]
    finally:
        store.close()
