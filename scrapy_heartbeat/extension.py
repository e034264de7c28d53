"""HeartbeatExtension reports a crawl's progress to the platform's heartbeat API.

Enable it with ``EXTENSIONS = {"scrapy_heartbeat.HeartbeatExtension": 500}``
and ``HEARTBEAT_API_BASE_URL``. A beat goes out when the spider opens, then
every ``HEARTBEAT_INTERVAL`` seconds, and a final ``completed`` or ``failed``
beat when it closes. Nothing here can stop the crawl or change its result.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.extensions.corestats import CoreStats

from scrapy_heartbeat._compat import (
    LoopingTask,
    loop_thread_caller,
    looping_call,
    wait_for_future,
)
from scrapy_heartbeat.client import HeartbeatClient, HeartbeatResult
from scrapy_heartbeat.middleware import SPIDER_MIDDLEWARE_ORDER, HeartbeatSpiderMiddleware
from scrapy_heartbeat.payload import Progress, clean_url, percentage, stage_text
from scrapy_heartbeat.progress import ProgressTracker, observe_crawl
from scrapy_heartbeat.sender import HeartbeatSender
from scrapy_heartbeat.settings import (
    ConfigError,
    HeartbeatConfig,
    MissingBaseUrl,
    check_execution_id,
    load_config,
    new_execution_id,
    redact_url,
)

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: The middleware the extension enables itself: (setting, class, order).
COMPANIONS: tuple[tuple[str, type, int], ...] = (
    ("SPIDER_MIDDLEWARES", HeartbeatSpiderMiddleware, SPIDER_MIDDLEWARE_ORDER),
)


class HeartbeatExtension:
    def __init__(self, crawler: Crawler, config: HeartbeatConfig):
        self.crawler: Crawler = crawler
        self.config: HeartbeatConfig = config
        self.tracker: ProgressTracker = ProgressTracker()
        self.sender: HeartbeatSender | None = None
        self.task: LoopingTask | None = None
        self.execution_id: str | None = None
        self.start_time: str = ""
        self.started: float = 0.0
        self.bad_stage_logged: bool = False
        self.counts_items: bool = False  # True only when CoreStats is off

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        try:
            config = load_config(crawler.settings.get)
        except MissingBaseUrl as exc:
            raise NotConfigured(str(exc)) from None  # Scrapy logs it as a WARNING
        except ConfigError as exc:
            logger.error("scrapy-heartbeat disabled: %s", exc)
            raise NotConfigured from None
        if config is None:
            raise NotConfigured
        o = cls(crawler, config)
        for setting, component, order in COMPANIONS:
            try:
                crawler.settings.setdefault_in_component_priority_dict(setting, component, order)
            except TypeError:  # frozen settings: built outside Crawler's own set-up
                logger.warning(
                    "scrapy-heartbeat: settings are frozen; add %(path)s to %(setting)s "
                    "at %(order)d, or a failing start() will not make the final beat 'failed'",
                    {
                        "path": f"scrapy_heartbeat.{component.__name__}",
                        "setting": setting,
                        "order": order,
                    },
                )
        for handler, signal in (
            (o.spider_opened, signals.spider_opened),
            (o.spider_closed, signals.spider_closed),
            (o.spider_error, signals.spider_error),
            (o.item_error, signals.item_error),
        ):
            crawler.signals.connect(handler, signal=signal)
        return o

    # -- counting ---------------------------------------------------------------

    def item_scraped(self) -> None:
        self.tracker.items += 1

    def _items(self) -> int:
        if self.counts_items:
            return self.tracker.items
        return int(self.crawler.stats.get_value("item_scraped_count", 0) or 0)

    def item_error(self) -> None:
        self.tracker.errors += 1

    def spider_error(self, failure: Failure, response: Any = None) -> None:
        if response is not None:  # None: start() raised; HeartbeatSpiderMiddleware counts it
            self.tracker.errors += 1

    # -- reporting --------------------------------------------------------------

    def spider_opened(self, spider: Spider) -> None:
        self.started = time.monotonic()
        # CoreStats already counts item_scraped (dropped items excluded): read
        # its stat rather than add a signal handler to every item.
        if not any(isinstance(e, CoreStats) for e in self.crawler.extensions.middlewares):
            self.counts_items = True
            self.crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        self.start_time = datetime.now(timezone.utc).isoformat(timespec="seconds")
        jobdir = bool(self.crawler.settings.get("JOBDIR"))
        for problem in observe_crawl(self.crawler.engine, self.tracker, jobdir):
            logger.warning("scrapy-heartbeat: %s", problem, extra={"crawler": self.crawler})
        try:
            self.execution_id = self._execution_id(spider)
        except ConfigError as exc:
            logger.error("scrapy-heartbeat disabled: %s", exc, extra={"crawler": self.crawler})
            return
        client = HeartbeatClient(
            self.config.api_base_url,
            self.execution_id,
            self.config.container_id,
            timeout=self.config.timeout,
            headers=self.config.headers,
            verify=self.config.tls_verify,
        )
        self.sender = HeartbeatSender(client, self.crawler, loop_thread_caller())
        logger.info(
            "Sending heartbeats for execution %(execution_id)s to %(url)s every %(interval)gs",
            {
                "execution_id": self.execution_id,
                "url": redact_url(client.heartbeat_url),
                "interval": self.config.interval,
            },
            extra={"crawler": self.crawler},
        )
        self.task = looping_call(self.beat)
        self.task.start(self.config.interval, now=True)

    def _execution_id(self, spider: Spider) -> str:
        if self.config.execution_id:
            return self.config.execution_id
        from_spider = getattr(spider, "execution_id", None)
        if from_spider is not None:
            return check_execution_id(from_spider, "spider argument execution_id")
        generated = new_execution_id()
        logger.info(
            "scrapy-heartbeat: no HEARTBEAT_EXECUTION_ID, EXECUTION_ID or spider "
            "argument execution_id; generated %(execution_id)s",
            {"execution_id": generated},
            extra={"crawler": self.crawler},
        )
        return generated

    def beat(self) -> None:
        """The looping call's tick: never raises, never blocks."""
        try:
            if self.sender is None:
                return
            if self.sender.in_flight:  # skipped, never queued
                self.crawler.stats.inc_value("heartbeat/skipped_in_flight")
                return
            paused = bool(getattr(self.crawler.engine, "paused", False))
            status = "paused" if paused else "running"
            self.sender.send(status, self._progress(status))
        except Exception:  # pragma: no cover - a bug of ours must not stop the crawl
            logger.exception("scrapy-heartbeat: could not send a heartbeat")

    def _progress(self, status: str, final: bool = False) -> dict[str, Any]:
        self.tracker.settle(final=final)
        t = self.tracker
        crawled, total = t.crawled, t.total
        pct = percentage(crawled, total)
        items = self._items()
        label = self._spider_stage()
        if label is None:
            label = self.config.stage_labels.get(status, status)
        progress: Progress = {
            "total_urls": total,
            "crawled_urls": crawled,
            "successful_urls": t.successful,
            "failed_urls": t.failed,
            "current_url": clean_url(t.current_url(), strip_query=self.config.strip_query),
            "current_stage": stage_text(
                self.config.stage_format,
                stage=label,
                status=status,
                crawled=crawled,
                total=total,
                percentage=pct,
                items=items,
            ),
            "data_items": items,
            "percentage": pct,
            "runtime_seconds": round(time.monotonic() - self.started, 2),
            "start_time": self.start_time,
            "error_count": t.errors,
        }
        if self.config.debug:
            logger.info(
                "Heartbeat payload (%(status)s): %(progress)s",
                {"status": status, "progress": json.dumps(progress, ensure_ascii=False)},
                extra={"crawler": self.crawler},
            )
        return dict(progress)

    def _spider_stage(self) -> str | None:
        """The spider's own ``heartbeat_stage`` text, when it sets a usable one."""
        label = getattr(self.crawler.spider, "heartbeat_stage", None)
        if label is None or (isinstance(label, str) and label):
            return label
        if not self.bad_stage_logged:
            self.bad_stage_logged = True
            logger.error(
                "scrapy-heartbeat: spider attribute heartbeat_stage=%(value)r is not a "
                "non-empty string; set it to a short text such as '解析详情页' "
                "(using the stage labels meanwhile)",
                {"value": label},
                extra={"crawler": self.crawler},
            )
        return None

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.task and self.task.running:
            self.task.stop()
        if self.sender is None:
            return
        failed = reason not in self.config.completed_reasons or self.tracker.start_failed
        status = "failed" if failed else "completed"
        stats = self.crawler.stats
        stats.set_value("heartbeat/final_status", status)
        future = self.sender.send_final(
            status,
            self._progress(status, final=True),
            self.config.retry_times,
            self.config.retry_delay,
            self.config.close_timeout,
        )
        # The worker gives up at the deadline on its own; this bound also
        # holds when a request is still hanging as the deadline passes.
        done = await wait_for_future(future, self.config.close_timeout)
        result = (
            future.result()
            if done
            else HeartbeatResult(
                "failed", f"no answer within HEARTBEAT_CLOSE_TIMEOUT={self.config.close_timeout:g}s"
            )
        )
        self.sender.record(result, final=True)
        self.sender.close()
        stats.set_value("heartbeat/final_delivered", result.ok)
        if result.ok:
            logger.info(
                "Final heartbeat (%(status)s) delivered",
                {"status": status},
                extra={"crawler": self.crawler},
            )
        else:
            logger.warning(
                "Final heartbeat (%(status)s) not delivered: %(reason)s",
                {"status": status, "reason": result.message},
                extra={"crawler": self.crawler},
            )
