"""More than one receiver: ``serve --db postgresql://...`` processes sharing
one database on Debian's real PostgreSQL, beats posted to them at once, the
database going away and coming back, and a wrong URL at start."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import requests

from scrapy_heartbeat.server import open_store
from tests.crawl import wait_for
from tests.server.beats import worker_beat
from tests.server.postgres_server import PostgresServer
from tests.server.serving import EXECUTIONS, HEARTBEAT, Serve
from tests.servers import HeartbeatServer, free_port


def test_two_receivers_on_one_database_lose_no_beat(
    serve: Callable[..., Serve], postgres_server: PostgresServer
) -> None:
    db = postgres_server.database()
    hook = HeartbeatServer()
    try:
        args = ("--check-every", "0.2", "--lost-after", "1.5", "--webhook", hook.url)
        one, two = serve(*args, db=db), serve(*args, db=db)
        executions = [str(uuid.uuid4()) for _ in range(10)]
        answers: list[int] = []
        lock = threading.Lock()

        def fleet(worker: int) -> None:
            with requests.Session() as session:
                for i in range(60):  # each container beats both receivers in turn
                    target = (one, two)[i % 2]
                    body = worker_beat(
                        executions[i % 10], crawled=i, container_id=f"worker-{worker}"
                    )
                    reply = session.post(
                        target.url + HEARTBEAT,
                        json=body,
                        timeout=10,
                    )
                    with lock:
                        answers.append(reply.status_code)

        threads = [threading.Thread(target=fleet, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert answers == [200] * 480
        store = open_store(one.db)
        try:
            assert store.count() == 480
            listed = store.executions()
            assert len(listed) == 10
            assert sum(e["beats"] for e in listed) == 480
            assert {e["container_count"] for e in listed} == {8}
        finally:
            store.close()
        # Each receiver reads what the other stored.
        assert len(two.get(EXECUTIONS).json()["executions"]) == 10
        # Silence: both receivers see every execution lost; each transition
        # is alerted once, by one of them.
        wait_for(lambda: len(hook.bodies()) >= 10, 30, "ten lost alerts")
        time.sleep(1)
        lost = [b["execution_id"] for b in hook.bodies() if b["new_state"] == "lost"]
        assert sorted(lost) == sorted(executions)
    finally:
        hook.stop()


def test_the_database_down_is_a_503_and_the_receiver_recovers(
    serve: Callable[..., Serve],
) -> None:
    server = PostgresServer()
    try:
        s = serve("--check-every", "0.2", db=server.database())
        log = s.log
        try:
            eid = str(uuid.uuid4())
            assert s.post(worker_beat(eid)).status_code == 200
            server.stop(remove=False)
            reply = s.post(worker_beat(eid))
            assert reply.status_code == 503
            assert reply.headers["Retry-After"] == "1"
            assert reply.json()["status"] == "error"
            assert reply.json()["message"].startswith("the database cannot be used: ")
            assert s.get(EXECUTIONS).status_code == 503
            assert s.get("/").status_code == 200  # the page needs no database
            wait_for(lambda: "receiver upkeep paused" in log.read_text(), 20, "upkeep log")
            server.start()
            wait_for(lambda: s.post(worker_beat(eid, crawled=2)).status_code == 200, 30, "recovery")
            detail = s.get(f"{EXECUTIONS}/{eid}").json()
            assert detail.get("beats") == 2 and detail["progress"]["crawled_urls"] == 2, detail
            wait_for(lambda: "usable again" in log.read_text(), 20, "recovery log")
            text = log.read_text()
            assert "Traceback" not in text
            assert all(len(line) < 400 for line in text.splitlines())
        finally:
            s.stop()
    finally:
        server.stop()


def test_an_unreachable_database_at_start_is_one_line_without_the_password() -> None:
    url = f"postgresql://heartbeat:hunter2@127.0.0.1:{free_port()}/nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "scrapy_heartbeat", "serve", "--port", "0", "--db", url],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"scrapy-heartbeat serve: --db postgresql://***@127.0.0.1:{url.split(':')[3]}"
    )
    assert "the database cannot be used: " in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_a_beat_the_database_refuses_costs_no_other_beat_in_its_batch(
    serve: Callable[..., Serve], postgres_server: PostgresServer
) -> None:
    s = serve(db=postgres_server.database())
    eid = str(uuid.uuid4())
    assert s.post(worker_beat(eid)).status_code == 200  # the schema exists
    with psycopg.connect(s.db, autocommit=True) as admin:
        admin.execute(
            "ALTER TABLE heartbeats ADD CONSTRAINT no_poison CHECK (container_id <> 'poison')"
        )
    answers: dict[str, int] = {}
    lock = threading.Lock()

    def post(container: str) -> None:
        reply = requests.post(
            s.url + HEARTBEAT, json=worker_beat(eid, container_id=container), timeout=30
        )
        with lock:
            answers[container] = reply.status_code

    # The writer blocks on a locked table, so the beats sent meanwhile wait
    # in its queue and are stored as one batch once the lock goes.
    with psycopg.connect(s.db) as holder:
        holder.execute("LOCK TABLE heartbeats IN ACCESS EXCLUSIVE MODE")
        first = threading.Thread(target=post, args=("first",))
        first.start()
        time.sleep(0.5)
        names = (
            [f"worker-{i}" for i in range(10)] + ["poison"] + [f"worker-{i}" for i in range(10, 20)]
        )
        threads = [threading.Thread(target=post, args=(n,)) for n in names]
        for t in threads:
            t.start()
        wait_for(lambda: _waiting_on_locks(s.db) >= 1, 10, "the writer waiting")
        time.sleep(1)
        holder.rollback()
    for t in [first, *threads]:
        t.join(60)
    assert answers.pop("poison") == 503  # never a 500; only this beat
    assert answers == {n: 200 for n in ["first", *names] if n != "poison"}
    store = open_store(s.db)
    try:
        assert store.count() == 1 + 21
    finally:
        store.close()


def _waiting_on_locks(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as watcher:
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_receivers_sessions_never_compile_queries(postgres_server: PostgresServer) -> None:
    """PostgreSQL's JIT compiles a query whose estimated cost is high; a
    window of settling is estimated far above the thresholds while it reads
    a few rows, and its compilation costs the database's CPU every round."""
    with psycopg.connect(postgres_server.url("postgres")) as plain:
        assert plain.execute("SHOW jit").fetchall() == [("on",)]  # the server's default
    store = open_store(postgres_server.database())
    try:
        assert store.read("SHOW jit") == [("off",)]
        assert store.read("SHOW statement_timeout") == [("5s",)]
    finally:
        store.close()
