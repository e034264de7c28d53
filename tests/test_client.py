"""HeartbeatClient against real servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from scrapy_heartbeat import HeartbeatClient
from scrapy_heartbeat.settings import ConfigError
from tests.conftest import EXECUTION_ID
from tests.servers import HeartbeatServer, free_port


def client(url: str, **kwargs: object) -> HeartbeatClient:
    return HeartbeatClient(url, EXECUTION_ID, "container-1", **kwargs)  # type: ignore[arg-type]


def test_ok(heartbeat_server: HeartbeatServer) -> None:
    with client(heartbeat_server.url + "/") as c:
        result = c.send("running", {"total_urls": 1})
    assert result.ok and result.outcome == "ok" and result.status_code == 200
    [received] = heartbeat_server.received
    assert received.path == "/api/v1/monitoring/heartbeat"
    assert received.body["progress"] == {"total_urls": 1}
    assert received.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("behaviour", "outcome", "retryable", "message"),
    [
        ("status_error", "rejected", False, "Invalid execution_id format"),
        ("http:400", "rejected", False, "test 400"),
        ("http:401", "rejected", False, "test 401"),
        ("http:500", "failed", True, "test 500"),
        ("http:503", "failed", True, "test 503"),
        ("invalid_json", "failed", True, "not JSON"),
        ("reset", "failed", True, "connection"),
    ],
)
def test_server_answers(behaviour: str, outcome: str, retryable: bool, message: str) -> None:
    server = HeartbeatServer(behaviour=behaviour)
    try:
        result = client(server.url).send()
    finally:
        server.stop()
    assert (result.outcome, result.retryable) == (outcome, retryable)
    assert message in result.message


def test_refused() -> None:
    result = client(f"http://127.0.0.1:{free_port()}").send()
    assert (result.outcome, result.message, result.retryable) == (
        "failed",
        "connection refused",
        True,
    )


def test_timeout_is_not_retryable() -> None:
    server = HeartbeatServer(behaviour="hang")
    try:
        result = client(server.url, timeout=0.3).send()
    finally:
        server.stop()
    assert (result.outcome, result.retryable) == ("failed", False)
    assert result.message == "no complete reply within 0.3s"


def test_headers_are_sent_and_never_in_messages() -> None:
    server = HeartbeatServer(behaviour="http:401")
    try:
        result = client(server.url, headers={"Authorization": "Bearer s3cret"}).send()
    finally:
        server.stop()
    assert server.received[0].headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in result.message


def test_credentials_in_base_url_are_used_and_not_reported(
    heartbeat_server: HeartbeatServer,
) -> None:
    url = heartbeat_server.url.replace("http://", "http://user:pa55@")
    assert client(url).send().ok
    assert heartbeat_server.received[0].headers["Authorization"].startswith("Basic ")
    down = client(f"http://user:pa55@127.0.0.1:{free_port()}").send()
    assert "pa55" not in down.message


def test_rejects_a_malformed_execution_id() -> None:
    with pytest.raises(ConfigError, match="execution_id='abc' is not a UUID"):
        HeartbeatClient("http://127.0.0.1:1", "abc", "c")
