"""The receiver for operators, over real HTTP: ``scrapy-heartbeat serve``
in a process of its own deciding liveness, POSTing alerts to real local
webhook servers (one healthy, one down, one that hangs), exporting
``/metrics`` (parsed with prometheus_client's own parser) and pruning old
history."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from scrapy_heartbeat.demo import spawn_receiver
from scrapy_heartbeat.store import open_store
from tests.crawl import wait_for
from tests.servers import HeartbeatServer, free_port

HEARTBEAT = "/api/v1/monitoring/heartbeat"
EXECUTIONS = "/api/v1/monitoring/executions"


@dataclass
class Serve:
    url: str
    db: str
    log: Path
    process: subprocess.Popen[str]

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return requests.post(self.url + HEARTBEAT, data=data, headers=headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def stderr(self) -> str:
        return self.log.read_text()


@pytest.fixture
def serve(tmp_path: Path, db: str) -> Iterator[Any]:
    """Starts ``serve`` on ``db`` (each backend in turn): more than one
    share it."""
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        log = tmp_path / f"serve{len(started)}.log"
        with log.open("w") as err:
            process, url = spawn_receiver(db, *args, stderr=err)
        started.append(Serve(url, db, log, process))
        return started[-1]

    yield start
    for s in started:
        s.process.terminate()
        s.process.wait(10)
        assert s.process.stdout is not None
        s.process.stdout.close()


def beat(execution_id: str, status: str = "running", crawled: int = 1, **kw: Any) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "container_id": kw.pop("container_id", "worker-1"),
        "timestamp": int(time.time()),
        "status": status,
        "progress": {"total_urls": 100, "crawled_urls": crawled, "data_items": 2 * crawled},
        **kw,
    }


def events(hook: HeartbeatServer) -> list[tuple[str, str | None, str]]:
    return [(b["execution_id"], b["old_state"], b["new_state"]) for b in hook.bodies()]


def test_alerts_reach_a_webhook_once_per_transition_while_others_are_down_or_hang(
    serve: Any,
) -> None:
    healthy, hanging = HeartbeatServer(), HeartbeatServer(behaviour="hang")
    down = f"http://127.0.0.1:{free_port()}/hook"
    try:
        s = serve(
            "--check-every", "0.2", "--lost-after", "2", "--alert-retries", "1",
            "--webhook", hanging.url + "/hook",
            "--webhook", down,
            "--webhook", healthy.url + "/hook",
        )  # fmt: skip
        died, failing, done = (str(uuid.uuid4()) for _ in range(3))
        for i in range(3):  # every 0.3 s, then silence: late, then lost
            assert s.post(beat(died, crawled=i, container_id="<!channel> & co")).status_code == 200
            time.sleep(0.3)
        assert s.post(beat(failing)).status_code == 200
        assert s.post(beat(failing, "failed")).status_code == 200
        assert s.post(beat(done, "completed", crawled=100)).status_code == 200
        wait_for(lambda: len(healthy.bodies()) >= 3, 30, "three alerts")
        time.sleep(1)  # no more should come: late and running are not alerted by default
        got = {(eid, new): old for eid, old, new in events(healthy)}
        assert len(got) == len(healthy.bodies()) == 3  # once per transition
        assert set(got) == {(died, "lost"), (failing, "failed"), (done, "completed")}
        assert got[died, "lost"] == "late"
        # Settled between its two beats, or after both.
        assert got[failing, "failed"] in (None, "running")
        lost = next(b for b in healthy.bodies() if b["new_state"] == "lost")
        assert lost["status"] == "running"  # what the client said stays as it said it
        assert lost["progress"]["crawled_urls"] == 2
        assert lost["text"].startswith(f"scrapy-heartbeat: execution {died} is LOST (was late)")
        assert "&lt;!channel&gt; &amp; co" in lost["text"] and "<!channel>" not in lost["text"]
        assert "2/100 URLs" in lost["text"]
        uuid.UUID(lost["event_id"])
        assert {r.path for r in healthy.received} == {"/hook"}

        # The hanging webhook got its first event and holds it; beats are
        # still answered, and stored.
        assert len(hanging.received) >= 1
        assert s.post(beat(died, crawled=5)).status_code == 200
        assert s.get(f"{EXECUTIONS}/{died}").json()["liveness"] == "running"  # revived

        # The webhook that is down: one line per event, after its retries.
        wait_for(lambda: s.stderr().count(f"alert to {down} not delivered") >= 3, 30, "log")
        lines = [line for line in s.stderr().splitlines() if down in line]
        assert all("after 2 attempt(s): ConnectionError" in line for line in lines), lines
        assert s.stderr().count("Traceback") == 0
    finally:
        healthy.stop()
        hanging.stop()


def test_alert_on_chooses_the_transitions(serve: Any) -> None:
    hook = HeartbeatServer()
    try:
        s = serve(
            "--check-every", "0.2", "--stall-after", "0.6", "--alert-on", "stalled,running",
            "--webhook", hook.url,
        )  # fmt: skip
        eid = str(uuid.uuid4())
        for _ in range(8):  # beating, counters stuck
            s.post(beat(eid, crawled=3))
            time.sleep(0.2)
        wait_for(lambda: (eid, "running", "stalled") in events(hook), 20, "stalled alert")
        assert (
            s.get(EXECUTIONS, params={"status": "stalled"}).json()["executions"][0]["execution_id"]
            == eid
        )
        s.post(beat(eid, crawled=4))
        wait_for(lambda: (eid, "stalled", "running") in events(hook), 20, "recovery alert")
        s.post(beat(eid, "completed", crawled=4))
        time.sleep(1)
        assert [e for e in events(hook) if e[2] == "completed"] == []
        assert (eid, None, "running") in events(hook)
    finally:
        hook.stop()


def test_bad_alert_options_name_the_fix() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scrapy_heartbeat", "serve", "--alert-on", "lost,dead"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--alert-on: unknown state 'dead'; use a comma-separated list of running," in (
        result.stderr
    )


def test_liveness_filters_in_the_read_api(serve: Any) -> None:
    s = serve("--check-every", "0.2", "--lost-after", "1")
    quiet, alive = str(uuid.uuid4()), str(uuid.uuid4())
    s.post(beat(quiet))
    s.post(beat(quiet))
    wait_for(
        lambda: (
            [e["execution_id"] for e in s.get(EXECUTIONS + "?status=lost").json()["executions"]]
            == [quiet]
        ),
        20,
        "lost",
    )
    s.post(beat(alive))
    listed = {e["execution_id"]: e for e in s.get(EXECUTIONS).json()["executions"]}
    assert listed[quiet]["liveness"] == "lost" and listed[quiet]["status"] == "running"
    assert listed[quiet]["stale"] is True
    assert listed[alive]["liveness"] == "running"
    detail = s.get(f"{EXECUTIONS}/{quiet}").json()
    assert detail["containers"][0]["liveness"] == "lost"
    refused = s.get(EXECUTIONS + "?status=dead")
    assert refused.status_code == 400
    assert "late, lost, stalled, stale, active" in refused.json()["message"]


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any, **labels: str) -> list[float]:
    return [s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_scraped_and_parsed(serve: Any, db: str) -> None:
    old = str(uuid.uuid4())
    store = open_store(db)
    store.add(beat(old, "completed"), time.time() - 7200)  # finished 2 hours ago
    store.close()
    s = serve()
    eid = str(uuid.uuid4())
    assert s.post(beat(eid, crawled=45)).status_code == 200
    assert s.post({**beat(eid), "timestamp": "soon"}).status_code == 400
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


def test_metrics_need_the_token_when_there_is_one(serve: Any) -> None:
    s = serve("--token", "s3cret")
    assert s.get("/metrics").status_code == 401
    reply = s.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert reply.status_code == 200
    assert "heartbeat_receiver_beats_accepted_total 0.0" in reply.text


def test_old_history_is_deleted_and_the_latest_state_stays(serve: Any, db: str) -> None:
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    store = open_store(db)
    now = time.time()
    for i in range(2500):  # 20 days ago: several batches
        store.add(beat(old, crawled=i), now - 20 * 86400 + i)
    for i in range(3):
        store.add(beat(recent, crawled=i), now - 86400 + i)
    store.close()
    s = serve("--keep-days", "14")
    wait_for(lambda: len(s.get(f"{EXECUTIONS}/{old}").json()["history"]) == 0, 30, "prune")
    detail = s.get(f"{EXECUTIONS}/{old}").json()
    assert detail["beats"] == 2500 and detail["progress"]["crawled_urls"] == 2499
    assert len(s.get(f"{EXECUTIONS}/{recent}").json()["history"]) == 3
    wait_for(lambda: "deleted 2500 heartbeats older than 14 days" in s.stderr(), 10, "log")


def test_keep_days_0_keeps_everything(serve: Any, db: str) -> None:
    old = str(uuid.uuid4())
    store = open_store(db)
    store.add(beat(old), time.time() - 400 * 86400)
    store.close()
    s = serve("--keep-days", "0", "--check-every", "0.1")
    time.sleep(1)
    assert len(s.get(f"{EXECUTIONS}/{old}").json()["history"]) == 1
