"""The executions list in pages: ``?limit=`` and ``?cursor=`` on a real
``serve``, liveness filters that decide a bounded number of rows, counts
from ``/api/v1/monitoring/summary``, and reads that never hold up beats."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from scrapy_heartbeat.server import open_store
from scrapy_heartbeat.server.listing import (
    DECIDED,
    MAX_LIMIT,
    decode_cursor,
    encode_cursor,
    page,
    unfinished,
)
from scrapy_heartbeat.server.resource import STATUS_FILTERS
from scrapy_heartbeat.server.schema import ExecutionRow
from tests.server.beats import worker_beat
from tests.server.serving import EXECUTIONS, Serve

SUMMARY = "/api/v1/monitoring/summary"


def seed(db: str, statuses: list[str], gap: float = 1.0) -> list[str]:
    """One execution per status, the first the newest, ``gap`` s apart;
    their ids, newest first."""
    ids = [str(uuid.uuid4()) for _ in statuses]
    now = time.time()
    store = open_store(db)
    try:
        for n, (eid, status) in enumerate(zip(ids, statuses, strict=True)):
            store.add(worker_beat(eid, status), now - gap * (n + 1))
    finally:
        store.close()
    return ids


def test_pages_follow_the_cursor(serve: Callable[..., Serve], db: str) -> None:
    statuses = ["running", "completed"] * 4 + ["running"]
    ids = seed(db, statuses)
    s = serve(db=db)
    seen, cursor, pages = [], None, 0
    while True:
        reply = s.get(EXECUTIONS, params={"limit": 4, **({"cursor": cursor} if cursor else {})})
        assert reply.status_code == 200, reply.text
        found = reply.json()
        assert len(found["executions"]) <= 4
        seen += [e["execution_id"] for e in found["executions"]]
        pages += 1
        cursor = found["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (ids, 3)
    done = s.get(EXECUTIONS, params={"status": "completed", "limit": 3}).json()
    assert [e["execution_id"] for e in done["executions"]] == ids[1::2][:3]
    rest = s.get(EXECUTIONS, params={"status": "completed", "cursor": done["next_cursor"]}).json()
    assert [e["execution_id"] for e in rest["executions"]] == ids[1::2][3:]
    assert rest["next_cursor"] is None
    # A beat moves its execution to the first page; the cursor still holds.
    second = s.get(EXECUTIONS, params={"limit": 2}).json()
    assert s.post(worker_beat(ids[0], crawled=2)).status_code == 200
    after = s.get(EXECUTIONS, params={"cursor": second["next_cursor"]}).json()
    assert [e["execution_id"] for e in after["executions"]] == ids[2:]


def test_summary_counts_every_execution(serve: Callable[..., Serve], db: str) -> None:
    seed(db, ["running"] * 3 + ["completed"] * 2 + ["paused"] + ["failed"])
    s = serve(db=db)
    counts = s.get(SUMMARY).json()
    assert counts["total"] == 7
    assert counts["active"] == 4
    assert counts["by_status"] == {"running": 3, "completed": 2, "paused": 1, "failed": 1}
    assert sum(counts["by_liveness"].values()) == 7
    assert counts["by_liveness"]["completed"] == 2


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": str(MAX_LIMIT + 1)},
        {"limit": "1.5"},
        {"limit": "９"},
        {"limit": "9" * 40},
    ],
)
def test_a_bad_limit_is_one_line(serve: Callable[..., Serve], query: dict[str, str]) -> None:
    reply = serve().get(EXECUTIONS, params=query)
    assert reply.status_code == 400
    assert reply.json()["message"] == f"query 'limit' must be a whole number from 1 to {MAX_LIMIT}"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "!!!!",
        _b64("nan 4e664b6a-e955-45be-8b64-a54858ebe403"),
        _b64("inf 69ef517b-4b24-4524-80c1-b791c88533eb"),
        _b64("1.5 not-an-id"),
        _b64("1.5 4DA0E707-7D89-4783-8BDA-AA4574E0576F"),
        _b64("1.5"),
        "%00",
    ],
)
def test_a_bad_cursor_is_one_line(serve: Callable[..., Serve], cursor: str) -> None:
    reply = serve().get(EXECUTIONS, params={"cursor": cursor})
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("query 'cursor' must be a next_cursor")


@given(st.text(max_size=200))
def test_any_cursor_text_decodes_or_is_refused(text: str) -> None:
    try:
        last_seen, execution_id = decode_cursor(text)
    except ValueError:
        return
    assert uuid.UUID(execution_id)
    assert decode_cursor(encode_cursor(_row(last_seen, execution_id))) == (last_seen, execution_id)


@given(st.floats(allow_nan=False, allow_infinity=False), st.uuids())
def test_every_cursor_made_reads_back(last_seen: float, execution_id: uuid.UUID) -> None:
    row = _row(last_seen, str(execution_id))
    assert decode_cursor(encode_cursor(row)) == (last_seen, str(execution_id))


def _row(last_seen: float, execution_id: str) -> ExecutionRow:
    return ExecutionRow(
        execution_id, "c", "running", None, 0.0, last_seen, 1, 0.0, 0.0, None, 1, None, None
    )


def test_a_liveness_filter_decides_a_bounded_number_of_rows(db: str) -> None:
    """29 beating, one silent for 20 minutes: pages of ``stale`` decide 7
    rows each, so most are empty, with a cursor to go on; ``lost`` reads
    only the rows silent for long enough."""
    now = time.time()
    store = open_store(db)
    store.heard_since = now - 3600  # listening all along: no grace after a start
    try:
        ids = [str(uuid.uuid4()) for _ in range(30)]
        for n, eid in enumerate(ids):
            at = now - (1200 if n == 29 else n * 0.01)
            store.add(worker_beat(eid), at - 5)
            store.add(worker_beat(eid), at)
        found, pages, cursor = [], 0, None
        while True:
            result = page(store, "stale", limit=10, after=cursor, now=now, budget=7)
            found += [e["execution_id"] for e in result.executions]
            pages += 1
            if result.next_cursor is None:
                break
            cursor = decode_cursor(result.next_cursor)
        assert found == [ids[29]]
        assert pages == 5  # 30 rows, 7 at a time
        lost = page(store, "lost", limit=10, now=now, budget=2)
        assert ([e["execution_id"] for e in lost.executions], lost.next_cursor) == ([ids[29]], None)
    finally:
        store.close()


def test_every_page_is_read_in_the_order_of_an_index(tmp_path: Path) -> None:
    """Each query a page or the metrics' executions make is answered by
    walking an index in the order asked for: never by reading every match
    (100,000 executions, with two subqueries each) to sort them first."""
    store = open_store(str(tmp_path / "plan.sqlite3"))
    issued: list[tuple[str, tuple[Any, ...]]] = []
    reads = store.read

    def recorded(query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        issued.append((query, args))
        return reads(query, args)

    store.read = recorded  # type: ignore[method-assign]
    try:
        for status in (None, *STATUS_FILTERS):
            page(store, status)
        page(store, None, after=(time.time(), str(uuid.uuid4())))
        unfinished(store, time.time() - 3600, 1000)
        pages = [(q, a) for q, a in issued if "ORDER BY e.last_seen DESC" in q]
        # A liveness filter also asks where its window of rows ends.
        assert len(pages) == len(STATUS_FILTERS) + 3 + len(DECIDED)
        for query, args in pages:
            plan = " / ".join(
                row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + query, args)
            )
            # Sorting what a window of at most a page's budget gave is bounded.
            assert "TEMP B-TREE" not in plan or "CO-ROUTINE w" in plan, (query, plan)
            assert "SCAN e" not in plan, (query, plan)
    finally:
        store.close()


def test_a_slow_read_does_not_hold_up_beats(serve: Callable[..., Serve]) -> None:
    """SQLite: an execution with 3,000,000 containers takes a second or more
    to read (its latest 1,000 sorted out of them all); a beat sent meanwhile
    is answered before that read is (its reply's head, sent once the read is
    done). No settling round meanwhile: on SQLite a round's windows run on
    the reactor thread, and one holding that execution takes as long."""
    s = serve("--check-every", "3600")
    eid = str(uuid.uuid4())
    assert s.post(worker_beat(eid)).status_code == 200
    now = time.time()
    with sqlite3.connect(s.db) as db:
        db.executemany(
            "INSERT INTO containers (execution_id, container_id, status, first_seen, "
            "last_seen, beats) VALUES (?, ?, 'running', ?, ?, 1)",
            ((eid, f"w{n}", now, now) for n in range(3_000_000)),
        )
    finished: list[str] = []

    def read() -> None:
        with requests.get(f"{s.url}{EXECUTIONS}/{eid}", timeout=120, stream=True) as reply:
            finished.append(f"read {reply.status_code}")

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.1)  # the read has begun
    assert s.post(worker_beat(eid, crawled=2)).status_code == 200
    finished.append("beat")
    reader.join(120)
    assert finished == ["beat", "read 200"]
