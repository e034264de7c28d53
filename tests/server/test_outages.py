"""A database outage in the receiver's log: one WARNING when the first beat
is refused, one line when a beat is stored again, however many beats were
refused in between; on SQLite held by another process and on a real
PostgreSQL stopped and started again."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable

import requests

from tests.crawl import wait_for
from tests.server.beats import worker_beat
from tests.server.postgres_server import PostgresServer
from tests.server.serving import Serve

REFUSED = "WARNING receiver: the database cannot be used"
RECOVERED = "INFO receiver: the database is usable again after"
BEATS = 60


def refused_beats(s: Serve, execution_id: str) -> list[int]:
    codes = []
    for n in range(BEATS):
        try:
            codes.append(s.post(worker_beat(execution_id, crawled=n + 2)).status_code)
        except requests.ConnectionError:  # PostgreSQL: never expected, but counted
            codes.append(0)
    return codes


def retried_until_stored(s: Serve, execution_id: str) -> list[int]:
    """A beat sent again until stored (a restarted PostgreSQL may refuse
    the first); each answer's code."""
    codes: list[int] = []
    while not codes or codes[-1] != 200:
        assert len(codes) < 100, codes
        codes.append(s.post(worker_beat(execution_id, crawled=100)).status_code)
    return codes


def assert_logged_once(s: Serve, refused: int) -> None:
    wait_for(lambda: RECOVERED in s.stderr(), 20, "the line saying the outage ended")
    lines = s.stderr().splitlines()
    assert sum(REFUSED in line for line in lines) == 1, lines
    assert sum(RECOVERED in line for line in lines) == 1, lines
    [ended] = [line for line in lines if RECOVERED in line]
    assert f" {refused} request(s) refused meanwhile" in ended
    # Besides ours, at most upkeep's own one line per outage.
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) - 1 == sum("receiver upkeep paused" in line for line in warnings) <= 1


def test_sqlite_held_by_another_process_is_one_warning_per_outage(
    serve: Callable[..., Serve],
) -> None:
    s = serve("--check-every", "3600")
    eid = str(uuid.uuid4())
    assert s.post(worker_beat(eid)).status_code == 200
    holder = sqlite3.connect(s.db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        codes = refused_beats(s, eid)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert codes == [503] * BEATS
    assert s.post(worker_beat(eid, crawled=100)).status_code == 200
    assert_logged_once(s, BEATS)


def test_postgresql_stopped_and_started_is_one_warning_per_outage(
    serve: Callable[..., Serve],
) -> None:
    server = PostgresServer()
    try:
        s = serve("--check-every", "3600", db=server.database())
        eid = str(uuid.uuid4())
        assert s.post(worker_beat(eid)).status_code == 200
        server.stop(remove=False)
        codes = refused_beats(s, eid)
        server.start()
        codes += retried_until_stored(s, eid)
        assert codes[:BEATS] == [503] * BEATS
        assert_logged_once(s, len(codes) - 1)
    finally:
        server.stop()
