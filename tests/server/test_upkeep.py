"""Pruning and thinning old history, by ``scrapy-heartbeat serve`` in a
process of its own and by the store on each backend: the latest state
stays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from scrapy_heartbeat.server import open_store
from tests.crawl import wait_for
from tests.server.beats import worker_beat
from tests.server.serving import EXECUTIONS, Serve


def test_old_history_is_deleted_and_the_latest_state_stays(
    serve: Callable[..., Serve], db: str
) -> None:
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    store = open_store(db)
    now = time.time()
    for i in range(2500):  # 20 days ago: several batches
        store.add(worker_beat(old, crawled=i), now - 20 * 86400 + i)
    for i in range(3):
        store.add(worker_beat(recent, crawled=i), now - 86400 + i)
    store.close()
    s = serve("--keep-days", "14", "--thin-after", "0", db=db)
    wait_for(lambda: len(s.get(f"{EXECUTIONS}/{old}").json()["history"]) == 0, 30, "prune")
    detail = s.get(f"{EXECUTIONS}/{old}").json()
    assert detail["beats"] == 2500 and detail["progress"]["crawled_urls"] == 2499
    assert len(s.get(f"{EXECUTIONS}/{recent}").json()["history"]) == 3
    wait_for(lambda: "deleted 2500 heartbeats older than 14 days" in s.stderr(), 10, "log")


def test_keep_days_0_keeps_everything(serve: Callable[..., Serve], db: str) -> None:
    old = str(uuid.uuid4())
    store = open_store(db)
    store.add(worker_beat(old), time.time() - 400 * 86400)
    store.close()
    s = serve("--keep-days", "0", "--thin-after", "0", "--check-every", "0.1", db=db)
    time.sleep(1)
    assert len(s.get(f"{EXECUTIONS}/{old}").json()["history"]) == 1


def test_old_history_is_thinned_to_one_beat_per_bucket(db: str) -> None:
    """Two containers beating every 10 s for an hour, two days ago, then
    for a minute now: the old hour keeps one beat per container per five
    minutes, and every beat that is not ``running``; the recent minute
    stays whole; the latest state is untouched."""
    store = open_store(db)
    try:
        eid = str(uuid.uuid4())
        now = time.time()
        old = now - 2 * 86400 - 3600
        for i in range(360):
            for container in ("a", "b"):
                status = "paused" if (container, i) == ("a", 100) else "running"
                store.add(_beat(eid, container, status, i), old + 10 * i)
        for i in range(6):
            store.add(_beat(eid, "a", "running", 1000 + i), now - 60 + 10 * i)
        assert store.count() == 726
        after = 0
        while (step := store.thin(after, now - 86400, 300.0, batch=97)) is not None:
            after = step
        history = store.history(eid, limit=10_000)
        recent = [h for h in history if h["progress"]["crawled_urls"] >= 1000]
        thinned = [h for h in history if h["progress"]["crawled_urls"] < 1000]
        assert len(recent) == 6
        # 3,600 s in 300 s buckets: 12 or 13 per container (the hour need
        # not start on a bucket's edge), a bucket split by a batch's edge
        # keeping two, and the paused beat.
        per_container = {c: [h for h in thinned if h["container_id"] == c] for c in "ab"}
        for container, rows in per_container.items():
            assert 12 <= len(rows) <= 13 + 360 * 2 // 97 + 1, (container, len(rows))
        assert any(h["status"] == "paused" for h in per_container["a"])
        found = store.execution(eid, now)
        assert found is not None and found["progress"]["crawled_urls"] == 1005
        assert found["beats"] == 726
    finally:
        store.close()


def test_thinning_waits_for_rows_old_enough(db: str) -> None:
    store = open_store(db)
    try:
        eid = str(uuid.uuid4())
        now = time.time()
        for i in range(30):
            store.add(_beat(eid, "a", "running", i), now - 300 + 10 * i)
        assert store.thin(0, now - 86400, 300.0) is None
        assert store.count() == 30
    finally:
        store.close()


def test_serve_thins_old_history(serve: Callable[..., Serve], db: str) -> None:
    eid = str(uuid.uuid4())
    store = open_store(db)
    now = time.time()
    for i in range(120):  # every 10 s for 20 minutes, two days ago
        store.add(worker_beat(eid, crawled=i), now - 2 * 86400 + 10 * i)
    store.close()
    s = serve(db=db)
    wait_for(lambda: len(s.get(f"{EXECUTIONS}/{eid}").json()["history"]) <= 6, 30, "thinning")
    assert s.get(f"{EXECUTIONS}/{eid}").json()["progress"]["crawled_urls"] == 119


def _beat(eid: str, container: str, status: str, crawled: int) -> dict[str, Any]:
    return {
        "execution_id": eid,
        "container_id": container,
        "timestamp": int(time.time()),
        "status": status,
        "progress": {"crawled_urls": crawled},
    }
