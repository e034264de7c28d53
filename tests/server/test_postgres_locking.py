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
import requests

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
