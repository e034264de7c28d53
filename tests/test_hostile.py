"""Hostile and misconfigured peers, against real local servers:
huge and endless replies, rate limits, redirects, 204, proxies, echoed
secrets, and settings that cannot work."""

from __future__ import annotations

import base64
import logging
import re
import signal
import threading
import time
from typing import Any

import pytest

from scrapy_heartbeat import HeartbeatClient
from scrapy_heartbeat.client import MAX_REPLY, retry_after
from scrapy_heartbeat.ids import scrapyd_job_id
from scrapy_heartbeat.settings import ConfigError, load_config
from tests.conftest import EXECUTION_ID
from tests.crawl import CrawlResult, RunningCrawl, run_crawl, wait_for
from tests.servers import HeartbeatServer, SiteServer, free_port


def client(url: str, **kwargs: Any) -> HeartbeatClient:
    return HeartbeatClient(url, EXECUTION_ID, "container-1", **kwargs)


def answer(behaviour: str, **kwargs: Any) -> Any:
    server = HeartbeatServer(behaviour=behaviour)
    try:
        with client(server.url, **kwargs) as c:
            return c.send("running", {"total_urls": 1}), server.received
    finally:
        server.stop()


@pytest.mark.parametrize("behaviour", [f"huge:{MAX_REPLY + 1}", "huge:200000000", "endless"])
def test_a_reply_larger_than_64_kib_is_a_failed_beat_and_is_not_read(behaviour: str) -> None:
    result, _ = answer(behaviour)
    assert (result.outcome, result.retryable) == ("failed", False)
    assert "reply larger than 64 KiB" in result.message


def test_a_reply_at_the_bound_is_read() -> None:
    result, _ = answer(f"huge:{MAX_REPLY}")
    assert result.outcome == "failed" and "not JSON" in result.message  # read, then judged


@pytest.mark.parametrize(("code", "after"), [(429, "7"), (503, "2")])
def test_rate_limits_are_retryable_with_retry_after(code: int, after: str) -> None:
    result, _ = answer(f"retry_after:{code}:{after}")
    assert (result.outcome, result.retryable, result.status_code) == ("failed", True, code)
    assert result.retry_after == float(after)
    assert f"Retry-After {after}s" in result.message


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("120") == 120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after("soon") is None
    assert retry_after("inf") is None


@pytest.mark.parametrize("part", ["head", "body"])
def test_a_trickling_reply_is_cut_off_at_the_timeout(part: str) -> None:
    """One byte every 0.2 s keeps every read inside requests' per-read
    timeout; the whole request is still bounded by ``timeout``."""
    server = HeartbeatServer(behaviour=f"trickle_{part}:0.2")
    started = time.monotonic()
    try:
        with client(server.url, timeout=1) as c:
            result = c.send()
    finally:
        server.stop()
    assert time.monotonic() - started < 10  # the server trickles for 60 s
    assert result.outcome == "failed"
    assert "no complete reply within 1s" in result.message
    assert not result.retryable  # as a read timeout: wait for the next beat


def test_cut_off_from_another_thread_ends_the_request_and_the_client_goes_on() -> None:
    server = HeartbeatServer(behaviour="hang")
    results: list[Any] = []
    with client(server.url, timeout=60) as c:
        thread = threading.Thread(target=lambda: results.append(c.send()))
        thread.start()
        wait_for(lambda: bool(server.received), what="the request")
        c.cut_off("cut off: the final beat supersedes it")
        thread.join(10)
        assert not thread.is_alive()
        server.behaviour = "ok"
        again = c.send()
    server.stop()
    assert results[0].outcome == "failed"
    assert results[0].message == "cut off: the final beat supersedes it"
    assert again.ok
    assert c.send(cancelled=lambda: "not now").message == "not now"  # never sent
    assert len(server.received) == 2


def test_a_redirect_is_named_and_not_retried() -> None:
    result, received = answer("redirect:https://user:pw@elsewhere.test/hb")
    assert (result.outcome, result.retryable) == ("rejected", False)
    assert "redirected to https://***@elsewhere.test/hb (not followed" in result.message
    assert len(received) == 1


def test_204_is_delivered() -> None:
    result, received = answer("no_content")
    assert result.ok and len(received) == 1


def test_beats_go_direct_whatever_http_proxy_says(
    heartbeat_server: HeartbeatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert client(heartbeat_server.url).send().ok
    through_env = client(heartbeat_server.url, proxy="env").send()
    assert not through_env.ok
    assert "through the environment's proxy" in through_env.message


def test_a_failing_proxy_is_named_without_its_credentials(
    heartbeat_server: HeartbeatServer,
) -> None:
    proxy = f"http://vendor:pr0xy-pw@127.0.0.1:{free_port()}"
    result = client(heartbeat_server.url, proxy=proxy).send()
    assert result.outcome == "failed"
    assert f"through proxy http://***@127.0.0.1:{proxy.rsplit(':', 1)[1]}" in result.message
    assert "pr0xy-pw" not in result.message
    assert not heartbeat_server.received


def test_echoed_tokens_and_basic_credentials_are_redacted() -> None:
    result, received = answer("echo_secret", headers={"Authorization": "Bearer t0ken-XYZ"})
    assert received[0].headers["Authorization"] == "Bearer t0ken-XYZ"
    assert "has expired" in result.message
    assert "t0ken-XYZ" not in result.message
    server = HeartbeatServer(behaviour="echo_secret")
    try:
        url = server.url.replace("http://", "http://alice:s3cret-pw@")
        basic = client(url).send()
    finally:
        server.stop()
    encoded = base64.b64encode(b"alice:s3cret-pw").decode()
    assert server.received[0].headers["Authorization"] == f"Basic {encoded}"
    assert "s3cret-pw" not in basic.message and encoded not in basic.message


def test_an_authorization_header_wins_over_url_credentials(
    heartbeat_server: HeartbeatServer,
) -> None:
    url = heartbeat_server.url.replace("http://", "http://alice:pw@")
    c = client(url, headers={"Authorization": "Bearer header-wins"})
    assert c.url_credentials_ignored
    assert c.send().ok
    assert heartbeat_server.received[0].headers["Authorization"] == "Bearer header-wins"
    assert "alice" not in c.heartbeat_url


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://host:abc", "no valid port"),
        ("http://host:99999", "no valid port"),
        ("http://ho st:8000", "space in its host"),
        ("http://host:8000/#frag", "query or fragment"),
        ("http://host:8000/?q=1", "query or fragment"),
        ("user:pw@host:8000", "is not an http(s) URL"),
    ],
)
def test_base_urls_that_cannot_work_are_refused_in_one_line(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"HEARTBEAT_API_BASE_URL": url}.get, {})
    message = str(caught.value)
    assert complaint in message and "HEARTBEAT_API_BASE_URL" in message
    assert "pw" not in message and "\n" not in message


def test_headers_http_cannot_carry_are_refused_without_their_value() -> None:
    with pytest.raises(ConfigError, match=r"HEARTBEAT_HEADERS\['X-Token'\] has characters"):
        load_config(
            {"HEARTBEAT_API_BASE_URL": "http://h:1", "HEARTBEAT_HEADERS": {"X-Token": "秘密"}}.get,
            {},
        )
    with pytest.raises(ConfigError, match="line break"):
        load_config(
            {"HEARTBEAT_API_BASE_URL": "http://h:1", "HEARTBEAT_HEADERS": {"X": "a\r\nB: c"}}.get,
            {},
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HEARTBEAT_TIMEOUT", float("inf")),
        ("HEARTBEAT_TIMEOUT", 1e12),
        ("HEARTBEAT_CLOSE_TIMEOUT", float("inf")),
        ("HEARTBEAT_STAGE_FORMAT", "{stage:>999999999}"),
        ("HEARTBEAT_STAGE_FORMAT", "{crawled:09999999.3f}"),
    ],
)
def test_values_that_cannot_work_get_one_error_and_the_default(
    name: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        config = load_config({"HEARTBEAT_API_BASE_URL": "http://h:1", name: value}.get, {})
    assert config is not None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and name in errors[0] and "using the default" in errors[0]
    assert config.timeout <= 300 and len(config.stage_format) < 100


def test_min_interval_zero_means_no_lower_bound(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        config = load_config(
            {
                "HEARTBEAT_API_BASE_URL": "http://h:1",
                "HEARTBEAT_MIN_INTERVAL": 0,
                "HEARTBEAT_INTERVAL": 0.5,
            }.get,
            {},
        )
    assert config is not None and config.interval == 0.5
    assert not caplog.records


def test_a_bad_proxy_setting_is_one_line() -> None:
    with pytest.raises(
        ConfigError, match="HEARTBEAT_PROXY='ftp://\\*\\*\\*@p:1' is not a proxy URL"
    ):
        load_config(
            {"HEARTBEAT_API_BASE_URL": "http://h:1", "HEARTBEAT_PROXY": "ftp://u:pw@p:1"}.get, {}
        )


def test_the_client_refuses_timeouts_that_cannot_work() -> None:
    for timeout in (float("inf"), 0, -1, 1e12):
        with pytest.raises(ConfigError, match="timeout="):
            client("http://127.0.0.1:1", timeout=timeout)


def test_scrapyd_job_ids() -> None:
    assert (
        scrapyd_job_id("6a3c9b6e5f2d11ef9a2b0242ac120002") == "6a3c9b6e-5f2d-11ef-9a2b-0242ac120002"
    )
    assert scrapyd_job_id("not-a-job") is None
    assert scrapyd_job_id(None) is None


# -- in a crawl -------------------------------------------------------------


def crawl(site: SiteServer, server: HeartbeatServer, **settings: Any) -> CrawlResult:
    return run_crawl(
        "tests.spiders.PagesSpider",
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            **settings,
        },
        args={"site": site.url, "pages": "3"},
        env={"HTTP_PROXY": f"http://127.0.0.1:{free_port()}"},  # a crawl's dead proxy
    )


def finals(server: HeartbeatServer) -> list[float]:
    return [r.at for r in server.received if r.body.get("status") == "completed"]


def test_a_rate_limited_final_beat_is_retried_after_retry_after(pages_site: SiteServer) -> None:
    server = HeartbeatServer(behaviour="first_final:429:1")
    try:
        result = crawl(pages_site, server, HEARTBEAT_RETRY_DELAY=0.01)
    finally:
        server.stop()
    assert result.stats["heartbeat/final_delivered"] is True
    first, second = finals(server)
    assert second - first >= 0.9  # Retry-After: 1, not the 0.01 s backoff
    assert "rejected" not in result.log


def test_final_backoff_is_clamped_to_the_time_left(pages_site: SiteServer) -> None:
    """HEARTBEAT_CLOSE_TIMEOUT = 3 with the default 5 s retry delay: the
    retry happens within the 3 s, instead of being given up at once."""
    server = HeartbeatServer(behaviour="first_final:503")
    try:
        result = crawl(pages_site, server, HEARTBEAT_CLOSE_TIMEOUT=3)
    finally:
        server.stop()
    assert result.stats["heartbeat/final_delivered"] is True, result.log[-2000:]
    first, second = finals(server)
    assert second - first < 3
    assert result.close_seconds() < 3.5


@pytest.mark.parametrize("style", ["", "-close", "-http10"])
def test_a_stuck_beat_never_holds_back_the_others_nor_the_final_beat(
    pages_site: SiteServer, style: str
) -> None:
    """Running beats trickle: each is cut off at HEARTBEAT_TIMEOUT with a
    WARNING, later ticks go out again, and the final beat does not wait;
    also when the server closes its connections (Connection: close, HTTP/1.0),
    where http.client hands the socket over to the response."""
    server = HeartbeatServer(behaviour=f"trickle_running{style}:0.2")
    try:
        result = run_crawl(
            "tests.spiders.SlowPagesSpider",
            {
                "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
                "HEARTBEAT_API_BASE_URL": server.url,
                "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
                "HEARTBEAT_MIN_INTERVAL": 0,
                "HEARTBEAT_INTERVAL": 0.3,
                "HEARTBEAT_TIMEOUT": 1,
            },
            args={"site": pages_site.url, "pages": "40"},  # ~4 s
        )
    finally:
        server.stop()
    running = [b for b in server.bodies() if b["status"] == "running"]
    assert len(running) >= 2, result.log[-2000:]  # one stuck beat stopped them all
    assert "Heartbeat failed: HTTP 200, no complete reply within 1s" in result.log
    assert result.stats["heartbeat/final_delivered"] is True
    assert server.bodies()[-1]["status"] == "completed"
    assert result.close_seconds() < 5  # queued behind a trickle it waited 60 s


def test_docker_stop_exits_0_within_the_shutdown_budget(pages_site: SiteServer) -> None:
    """SIGTERM with the API hanging: the close gives up after
    HEARTBEAT_SHUTDOWN_TIMEOUT, not HEARTBEAT_CLOSE_TIMEOUT, and the crawl
    exits 0 with its stats, before a runtime's grace period ends."""
    server = HeartbeatServer(behaviour="hang")
    settings = {
        "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
        "HEARTBEAT_API_BASE_URL": server.url,
        "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        "HEARTBEAT_CLOSE_TIMEOUT": 120,
        "HEARTBEAT_SHUTDOWN_TIMEOUT": 2,
    }
    crawl = {
        "spider": "tests.spiders.SlowPagesSpider",
        "settings": settings,
        "args": {"site": pages_site.url, "pages": "1000"},
    }
    running = RunningCrawl([crawl], settings=settings)
    try:
        wait_for(lambda: bool(server.received), what="the first beat")
        running.process.send_signal(signal.SIGTERM)
        result = running.finish(timeout=60)
    finally:
        server.stop()
    assert result.returncode == 0
    assert result.reason == "shutdown"
    assert "Dumping Scrapy stats" in result.log
    # "within 1.99s": the attempt has what is left of the 2 s budget
    assert re.search(
        r"Final heartbeat \(failed\) not delivered: no complete reply within [\d.]+s "
        r"\(HEARTBEAT_SHUTDOWN_TIMEOUT=2s reached\)",
        result.log,
    ), result.log[-2500:]
    assert result.close_seconds() < 8
    assert result.stats["heartbeat/superseded"] == 1  # the periodic beat that hung


def test_scrapyd_job_is_the_execution_id(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    """As scrapyd runs a job: ``scrapy crawl NAME -a _job=<32 hex digits>``."""
    job = "6a3c9b6e5f2d11ef9a2b0242ac120002"
    result = run_crawl(
        "tests.spiders.PagesSpider",
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
            "HEARTBEAT_DEBUG": True,
        },
        args={"site": pages_site.url, "pages": "2", "_job": job},
    )
    assert result.returncode == 0
    expected = "6a3c9b6e-5f2d-11ef-9a2b-0242ac120002"
    assert {b["execution_id"] for b in heartbeat_server.bodies()} == {expected}
    assert "using scrapyd's job id (spider argument _job)" in result.log
    # the DEBUG payload line names the execution (two crawlers, one log)
    assert f"Heartbeat payload (completed) for {expected}" in result.log
