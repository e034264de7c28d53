"""A request's deadline holds whatever the server does: each way an HTTP
exchange can wait, trickled a byte at a time, is cut at the client's
timeout, through the one HTTP path the extension and ``send`` share."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from scrapy_heartbeat import HeartbeatClient
from tests.conftest import EXECUTION_ID
from tests.trickle import HEADS, TrickleServer

TIMEOUT = 1.0


@pytest.fixture(params=sorted(HEADS))
def trickle(request: pytest.FixtureRequest) -> Iterator[TrickleServer]:
    server = TrickleServer(request.param, period=0.2)
    yield server
    server.stop()


def test_the_whole_request_is_cut_at_its_timeout(trickle: TrickleServer) -> None:
    url, proxy = trickle.url, None
    if trickle.kind == "connect":  # the trickling server is the proxy
        url, proxy = "https://127.0.0.1:9", trickle.url
    with HeartbeatClient(
        url, EXECUTION_ID, "box", timeout=TIMEOUT, verify=False, proxy=proxy
    ) as client:
        for _ in range(2):  # and again, on whatever the first cut left behind
            began = time.monotonic()
            result = client.send("running", {})
            took = time.monotonic() - began
            assert result.outcome == "failed", result
            assert "no complete reply within 1s" in result.message
            assert took < TIMEOUT + 0.5, (trickle.kind, took)
    assert trickle.connections >= 1
