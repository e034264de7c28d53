"""The reference receiver over real HTTP: ``scrapy-heartbeat serve`` in a
process of its own, on 127.0.0.1 port 0."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import EXECUTION_ID
from tests.crawl import run_crawl
from tests.server.beats import beat
from tests.server.serving import EXECUTIONS, HEARTBEAT, Serve
from tests.servers import SiteServer


@pytest.fixture
def receiver(serve: Callable[..., Serve], db: str) -> Serve:
    """On each backend: the contract tests run on both."""
    return serve(db=db)


def test_spec_example_is_accepted_and_stored(receiver: Serve) -> None:
    response = receiver.post(beat())
    assert response.status_code == 200
    reply = response.json()
    assert reply["status"] == "ok"
    assert reply["execution_id"] == EXECUTION_ID
    assert abs(reply["timestamp"] - time.time()) < 5
    [execution] = receiver.get(EXECUTIONS).json()["executions"]
    assert execution["status"] == "running"
    assert execution["progress"]["current_stage"] == "爬取中 (45/100)"
    assert execution["container_id"] == "crawler-container-abc123"
    assert receiver.rows() == 1


def test_latency_is_computed_from_the_client_timestamp(receiver: Serve) -> None:
    receiver.post(beat(timestamp=int(time.time()) - 100))
    execution = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()
    assert 99 <= execution["latency_seconds"] <= 103
    assert 99 <= execution["history"][0]["latency_seconds"] <= 103


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (beat(execution_id="not-a-uuid"), "Invalid execution_id format"),
        (beat(execution_id=12), "Invalid execution_id format"),
        (beat(execution_id=...), "missing required field 'execution_id'"),
        (beat(container_id=...), "missing required field 'container_id'"),
        (beat(timestamp=...), "missing required field 'timestamp'"),
        (beat(container_id=""), "field 'container_id' must be a string"),
        (beat(container_id="a\x00b"), "field 'container_id' must not contain a NUL character"),
        (beat(timestamp="1640995200"), "field 'timestamp' must be an integer of unix seconds"),
        (beat(timestamp=True), "field 'timestamp' must be an integer of unix seconds"),
        (beat(timestamp=1.5), "field 'timestamp' must be an integer of unix seconds"),
        (beat(status="done"), "field 'status' must be one of running, paused, completed, failed"),
        (beat(progress=[1, 2]), "field 'progress' must be an object"),
        (beat(progress={"total_urls": "100"}), "field 'progress.total_urls'"),
        (beat(progress={"crawled_urls": -1}), "field 'progress.crawled_urls'"),
        (beat(progress={"percentage": 101}), "field 'progress.percentage'"),
        (beat(progress={"runtime_seconds": "long"}), "field 'progress.runtime_seconds'"),
        (beat(progress={"current_url": 5}), "field 'progress.current_url'"),
        ([beat()], "body must be a JSON object"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(receiver: Serve, body: Any, message: str) -> None:
    response = receiver.post(body)
    assert response.status_code == 400
    reply = response.json()
    assert reply["status"] == "error"
    assert message in reply["message"]
    assert receiver.rows() == 0


def test_a_nul_inside_progress_is_stored_and_read_back(receiver: Serve) -> None:
    body = beat(progress={**beat()["progress"], "current_url": "https://e.com/a\x00b"})
    assert receiver.post(body).status_code == 200
    detail = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()
    assert detail["progress"]["current_url"] == "https://e.com/a\x00b"


def test_status_and_progress_are_optional(receiver: Serve) -> None:
    assert receiver.post(beat(status=..., progress=...)).status_code == 200
    assert receiver.get(EXECUTIONS).json()["executions"][0]["status"] == "running"


def test_malformed_json(receiver: Serve) -> None:
    response = receiver.post(b'{"execution_id": ')
    assert (response.status_code, response.json()["message"]) == (400, "body is not valid JSON")


def test_wrong_content_type(receiver: Serve) -> None:
    response = receiver.post(json.dumps(beat()), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "Content-Type" in response.json()["message"]


def test_body_over_the_limit(receiver: Serve) -> None:
    response = receiver.post(beat(container_id="x" * 70_000))
    assert response.status_code == 413
    assert receiver.rows() == 0


def test_unknown_path_and_wrong_method(receiver: Serve) -> None:
    assert receiver.get("/api/v1/nope").status_code == 404
    response = receiver.get(HEARTBEAT)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["status"] == "error"
    assert requests.delete(receiver.url + EXECUTIONS, timeout=5).status_code == 405


def test_read_api_filters_and_history(receiver: Serve) -> None:
    other = str(uuid.uuid4())
    receiver.post(beat())
    receiver.post(beat(status="completed"))
    receiver.post(beat(execution_id=other))
    completed = receiver.get(EXECUTIONS, params={"status": "completed"}).json()["executions"]
    assert [e["execution_id"] for e in completed] == [EXECUTION_ID]
    running = receiver.get(EXECUTIONS, params={"status": "running"}).json()["executions"]
    assert [e["execution_id"] for e in running] == [other]
    detail = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()
    assert [h["status"] for h in detail["history"]] == ["running", "completed"]
    assert detail["beats"] == 2
    assert detail["finished"] is True
    assert receiver.get(f"{EXECUTIONS}/{uuid.uuid4()}").status_code == 404
    assert receiver.get(f"{EXECUTIONS}/nope").status_code == 400
    assert receiver.get(EXECUTIONS, params={"status": "bogus"}).status_code == 400


def test_containers_of_one_execution_are_kept_apart(receiver: Serve) -> None:
    """Workers of one execution: the execution's row is its latest beat,
    each container keeps its own latest state, history says who sent what."""

    def progress(crawled: int) -> dict[str, Any]:
        return {**beat()["progress"], "crawled_urls": crawled, "total_urls": 100}

    receiver.post(beat(container_id="w0", progress=progress(10)))
    receiver.post(beat(container_id="w1", progress=progress(20)))
    time.sleep(0.3)
    receiver.post(beat(container_id="w0", progress=progress(30)))
    time.sleep(0.3)
    receiver.post(beat(container_id="w0", progress=progress(40)))
    time.sleep(0.4)
    receiver.post(beat(container_id="w1", status="completed", progress=progress(100)))
    listed = receiver.get(EXECUTIONS).json()["executions"]
    assert [(e["container_count"], e["container_id"]) for e in listed] == [(2, "w1")]
    detail = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()
    assert detail["status"] == "completed"
    assert detail["progress"]["crawled_urls"] == 100
    containers = {c["container_id"]: c for c in detail["containers"]}
    assert set(containers) == {"w0", "w1"}
    assert containers["w0"]["status"] == "running"
    assert containers["w0"]["progress"]["crawled_urls"] == 40
    assert containers["w0"]["beats"] == 3
    assert containers["w1"]["status"] == "completed"
    assert containers["w1"]["stale"] is False
    assert containers["w0"]["seconds_since_last_beat"] >= 0.4
    assert [h["container_id"] for h in detail["history"]] == ["w0", "w1", "w0", "w0", "w1"]
    # w0: silent for over twice its observed interval (about 0.3 s; more on
    # a loaded machine, whose beats arrive late)
    w0 = containers["w0"]
    time.sleep(max(0.0, 2 * w0["interval_seconds"] - w0["seconds_since_last_beat"]) + 0.1)
    again = {
        c["container_id"]: c
        for c in receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()["containers"]
    }
    assert again["w0"]["stale"] is True


def test_staleness(receiver: Serve) -> None:
    finished = str(uuid.uuid4())
    for _ in range(2):
        receiver.post(beat())
        receiver.post(beat(execution_id=finished, status="completed"))
        time.sleep(0.3)
    assert receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()["stale"] is False
    time.sleep(0.5)  # over twice the observed 0.3 s interval
    assert receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()["stale"] is True
    assert receiver.get(f"{EXECUTIONS}/{finished}").json()["stale"] is False
    stale = receiver.get(EXECUTIONS, params={"status": "stale"}).json()["executions"]
    assert [e["execution_id"] for e in stale] == [EXECUTION_ID]


def test_token(serve: Callable[..., Serve]) -> None:
    r = serve("--token", "s3cret")
    assert r.post(beat()).status_code == 401
    assert r.post(beat(), headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert r.get(EXECUTIONS).status_code == 401
    ok = r.post(beat(), headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert r.get(EXECUTIONS, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert r.rows() == 1


def test_dashboard_is_served(receiver: Serve) -> None:
    page = receiver.get("/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "textContent" in page.text


def test_crawl_against_serve_stores_the_final_numbers(
    receiver: Serve, pages_site: SiteServer
) -> None:
    result = run_crawl(
        "tests.spiders.PagesSpider",
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": receiver.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            "HEARTBEAT_INTERVAL": 0.2,
            "HEARTBEAT_MIN_INTERVAL": 0.1,
        },
        args={"site": pages_site.url, "pages": "25"},
    )
    assert result.returncode == 0
    stored = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()
    assert stored["status"] == "completed"
    p = stored["progress"]
    assert p["total_urls"] == p["crawled_urls"] == p["successful_urls"] == 25
    assert p["data_items"] == result.stats["item_scraped_count"] == 25
    assert stored["beats"] == result.stats["heartbeat/ok"] == receiver.rows()


def test_the_docs_name_every_field_the_read_api_answers(receiver: Serve) -> None:
    """docs/receiver.rst's reference of the read API: each field of an
    execution, a container, a beat of the history and the summary has a
    row of its own there."""
    for container in ("worker-1", "worker-2"):
        assert receiver.post(beat(container_id=container)).status_code == 200
    one = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()
    listed = receiver.get(EXECUTIONS).json()
    summary = receiver.get("/api/v1/monitoring/summary").json()
    docs = (Path(__file__).resolve().parents[2] / "docs" / "receiver.rst").read_text("utf-8")
    reference = docs[docs.index("\nThe read API\n") : docs.index("\nWhat it refuses\n")]
    tables = reference.split(".. list-table:: ")[1:]
    titles = [table.splitlines()[0] for table in tables]
    assert [t.split(" (")[0] for t in titles] == [
        "An execution",
        "A container",
        "A beat of the history",
        "The summary",
    ]
    answered = [one, one["containers"][0], one["history"][0], summary]
    for table, fields, title in zip(tables, answered, titles, strict=True):
        documented = set(re.findall(r"``(\w+)``", "\n".join(
            line for line in table.splitlines() if line.startswith("   * - ")
            or line.startswith("       ``")
        )))  # fmt: skip
        assert set(fields) <= documented, (title, set(fields) - documented)
    assert set(listed) == {"executions", "next_cursor"}
    assert set(listed["executions"][0]) == set(one) - {"containers", "history"}
