"""Property tests over what the crawl side takes from outside: settings and
the environment, the request.meta marker, and the platform's replies.
Whatever they hold, nothing raises past our boundary: a setting is used,
replaced by its default with one line, or refused with a ConfigError; a
reply is a HeartbeatResult; the counters stay whole numbers."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scrapy import Request
from scrapy.http import HtmlResponse

from scrapy_heartbeat import HeartbeatClient
from scrapy_heartbeat.payload import MAX_CONTAINER_ID
from scrapy_heartbeat.progress import META_KEY, ProgressTracker
from scrapy_heartbeat.settings import DEFAULTS, ConfigError, load_config
from tests.conftest import EXECUTION_ID
from tests.crawl import run_crawl

_text = st.text(max_size=40) | st.sampled_from(["http://[::1", "\ud800", "\udcff", "env", "1e309"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_settings = st.dictionaries(st.sampled_from(sorted(DEFAULTS)), _values, max_size=8)
_environ = st.fixed_dictionaries(
    {},
    optional={
        "API_BASE_URL": _text,
        "EXECUTION_ID": _text | st.just(EXECUTION_ID.upper()),
        "HOSTNAME": _text | st.just("crawler-\udcff" + "x" * 300),
        "DEBUG": _text,
    },
)


@settings(max_examples=400, deadline=None)
@given(given_settings=_settings, environ=_environ)
def test_any_settings_and_environment_load_or_are_refused_in_one_line(
    given_settings: dict[str, Any], environ: dict[str, str]
) -> None:
    given_settings.setdefault("HEARTBEAT_API_BASE_URL", "http://platform:8000")
    refused = ""
    try:
        config = load_config(given_settings.get, environ)
    except ConfigError as exc:
        config, refused = None, str(exc)
    assert "\n" not in refused
    if config is None:  # refused in one line, or HEARTBEAT_ENABLED off
        return
    assert config.interval > 0 and math.isfinite(config.interval)
    assert 0 < config.timeout <= 300
    assert 0 <= config.retry_times <= 100 and isinstance(config.retry_times, int)
    assert 1 <= len(config.container_id) <= MAX_CONTAINER_ID
    config.container_id.encode("utf-8")  # valid UTF-8: never a reason for a beat to fail
    assert all(c.isprintable() for c in config.container_id)


_markers = _values | st.tuples(_values, _values, _values) | st.just(())


@settings(max_examples=300, deadline=None)
@given(before=_markers, between=_markers, status=st.sampled_from([200, 404, 500]))
def test_whatever_is_under_the_marker_key_counting_never_raises(
    before: Any, between: Any, status: int
) -> None:
    """A spider sets the key before scheduling, a middleware between
    scheduling and the download: the tracker's observation points never
    raise, and the counters stay consistent."""
    tracker = ProgressTracker()
    request = Request("http://example.com/p", meta={META_KEY: before})
    tracker.request_enqueued(request, accepted=True)
    request.meta[META_KEY] = between
    response = HtmlResponse(request.url, status=status, request=request)
    tracker.download_finished(response, request)
    tracker.adopt(request)
    tracker.settle(final=True)
    assert min(tracker.total, tracker.successful, tracker.failed) >= 0
    assert tracker.successful + tracker.failed <= tracker.total


class _AnyReply:
    """A server that answers each request with ``reply`` bytes, then closes."""

    def __init__(self) -> None:
        self.reply = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += connection.recv(65536) or b"\r\n\r\n"
                    connection.sendall(self.reply)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped = True
        self.listener.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def any_reply() -> Iterator[_AnyReply]:
    server = _AnyReply()
    yield server
    server.stop()


_status_lines = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.0 500 Oops", b"HTTP/1.1 429 Slow", b"HTTP/1.1 301 Moved", b"junk"]
)
_headers = st.lists(
    st.sampled_from(
        [
            b"Content-Type: application/json",
            b"Content-Length: 5",
            b"Content-Length: -1",
            b"Transfer-Encoding: chunked",
            b"Retry-After: 99999999999999999999",
            b"Retry-After: Wed, 21 Oct 2015 07:28:00 GMT",
            b"Location: http://u:p@elsewhere/x",
            b"Content-Encoding: gzip",
        ]
    ),
    max_size=4,
)
_bodies = st.binary(max_size=200) | st.sampled_from(
    [b'{"status": "ok"}', b'{"status": "error", "message": "\\u0000\\n\\x1b[31m"}', b"[]", b"null"]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=_status_lines, headers=_headers, body=_bodies)
@example(  # a redirect's body cut short: older requests let urllib3's error out
    status=b"HTTP/1.1 301 Moved",
    headers=[b"Content-Length: 5", b"Location: http://u:p@elsewhere/x", b"Content-Encoding: gzip"],
    body=b"\x00\x00",
)
def test_any_reply_is_a_result_on_one_line(
    any_reply: _AnyReply, status: bytes, headers: list[bytes], body: bytes
) -> None:
    any_reply.reply = b"\r\n".join([status, *headers, b"", body])
    with HeartbeatClient(any_reply.url, EXECUTION_ID, "box", timeout=2) as client:
        result = client.send("running", {"crawled_urls": 1})
    assert result.outcome in ("ok", "rejected", "failed")
    assert "\n" not in result.message and "\x1b" not in result.message
    assert "u:p@" not in result.message
    if result.retry_after is not None:
        assert result.retry_after >= 0 and math.isfinite(result.retry_after)


_crawl_settings = st.fixed_dictionaries(
    {},
    optional={
        "HEARTBEAT_API_BASE_URL": st.sampled_from(["http://[::1", "ftp://x", "http://h:99999"]),
        "HEARTBEAT_PROXY": st.sampled_from(["http://[::1", "nope", ""]),
        "HEARTBEAT_REDIS_URL": st.sampled_from(["redis://[::1", "http://x", ""]),
        "HEARTBEAT_INTERVAL": st.sampled_from([-1, "abc", 1e309, 0.5]),
        "HEARTBEAT_HEADERS": st.sampled_from(['{"X": "\\n"}', "[]", '{"A": "b"}']),
        "HEARTBEAT_STAGE_FORMAT": st.sampled_from(["{nope}", "{stage:>999999}", "{stage}"]),
        "HEARTBEAT_CONTAINER_ID": st.sampled_from(["x" * 400, "\ud800", "box"]),
        "HEARTBEAT_COMPLETED_REASONS": st.sampled_from([5, "finished", []]),
    },
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=_crawl_settings)
def test_no_setting_changes_a_crawl_and_beats_flow_or_one_error_says_why(
    pages_site: Any, heartbeat_server: Any, hostile: dict[str, Any]
) -> None:
    heartbeat_server.received.clear()
    base = {
        "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
        "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
        "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        "HEARTBEAT_MIN_INTERVAL": 0,
    }
    result = run_crawl(
        "tests.spiders.PagesSpider",
        {**base, **hostile},
        args={"site": pages_site.url, "pages": "5"},
    )
    assert result.returncode == 0, result.log[-3000:]
    assert len(result.items) == 5  # the crawl is the same whatever the settings
    assert "Traceback" not in result.log
    bodies = heartbeat_server.bodies()
    if bodies:  # beats flowed: the last one final, or this worker's finish when it
        # was meant for a fleet (HEARTBEAT_REDIS_URL) it cannot reach
        last = bodies[-1]
        finished = last["progress"]["current_stage"].startswith("本进程已结束")
        assert last["status"] in ("completed", "failed") or finished, last
    else:  # or one ERROR names the setting
        errors = [line for line in result.log.splitlines() if "ERROR" in line]
        assert any("HEARTBEAT_" in line for line in errors), result.log[-3000:]
