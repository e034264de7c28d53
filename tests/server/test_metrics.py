"""``GET /metrics`` of ``scrapy-heartbeat serve``, parsed with
prometheus_client's own parser."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from scrapy_heartbeat.server import open_store
from tests.server.beats import worker_beat
from tests.server.serving import EXECUTIONS, Serve


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any, **labels: str) -> list[float]:
    return [s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_scraped_and_parsed(serve: Callable[..., Serve], db: str) -> None:
    old = str(uuid.uuid4())
    store = open_store(db)
    store.add(worker_beat(old, "completed"), time.time() - 7200)  # finished 2 hours ago
    store.close()
    s = serve(db=db)
    eid = str(uuid.uuid4())
    assert s.post(worker_beat(eid, crawled=45)).status_code == 200
    assert s.post({**worker_beat(eid), "timestamp": "soon"}).status_code == 400
    assert (
        s.post(b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code
        == 415
    )
    assert s.get(EXECUTIONS).status_code == 200  # not a beat: not counted

    reply = s.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = families(reply.text)
    accepted = found["heartbeat_receiver_beats_accepted"]
    assert [x.value for x in accepted.samples if x.name.endswith("_total")] == [1.0]
    rejected = found["heartbeat_receiver_beats_rejected"]
    totals = {x.labels["reason"]: x.value for x in rejected.samples if x.name.endswith("_total")}
    assert totals == {
        "invalid": 1.0,
        "not_json": 1.0,
        "unauthorized": 0.0,
        "method": 0.0,
        "too_large": 0.0,
        "unavailable": 0.0,
    }
    histogram = found["heartbeat_receiver_reply_seconds"]
    count = [x.value for x in histogram.samples if x.name.endswith("_count")]
    assert count == [2.0]  # the 415 was answered before the body was read
    assert samples(found["heartbeat_execution_crawled_urls"], execution_id=eid) == [45.0]
    assert samples(found["heartbeat_execution_data_items"], execution_id=eid) == [90.0]
    assert samples(found["heartbeat_execution_percentage"]) == []  # this beat sent none
    assert samples(found["heartbeat_execution_liveness"], execution_id=eid, liveness="running") == [
        1.0
    ]
    assert samples(found["heartbeat_execution_containers"], execution_id=eid) == [1.0]
    since = samples(found["heartbeat_execution_seconds_since_last_beat"], execution_id=eid)
    assert 0 <= since[0] < 60
    exported = {x.labels.get("execution_id") for x in found["heartbeat_execution_liveness"].samples}
    assert exported == {eid}  # the one finished two hours ago is not


def test_metrics_need_the_token_when_there_is_one(serve: Callable[..., Serve], db: str) -> None:
    s = serve("--token", "s3cret", db=db)
    assert s.get("/metrics").status_code == 401
    reply = s.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert reply.status_code == 200
    assert "heartbeat_receiver_beats_accepted_total 0.0" in reply.text


def test_series_are_bounded_by_the_cap(serve: Callable[..., Serve], db: str) -> None:
    """Per-execution series for the newest unfinished executions up to
    ``--metrics-max-executions``; every execution counted by state."""
    now = time.time()
    running = [str(uuid.uuid4()) for _ in range(5)]
    store = open_store(db)
    for n, eid in enumerate(running):
        store.add(worker_beat(eid), now - n)
    for _ in range(2):
        store.add(worker_beat(str(uuid.uuid4()), "completed"), now)
    store.close()
    s = serve("--metrics-max-executions", "3", db=db)
    found = families(s.get("/metrics").text)
    exported = {x.labels["execution_id"] for x in found["heartbeat_execution_liveness"].samples}
    assert exported == set(running[:3])
    assert samples(found["heartbeat_executions_not_exported"]) == [2.0]
    by_state = {
        (x.labels["status"], x.labels["liveness"]): x.value
        for x in found["heartbeat_executions"].samples
    }
    assert by_state == {("running", "running"): 5.0, ("completed", "completed"): 2.0}
