"""Pruning old history, by ``scrapy-heartbeat serve`` in a process of its
own: the latest state stays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

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
    s = serve("--keep-days", "14", db=db)
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
    s = serve("--keep-days", "0", "--check-every", "0.1", db=db)
    time.sleep(1)
    assert len(s.get(f"{EXECUTIONS}/{old}").json()["history"]) == 1
