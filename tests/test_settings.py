"""Settings as pure functions, then as a user meets them in a real crawl."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from scrapy_heartbeat.settings import (
    DEFAULTS,
    ConfigError,
    HeartbeatConfig,
    check_base_url,
    load_config,
)
from tests.conftest import EXECUTION_ID
from tests.crawl import run_crawl
from tests.servers import HeartbeatServer, SiteServer

BASE = {"HEARTBEAT_API_BASE_URL": "http://api.test:8000"}


def config(environ: dict[str, str] | None = None, **settings: Any) -> HeartbeatConfig:
    values = {**BASE, **settings}
    result = load_config(values.get, environ or {})
    assert result is not None
    return result


def test_defaults_match_the_spec() -> None:
    c = config(environ={"HOSTNAME": "crawler-abc"})
    assert c.interval == 30.0
    assert c.timeout == 10.0
    assert c.close_timeout == 30.0
    assert (c.retry_times, c.retry_delay) == (3, 5.0)
    assert c.container_id == "crawler-abc"
    assert c.tls_verify is True
    assert c.debug is False
    assert c.execution_id is None
    assert c.completed_reasons == frozenset(DEFAULTS["HEARTBEAT_COMPLETED_REASONS"])


def test_environment_fallbacks() -> None:
    c = load_config(
        {}.get,
        {"API_BASE_URL": "http://from-env:1/", "EXECUTION_ID": EXECUTION_ID, "DEBUG": "true"},
    )
    assert c is not None
    assert c.api_base_url == "http://from-env:1"
    assert c.execution_id == EXECUTION_ID
    assert c.debug is True


def test_settings_win_over_environment() -> None:
    c = config(
        environ={"API_BASE_URL": "http://env:1", "HOSTNAME": "env-host", "DEBUG": "true"},
        HEARTBEAT_CONTAINER_ID="setting-host",
        HEARTBEAT_DEBUG=False,
    )
    assert c.api_base_url == "http://api.test:8000"
    assert c.container_id == "setting-host"
    assert c.debug is False


def test_disabled_switch() -> None:
    assert load_config({**BASE, "HEARTBEAT_ENABLED": False}.get, {}) is None
    assert load_config({**BASE, "HEARTBEAT_ENABLED": "0"}.get, {}) is None


def test_missing_base_url_names_both_places() -> None:
    with pytest.raises(ConfigError, match=r"HEARTBEAT_API_BASE_URL nor the API_BASE_URL"):
        load_config({}.get, {})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"HEARTBEAT_API_BASE_URL": "data-platform-api:8000"}, "is not an http\\(s\\) URL"),
        ({"HEARTBEAT_API_BASE_URL": "ftp://x"}, "is not an http\\(s\\) URL"),
        ({"HEARTBEAT_EXECUTION_ID": "job-42"}, "HEARTBEAT_EXECUTION_ID='job-42' is not a UUID"),
        ({"HEARTBEAT_HEADERS": ["Authorization"]}, "HEARTBEAT_HEADERS is a list, not a mapping"),
        ({"HEARTBEAT_HEADERS": "{not json"}, "HEARTBEAT_HEADERS is a string that is not a JSON"),
        ({"HEARTBEAT_TLS_VERIFY": "/nonexistent/ca.pem"}, "is not a readable CA bundle"),
    ],
)
def test_unusable_values_raise_one_line(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        config(**settings)
    assert "\n" not in str(info.value)


def test_credentials_in_base_url_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        config(HEARTBEAT_API_BASE_URL="ftp://user:s3cret@host")
    assert "s3cret" not in str(info.value)


def test_header_values_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        config(HEARTBEAT_HEADERS={"Authorization": 12345})
    assert "12345" not in str(info.value)


def test_headers_from_json_string() -> None:
    assert config(HEARTBEAT_HEADERS='{"Authorization": "Bearer t"}').headers == {
        "Authorization": "Bearer t"
    }


@pytest.mark.parametrize(
    ("name", "value", "default"),
    [
        ("HEARTBEAT_INTERVAL", "soon", 30.0),
        ("HEARTBEAT_TIMEOUT", -1, 10.0),
        ("HEARTBEAT_CLOSE_TIMEOUT", "x", 30.0),
        ("HEARTBEAT_RETRY_TIMES", 1.5, 3),
        ("HEARTBEAT_RETRY_DELAY", -3, 5.0),
    ],
)
def test_bad_numbers_fall_back_with_an_error(
    name: str, value: Any, default: float, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="scrapy_heartbeat"):
        c = config(**{name: value})
    field = name.removeprefix("HEARTBEAT_").lower()
    assert getattr(c, field) == default
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert name in errors[0] and repr(value) in errors[0] and "using the default" in errors[0]


def test_retry_times_rejects_fractions() -> None:
    assert config(HEARTBEAT_RETRY_TIMES="2").retry_times == 2


@pytest.mark.parametrize(
    ("interval", "expected"), [(1, 10.0), (5.5, 10.0), (45, 45.0), (600, 60.0)]
)
def test_interval_is_clamped_to_the_spec(
    interval: float, expected: float, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scrapy_heartbeat"):
        assert config(HEARTBEAT_INTERVAL=interval).interval == expected
    warned = [r for r in caplog.records if "HEARTBEAT_INTERVAL" in r.getMessage()]
    assert len(warned) == (0 if interval == expected else 1)


def test_lowered_minimum_allows_fast_beats() -> None:
    assert config(HEARTBEAT_INTERVAL=0.5, HEARTBEAT_MIN_INTERVAL=0.1).interval == 0.5


def test_stage_format_is_validated(caplog: pytest.LogCaptureFixture) -> None:
    assert (
        config(HEARTBEAT_STAGE_FORMAT="{stage}: {percentage}%").stage_format
        == "{stage}: {percentage}%"
    )
    with caplog.at_level(logging.ERROR, logger="scrapy_heartbeat"):
        c = config(HEARTBEAT_STAGE_FORMAT="{nope}")
    assert c.stage_format == DEFAULTS["HEARTBEAT_STAGE_FORMAT"]
    assert "HEARTBEAT_STAGE_FORMAT='{nope}'" in caplog.text


def test_completed_reasons_from_a_string() -> None:
    c = config(HEARTBEAT_COMPLETED_REASONS="finished, my_reason")
    assert c.completed_reasons == {"finished", "my_reason"}


# -- the same, as a user meets it in a crawl ---------------------------------


def _crawl(
    site: SiteServer,
    env: dict[str, str] | None = None,
    args: dict[str, str] | None = None,
    **settings: Any,
):  # type: ignore[no-untyped-def]
    return run_crawl(
        "tests.spiders.PagesSpider",
        {"EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500}, **settings},
        args={"site": site.url, "pages": "3", **(args or {})},
        env=env,
    )


def test_crawl_without_base_url_warns_once_and_runs(pages_site: SiteServer) -> None:
    result = _crawl(pages_site)
    assert result.returncode == 0
    assert len(result.items) == 3
    warnings = [
        line
        for line in result.log.splitlines()
        if "HeartbeatExtension" in line and "WARNING" in line
    ]
    assert len(warnings) == 1
    assert "HEARTBEAT_API_BASE_URL" in warnings[0] and "API_BASE_URL environment" in warnings[0]


def test_crawl_with_bad_execution_id_logs_error_and_runs(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = _crawl(
        pages_site,
        HEARTBEAT_API_BASE_URL=heartbeat_server.url,
        HEARTBEAT_EXECUTION_ID="not-a-uuid",
    )
    assert result.returncode == 0
    assert len(result.items) == 3
    errors = [line for line in result.log.splitlines() if " ERROR: " in line]
    assert len(errors) == 1
    assert "HEARTBEAT_EXECUTION_ID='not-a-uuid' is not a UUID" in errors[0]
    assert heartbeat_server.bodies() == []


def test_crawl_with_bad_spider_argument_logs_error_and_runs(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = _crawl(
        pages_site, args={"execution_id": "42"}, HEARTBEAT_API_BASE_URL=heartbeat_server.url
    )
    assert result.returncode == 0
    assert len(result.items) == 3
    assert "spider argument execution_id='42' is not a UUID" in result.log
    assert heartbeat_server.bodies() == []


def test_execution_id_sources_in_order(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    env_id = "33333333-3333-4333-8333-333333333333"
    arg_id = "44444444-4444-4444-8444-444444444444"
    _crawl(
        pages_site,
        env={"API_BASE_URL": heartbeat_server.url, "EXECUTION_ID": env_id},
        args={"execution_id": arg_id},
    )
    _crawl(pages_site, env={"API_BASE_URL": heartbeat_server.url}, args={"execution_id": arg_id})
    generated = _crawl(pages_site, env={"API_BASE_URL": heartbeat_server.url, "HOSTNAME": "box-7"})
    ids = [b["execution_id"] for b in heartbeat_server.bodies()]
    assert ids[0] == env_id
    assert arg_id in ids
    new_id = ids[-1]
    assert new_id not in (env_id, arg_id)
    assert f"generated {new_id}" in generated.log
    assert heartbeat_server.bodies()[-1]["container_id"] == "box-7"


def test_disabled_extension_sends_nothing(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = _crawl(
        pages_site, HEARTBEAT_API_BASE_URL=heartbeat_server.url, HEARTBEAT_ENABLED=False
    )
    assert result.returncode == 0
    assert heartbeat_server.bodies() == []
    assert "HeartbeatSpiderMiddleware" not in result.log


def test_addon_enables_everything(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = run_crawl(
        "tests.spiders.PagesSpider",
        {
            "ADDONS": {"scrapy_heartbeat.HeartbeatAddon": 0},
            "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        },
        args={"site": pages_site.url, "pages": "4"},
    )
    assert result.returncode == 0
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "completed"
    assert final["progress"]["total_urls"] == final["progress"]["crawled_urls"] == 4


def test_old_downloader_middleware_setting_still_loads_and_says_to_remove_it(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = _crawl(
        pages_site,
        HEARTBEAT_API_BASE_URL=heartbeat_server.url,
        HEARTBEAT_EXECUTION_ID=EXECUTION_ID,
        DOWNLOADER_MIDDLEWARES={"scrapy_heartbeat.HeartbeatDownloaderMiddleware": 0},
    )
    assert result.returncode == 0
    assert "HeartbeatDownloaderMiddleware is no longer needed; remove it" in result.log
    final = heartbeat_server.bodies()[-1]["progress"]
    assert final["total_urls"] == final["successful_urls"] == 3


def test_shared_counter_settings(caplog: pytest.LogCaptureFixture) -> None:
    c = config()
    assert (c.shared, c.redis_url, c.redis_ttl) == (None, None, 7 * 24 * 3600)
    c = config(HEARTBEAT_SHARED="false", HEARTBEAT_REDIS_URL="redis://r:6379/1")
    assert (c.shared, c.redis_url) == (False, "redis://r:6379/1")
    with caplog.at_level(logging.ERROR):
        c = config(HEARTBEAT_REDIS_URL="http://user:pw@r:6379", HEARTBEAT_REDIS_TTL=-1)
    assert c.redis_url is None
    assert c.redis_ttl == 7 * 24 * 3600
    lines = [r.getMessage() for r in caplog.records]
    assert any("HEARTBEAT_REDIS_URL='http://***@r:6379'" in line for line in lines), lines
    assert any("HEARTBEAT_REDIS_TTL=-1" in line for line in lines), lines
    assert not any("pw" in line for line in lines)


def test_a_base_url_with_bytes_that_are_not_utf8_is_refused_in_one_line() -> None:
    """As an environment variable holding byte 0xff reads."""
    with pytest.raises(ConfigError) as caught:
        check_base_url("http://127.0.0.1:8000/\udcff")
    message = str(caught.value)
    assert "HEARTBEAT_API_BASE_URL" in message and "not UTF-8" in message
    assert "\n" not in message
    assert check_base_url("http://bücher.example:8000") == "http://bücher.example:8000"
