"""The extension in-process, its handlers called directly, as Scrapy's own
tests/test_logstats.py does; what only a real process shows is in the
behaviour-named crawl suites."""

from __future__ import annotations

import signal
import time
import warnings
from typing import Any

import pytest
from scrapy import Spider, signals
from scrapy.crawler import CrawlerRunner
from scrapy.exceptions import NotConfigured
from scrapy.utils.test import get_crawler

from scrapy_heartbeat import HeartbeatExtension
from scrapy_heartbeat.middleware import start_failed
from tests.conftest import EXECUTION_ID
from tests.crawl import RunningCrawl, run_crawl, wait_for
from tests.servers import HeartbeatServer, SiteServer


def _crawler(url: str = "http://127.0.0.1:9", **settings: Any) -> Any:
    defaults = {
        "HEARTBEAT_API_BASE_URL": url,
        "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        "LOGSTATS_INTERVAL": 0,
    }
    return _bare_crawler(**{**defaults, **settings})


def _bare_crawler(**settings: Any) -> Any:
    """A crawler with its extensions built, in a process with no reactor."""
    try:
        return get_crawler(Spider, settings)
    except RuntimeError:  # Scrapy 2.13's get_crawler() asks which reactor is installed
        crawler = CrawlerRunner({"TWISTED_REACTOR": None, **settings}).create_crawler(Spider)
        crawler._apply_settings()
        return crawler


def test_from_crawler_without_a_base_url_is_not_configured(monkeypatch: Any) -> None:
    monkeypatch.delenv("API_BASE_URL", raising=False)
    with pytest.raises(NotConfigured, match="HEARTBEAT_API_BASE_URL"):
        HeartbeatExtension.from_crawler(_bare_crawler())


@pytest.mark.parametrize(
    "setting",
    ["HEARTBEAT_API_BASE_URL", "HEARTBEAT_PROXY"],
)
def test_a_url_that_cannot_be_parsed_disables_reporting_in_one_line(
    setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(NotConfigured):
        HeartbeatExtension.from_crawler(_crawler(**{setting: "http://[::1"}))
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and setting in errors[0].getMessage()


def test_a_redis_url_that_cannot_be_parsed_is_ignored_with_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    extension = HeartbeatExtension.from_crawler(_crawler(HEARTBEAT_REDIS_URL="redis://[::1"))
    assert extension.config.redis_url is None
    assert any("HEARTBEAT_REDIS_URL" in r.getMessage() for r in caplog.records)


def test_the_handlers_count_errors() -> None:
    crawler = _crawler()
    extension = HeartbeatExtension.from_crawler(crawler)
    extension.item_error()
    extension.spider_error(failure=None, response=object())  # type: ignore[arg-type]
    extension.spider_error(failure=None)  # type: ignore[arg-type]  # start() raised
    assert extension.tracker.errors == 2
    crawler.signals.send_catch_log(signal=start_failed)
    assert extension.tracker.start_failed and extension.tracker.errors == 3


def test_signals_sent_by_hand_on_a_crawler_without_an_engine() -> None:
    """As Scrapy's own tests do (tests/utils/bases/spider.py): the
    synchronous send_catch_log, no engine. Nothing is sent, nothing raises,
    no coroutine is left unawaited."""
    crawler = _crawler()
    extension = HeartbeatExtension.from_crawler(crawler)
    spider = Spider("hand")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opened = crawler.signals.send_catch_log(signal=signals.spider_opened, spider=spider)
        closed = crawler.signals.send_catch_log(
            signal=signals.spider_closed, spider=spider, reason="finished"
        )
    ours = [result for handler, result in opened + closed if handler.__self__ is extension]
    assert ours == [None, None]
    assert extension.sender is None and extension.task is None


def _crawl(
    spider: str, site: SiteServer, server: HeartbeatServer, pages: int, **settings: Any
) -> Any:
    """A real crawl of ``pages`` pages with the extension reporting to ``server``."""
    return run_crawl(
        spider,
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            **settings,
        },
        args={"site": site.url, "pages": str(pages)},
    )


def test_close_from_start_is_completed(pages_site: SiteServer, heartbeat_server: HeartbeatServer):  # type: ignore[no-untyped-def]
    result = _crawl("tests.spiders.CloseFromStartSpider", pages_site, heartbeat_server, 5)
    assert result.returncode == 0, result.log[-3000:]
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "completed", final
    assert final["progress"]["error_count"] == 0
    assert final["progress"]["crawled_urls"] == 5


def test_foreign_values_under_the_marker_key_do_not_break_counting(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = _crawl("tests.spiders.ForeignMarkerSpider", pages_site, heartbeat_server, 12)
    assert result.returncode == 0, result.log[-3000:]
    assert "could not count" not in result.log
    assert "Traceback" not in result.log
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "completed"
    assert (final["progress"]["crawled_urls"], final["progress"]["total_urls"]) == (12, 12)


@pytest.mark.parametrize(
    ("jobdir", "status"), [(False, "failed"), (True, "paused")], ids=["plain", "jobdir"]
)
@pytest.mark.parametrize("slow", ["site", "api"])
def test_a_forced_shutdown_still_sends_the_final_beat(
    pages_site: SiteServer,
    heartbeat_server: HeartbeatServer,
    tmp_path: Any,
    *,
    slow: str,
    jobdir: bool,
    status: str,
) -> None:
    """A second Ctrl-C shortly after the first stops Scrapy at once, while
    its close waits for a download (the close never began) or for the
    final beat (it is in flight); the platform still gets the final status
    with the last counts."""
    settings: dict[str, Any] = {
        "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
        "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
        "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        "HEARTBEAT_MIN_INTERVAL": 0,
        "HEARTBEAT_INTERVAL": 0.2,
        "CONCURRENT_REQUESTS": 1,
    }
    if jobdir:
        settings["JOBDIR"] = str(tmp_path / "job")
    crawl = {
        "spider": "tests.spiders.PagesSpider",
        "settings": settings,
        "args": {"site": pages_site.url, "pages": "1000"},
    }
    running = RunningCrawl([crawl], settings=settings)

    def crawled() -> int:
        bodies = heartbeat_server.bodies()
        return bodies[-1]["progress"]["crawled_urls"] if bodies else 0

    wait_for(lambda: crawled() >= 3, what="a few pages crawled")
    if slow == "site":
        pages_site.delay = 2.0  # type: ignore[attr-defined]
        time.sleep(0.3)  # a download under way
    else:
        heartbeat_server.behaviour = "slow:1"
    running.process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    running.process.send_signal(signal.SIGINT)
    result = running.finish(timeout=60)
    assert "forcing unclean shutdown" in result.log, result.log[-3000:]
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == status, result.log[-3000:]
    assert final["progress"]["crawled_urls"] >= 3
    assert "delivered as the process exits" in result.log


@pytest.mark.parametrize("jobdir", [False, True], ids=["memory", "jobdir"])
def test_a_marker_a_middleware_replaces_is_counted_and_said_once(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer, tmp_path: Any, jobdir: bool
) -> None:
    """A downloader middleware sets the marker to None on every request: the
    counts stay right (the scheduler handed each out with its marker)."""
    result = _crawl(
        "tests.spiders.PagesSpider",
        pages_site,
        heartbeat_server,
        6,
        DOWNLOADER_MIDDLEWARES={"tests.spiders.MarkerClobberingMiddleware": 10},
        **({"JOBDIR": str(tmp_path / "job")} if jobdir else {}),
    )
    assert result.returncode == 0, result.log[-3000:]
    assert len(result.items) == 6  # the crawl itself is untouched
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "completed"
    progress = final["progress"]
    assert (progress["crawled_urls"], progress["total_urls"]) == (6, 6), progress
    assert progress["successful_urls"] == 6
    warnings = [line for line in result.log.splitlines() if "replaced request.meta" in line]
    assert len(warnings) == 1, warnings
    assert "Leave that key as it is" in warnings[0]


def test_a_stage_format_whose_width_is_a_field_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """{stage:>{crawled}0000} would build a string as long as the crawl's
    own numbers make it, at every beat."""
    extension = HeartbeatExtension.from_crawler(
        _crawler(HEARTBEAT_STAGE_FORMAT="{stage:>{crawled}0000}")
    )
    assert extension.config.stage_format == "{stage} ({crawled}/{total})"
    assert any("HEARTBEAT_STAGE_FORMAT" in r.getMessage() for r in caplog.records)


def test_a_refused_redis_url_never_ends_the_execution(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    """The user meant a fleet: with its shared counters unusable, this worker
    cannot know whether others still crawl, so it only says it finished."""
    result = _crawl(
        "tests.spiders.PagesSpider",
        pages_site,
        heartbeat_server,
        4,
        HEARTBEAT_REDIS_URL="redis://[::1",
    )
    assert result.returncode == 0 and len(result.items) == 4, result.log[-3000:]
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "running"
    assert final["progress"]["current_stage"].startswith("本进程已结束")
    assert len([line for line in result.log.splitlines() if "HEARTBEAT_REDIS_URL" in line]) == 1


def test_a_lost_spider_closed_ends_at_engine_stopped(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    """spider_closed never reaches the extension: engine_stopped ends the
    execution as a shutdown would (failed, no JOBDIR), and stops the beat
    loop, which would otherwise outlive the crawl in a long-lived process."""
    result = _crawl("tests.spiders.LostCloseSpider", pages_site, heartbeat_server, 4)
    # 3: the crawl runner's own spider_closed handler is lost with ours.
    assert result.returncode == 3, result.log[-3000:]
    finals = [b for b in heartbeat_server.bodies() if b["status"] != "running"]
    assert [b["status"] for b in finals] == ["failed"], finals
    assert finals[0]["progress"]["crawled_urls"] == 4
    assert result.log.count("the engine stopped without spider_closed") == 1
    assert "heartbeat loop running after the engine stopped: False" in result.log


def test_spider_closed_sent_after_the_engine_closed_is_the_final_beat(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    """Scrapy's own tests send spider_closed by hand once the engine closed
    the spider without it: the crawl no longer runs, so that signal, and its
    reason, end the execution."""
    result = run_crawl(
        "tests.spiders.LostCloseSpider",
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": heartbeat_server.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        },
        args={"site": pages_site.url, "pages": "4", "resend": "1"},
    )
    assert result.returncode == 0, result.log[-3000:]  # the runner hears the resend too
    finals = [b for b in heartbeat_server.bodies() if b["status"] != "running"]
    assert [b["status"] for b in finals] == ["completed"], result.log[-4000:]
    assert "spider_closed was sent while the crawl runs" not in result.log
    assert "the engine stopped without spider_closed" not in result.log
    assert "heartbeat loop running after the engine stopped: False" in result.log


def test_spider_closed_sent_by_hand_on_a_running_crawl(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    """The synchronous send_catch_log while the crawl goes on: one WARNING,
    no coroutine left unawaited, and the final beat still tells the true end
    when Scrapy closes the spider."""
    result = _crawl("tests.spiders.HandClosedSpider", pages_site, heartbeat_server, 8)
    assert result.returncode == 0, result.log[-3000:]
    assert len(result.items) == 8  # the crawl itself goes on
    finals = [b for b in heartbeat_server.bodies() if b["status"] != "running"]
    assert [b["status"] for b in finals] == ["completed"], finals
    assert finals[0]["progress"]["crawled_urls"] == 8
    assert result.log.count("spider_closed was sent while the crawl runs") == 1
    assert result.log.count("Final heartbeat (completed) delivered") == 1, result.log[-3000:]


@pytest.mark.parametrize("behaviour", ["ok", "slow:1"])
def test_a_close_timeout_of_zero_sends_the_final_beat_without_waiting(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer, behaviour: str
) -> None:
    """HEARTBEAT_CLOSE_TIMEOUT = 0: the close does not wait for the final
    beat; the process waits for it at exit."""
    heartbeat_server.behaviour = behaviour
    result = _crawl(
        "tests.spiders.PagesSpider", pages_site, heartbeat_server, 5, HEARTBEAT_CLOSE_TIMEOUT=0
    )
    assert result.returncode == 0, result.log[-3000:]
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "completed", result.log[-3000:]
    assert final["progress"]["crawled_urls"] == 5
    assert "Final heartbeat (completed) delivered" in result.log, result.log[-3000:]
