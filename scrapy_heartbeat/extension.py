"""HeartbeatExtension reports a crawl's progress to the platform's heartbeat API.

Enable it with ``EXTENSIONS = {"scrapy_heartbeat.HeartbeatExtension": 500}``
and ``HEARTBEAT_API_BASE_URL``. A beat goes out when the spider opens, then
every ``HEARTBEAT_INTERVAL`` seconds, and a final ``completed`` or ``failed``
beat when it closes (``paused`` when a ``JOBDIR`` crawl is stopped, to be
resumed). With shared counters (:mod:`scrapy_heartbeat.shared`) every beat
carries the execution's numbers and only the last worker out ends it.
Nothing here can stop the crawl or change its result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.extensions.corestats import CoreStats

from scrapy_heartbeat import jobstate
from scrapy_heartbeat._compat import (
    LoopingTask,
    loop_thread_caller,
    loop_timer,
    looping_call,
    wait_for_future,
)
from scrapy_heartbeat.client import HeartbeatClient, HeartbeatResult
from scrapy_heartbeat.middleware import SPIDER_MIDDLEWARE_ORDER, HeartbeatSpiderMiddleware
from scrapy_heartbeat.payload import Progress, clean_url, percentage, stage_text
from scrapy_heartbeat.progress import ProgressTracker, observe_crawl, scheduler_of
from scrapy_heartbeat.sender import HeartbeatSender
from scrapy_heartbeat.settings import (
    ConfigError,
    HeartbeatConfig,
    MissingBaseUrl,
    check_execution_id,
    load_config,
    new_execution_id,
    redact_url,
    scrapyd_job_id,
)
from scrapy_heartbeat.shared import (
    STALE_INTERVALS,
    Counts,
    ExecutionView,
    SharedCounters,
    connect,
    final_status,
    is_scrapy_redis,
    new_worker_id,
    queue_key,
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
        self.start_ms: int = 0  # wall clock, for the execution's earliest start
        self.bad_stage_logged: bool = False
        self.counts_items: bool = False  # True only when CoreStats is off
        self.jobdir: str | None = None
        self.resumed: jobstate.JobState | None = None  # what the previous run saved
        self.shared: SharedCounters | None = None
        self.final_status: str = ""

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
        before = self.resumed.items if self.resumed is not None else 0
        return before + int(self.crawler.stats.get_value("item_scraped_count", 0) or 0)

    def item_error(self) -> None:
        self.tracker.errors += 1

    def spider_error(self, failure: Failure, response: Any = None) -> None:
        if response is not None:  # None: start() raised; HeartbeatSpiderMiddleware counts it
            self.tracker.errors += 1

    # -- reporting --------------------------------------------------------------

    def spider_opened(self, spider: Spider) -> None:
        self.started = time.monotonic()
        self.start_ms = int(time.time() * 1000)
        self.start_time = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            self.execution_id = self._execution_id(spider)
        except ConfigError as exc:
            logger.error("scrapy-heartbeat disabled: %s", exc, extra={"crawler": self.crawler})
            return
        # CoreStats already counts item_scraped (dropped items excluded): read
        # its stat rather than add a signal handler to every item.
        if not any(isinstance(e, CoreStats) for e in self.crawler.extensions.middlewares):
            self.counts_items = True
            self.crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        jobdir = self.crawler.settings.get("JOBDIR")
        self.jobdir = str(jobdir) if jobdir else None
        if self.jobdir:
            self._resume(jobstate.load(self.jobdir))
        engine = self.crawler.engine
        try:
            self.shared = self._shared_counters(scheduler_of(engine))
        except Exception as exc:  # a bad REDIS_PARAMS, say: report this worker's own numbers
            logger.error(
                "scrapy-heartbeat: cannot set up shared counters in Redis (%(error)s); "
                "check REDIS_URL/REDIS_PARAMS or HEARTBEAT_REDIS_URL, or set HEARTBEAT_SHARED = "
                "False (each worker reports its own numbers meanwhile)",
                {"error": f"{type(exc).__name__}: {exc}"},
                extra={"crawler": self.crawler},
            )
        if self.shared is not None:
            # The execution owns the markers: what one worker queued, another counts.
            self.tracker.owner = self.execution_id
        for problem in observe_crawl(engine, self.tracker, bool(self.jobdir)):
            logger.warning("scrapy-heartbeat: %s", problem, extra={"crawler": self.crawler})
        try:
            client = HeartbeatClient(
                self.config.api_base_url,
                self.execution_id,
                self.config.container_id,
                timeout=self.config.timeout,
                headers=self.config.headers,
                verify=self.config.tls_verify,
                proxy=self.config.proxy,
            )
        except ConfigError as exc:  # pragma: no cover - load_config checked the same values
            logger.error("scrapy-heartbeat disabled: %s", exc, extra={"crawler": self.crawler})
            return
        if client.url_credentials_ignored:
            logger.warning(
                "scrapy-heartbeat: HEARTBEAT_API_BASE_URL has credentials and HEARTBEAT_HEADERS "
                "an Authorization header; the header is sent, the URL's credentials are not",
                extra={"crawler": self.crawler},
            )
        self.sender = HeartbeatSender(client, self.crawler, loop_thread_caller(), loop_timer())
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

    def _resume(self, state: jobstate.JobState | None) -> None:
        """Continue the counters a paused run of this ``JOBDIR`` saved."""
        if state is None:
            return
        self.resumed = state
        t = self.tracker
        t.owner = state.owner
        t.total, t.successful, t.failed, t.errors = (
            state.total,
            state.successful,
            state.failed,
            state.errors,
        )
        if self.counts_items:
            t.items = state.items
        self.start_time = state.start_time
        logger.info(
            "scrapy-heartbeat: resuming the counters of JOBDIR %(jobdir)s: %(crawled)d/%(total)d "
            "URLs, %(items)d items, %(runtime)gs of running time since %(start)s",
            {
                "jobdir": self.jobdir,
                "crawled": state.successful + state.failed,
                "total": state.total,
                "items": state.items,
                "runtime": state.runtime_seconds,
                "start": state.start_time,
            },
            extra={"crawler": self.crawler},
        )

    def _shared_counters(self, scheduler: Any) -> SharedCounters | None:
        """Execution-wide counters, with scrapy-redis's scheduler (in its
        Redis) or ``HEARTBEAT_REDIS_URL``, unless ``HEARTBEAT_SHARED`` is False."""
        config = self.config
        on_redis_queue = is_scrapy_redis(scheduler)
        wanted = config.shared
        if wanted is None:
            wanted = on_redis_queue or config.redis_url is not None
        if not wanted:
            return None
        assert self.execution_id is not None
        try:
            client = connect(self.crawler.settings, config.redis_url, min(config.timeout, 5.0))
        except ImportError:
            logger.error(
                "scrapy-heartbeat: shared counters need redis-py; pip install "
                "'scrapy-heartbeat[redis]', or set HEARTBEAT_SHARED = False "
                "(each worker reports its own numbers meanwhile)",
                extra={"crawler": self.crawler},
            )
            return None
        worker = self.resumed.worker if self.resumed and self.resumed.worker else ""
        shared = SharedCounters(
            client,
            self.execution_id,
            worker or new_worker_id(config.container_id),
            ttl=config.redis_ttl,
            stale_after=STALE_INTERVALS * config.interval,
            queue=queue_key(scheduler) if on_redis_queue else None,
            crawler=self.crawler,
        )
        logger.info(
            "scrapy-heartbeat: execution-wide counters in Redis, as worker %(worker)s",
            {"worker": shared.worker_id},
            extra={"crawler": self.crawler},
        )
        return shared

    def _execution_id(self, spider: Spider) -> str:
        if self.config.execution_id:
            return self.config.execution_id
        from_spider = getattr(spider, "execution_id", None)
        if from_spider is not None:
            return check_execution_id(from_spider, "spider argument execution_id")
        job = scrapyd_job_id(getattr(spider, "_job", None))
        if job is not None:
            logger.info(
                "scrapy-heartbeat: no HEARTBEAT_EXECUTION_ID or EXECUTION_ID; using scrapyd's "
                "job id (spider argument _job) as the execution id: %(execution_id)s",
                {"execution_id": job},
                extra={"crawler": self.crawler},
            )
            return job
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
            counts, label, progress = self._progress(status)
            if self.shared is None:
                self._log_payload(status, progress)
                self.sender.send(status, progress)
                return
            shared = self.shared

            def prepare() -> tuple[str, dict[str, Any]]:
                view = shared.exchange(counts, self.start_ms, self.start_time)
                return status, self._execution_progress(status, progress, view, label)

            self.sender.send(status, progress, prepare)
        except Exception:  # pragma: no cover - a bug of ours must not stop the crawl
            logger.exception("scrapy-heartbeat: could not send a heartbeat")

    def _progress(
        self, status: str, final: bool = False
    ) -> tuple[Counts, str | None, dict[str, Any]]:
        """This process's counters, the spider's stage label, and the
        progress they make (loop thread)."""
        self.tracker.settle(final=final)
        t = self.tracker
        counts = Counts(t.total, t.successful, t.failed, self._items(), t.errors)
        runtime = time.monotonic() - self.started
        if self.resumed is not None:
            runtime += self.resumed.runtime_seconds
        label = self._spider_stage()
        progress = self._render(
            status,
            counts,
            label=label,
            current_url=clean_url(t.current_url(), strip_query=self.config.strip_query),
            runtime=runtime,
            start_time=self.start_time,
        )
        return counts, label, progress

    def _render(
        self,
        status: str,
        counts: Counts,
        *,
        label: str | None,
        current_url: str,
        runtime: float,
        start_time: str,
    ) -> dict[str, Any]:
        """The progress object for ``counts``; pure, so any thread may call it."""
        crawled, total = counts.crawled, counts.total
        pct = percentage(crawled, total)
        if label is None:
            label = self.config.stage_labels.get(status, status)
        progress: Progress = {
            "total_urls": total,
            "crawled_urls": crawled,
            "successful_urls": counts.successful,
            "failed_urls": counts.failed,
            "current_url": current_url,
            "current_stage": stage_text(
                self.config.stage_format,
                stage=label,
                status=status,
                crawled=crawled,
                total=total,
                percentage=pct,
                items=counts.items,
            ),
            "data_items": counts.items,
            "percentage": pct,
            "runtime_seconds": round(runtime, 2),
            "start_time": start_time,
            "error_count": counts.errors,
        }
        return dict(progress)

    def _execution_progress(
        self,
        status: str,
        mine: dict[str, Any],
        view: ExecutionView | None,
        label: str | None,
    ) -> dict[str, Any]:
        """The execution's progress from ``view`` (worker thread), else this
        worker's own (Redis unreachable)."""
        progress = mine
        if view is not None:
            progress = self._render(
                status,
                view.counts,
                label=label,
                current_url=mine["current_url"],
                runtime=max(time.time() - view.start_ms / 1000, mine["runtime_seconds"]),
                start_time=view.start_time,
            )
        self._log_payload(status, progress)
        return progress

    def _log_payload(self, status: str, progress: dict[str, Any]) -> None:
        if self.config.debug:
            logger.info(
                "Heartbeat payload (%(status)s) for %(execution_id)s: %(progress)s",
                {
                    "status": status,
                    "execution_id": self.execution_id,
                    "progress": json.dumps(progress, ensure_ascii=False),
                },
                extra={"crawler": self.crawler},
            )

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
        stopped = reason == "shutdown"  # Ctrl-C, SIGTERM: with JOBDIR, a pause
        failed = reason not in self.config.completed_reasons or self.tracker.start_failed
        if not failed:
            status = "completed"
        elif self.jobdir and stopped and not self.tracker.start_failed:
            status = "paused"
        else:
            status = "failed"
        counts, label, progress = self._progress(status, final=True)
        if self.jobdir:
            self._save_job(counts, progress["runtime_seconds"])
        self.final_status = status
        prepare = follow_up = None
        if self.shared is None:
            self._log_payload(status, progress)
        else:
            prepare, follow_up = self._final_beats(status, reason, counts, label, progress)
        # After SIGTERM (docker stop, a pod's deletion) the runtime kills the
        # process when its grace period ends (Docker's 10 s): the close must
        # end well before, or the crawl exits 137 without its stats.
        budget, budget_name = self.config.close_timeout, "HEARTBEAT_CLOSE_TIMEOUT"
        if stopped and self.config.shutdown_timeout < budget:
            budget, budget_name = self.config.shutdown_timeout, "HEARTBEAT_SHUTDOWN_TIMEOUT"
        # The worker gives up a little before the budget ends, so that its
        # own account of the failure arrives before the backstop below.
        margin = min(0.25, budget / 10)
        future = self.sender.send_final(
            status,
            progress,
            self.config.retry_times,
            self.config.retry_delay,
            budget - margin,
            prepare=prepare,
            follow_up=follow_up,
        )
        # The backstop: the close ends at the budget whatever the worker does.
        began = time.monotonic()
        done = await wait_for_future(future, budget)
        result = future.result() if done else HeartbeatResult("failed", "no answer")
        if not result.ok and time.monotonic() - began >= budget - margin - 0.05:
            result = dataclasses.replace(
                result, message=f"{result.message} ({budget_name}={budget:g}s reached)"
            )
        status = self.final_status  # the shared counters may have changed it
        stats = self.crawler.stats
        stats.set_value("heartbeat/final_status", status)
        self.sender.record(result, final=True)
        self.sender.close()
        if self.shared is not None:
            self.shared.close()
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

    def _final_beats(
        self,
        status: str,
        reason: str,
        counts: Counts,
        label: str | None,
        progress: dict[str, Any],
    ) -> tuple[Callable[[], tuple[str, dict[str, Any]]], Callable[[], Any]]:
        """The final beat with shared counters, in two steps on the worker
        thread, so that the execution's ending is the last beat to arrive:

        1. this worker flushes its totals (still counted as alive) and, if
           other workers live, sends ``running`` (stage ``worker_finished``);
        2. once that beat is out, it leaves the workers' hash; if none is left
           alive then, it sends the execution's ``completed`` or ``failed``.

        Of workers closing together, each one's step 2 follows its own step 1
        delivery, so whoever leaves last sends the ending after every other
        worker's last beat. Without Redis, this worker's own status is sent."""
        assert self.shared is not None
        shared = self.shared
        local_queued = self._local_queued()
        ended_failed = status == "failed" and reason != "shutdown"
        finished_label = label or self.config.stage_labels.get("worker_finished", "worker finished")
        left: list[bool] = []  # step 1 said: others live, leave after this beat

        def first() -> tuple[str, dict[str, Any]]:
            view = shared.exchange(counts, self.start_ms, self.start_time, failed=ended_failed)
            if view is None:  # Redis unreachable: this worker goes stale there by itself
                return status, self._execution_progress(status, progress, view, label)
            final, worker_finished = final_status(status, reason, view, local_queued)
            if not worker_finished:
                shared.exchange(counts, self.start_ms, self.start_time, closing=True)
                self.final_status = final
                return final, self._execution_progress(final, progress, view, label)
            left.append(True)
            self.final_status = "running"
            return "running", self._execution_progress("running", progress, view, finished_label)

        def then() -> tuple[str, dict[str, Any]] | None:
            if not left:
                return None
            view = shared.exchange(counts, self.start_ms, self.start_time, closing=True)
            if view is None:
                return None
            final, worker_finished = final_status(status, reason, view, local_queued)
            if worker_finished:
                return None  # another worker lives on and will end the execution
            self.final_status = final
            return final, self._execution_progress(final, progress, view, label)

        return first, then

    def _local_queued(self) -> int | None:
        """Requests left in this process's own scheduler; None if not known."""
        scheduler = scheduler_of(self.crawler.engine)
        if scheduler is None or is_scrapy_redis(scheduler):
            return None
        try:
            return len(scheduler)
        except Exception:  # a closed disk queue, a scheduler without __len__
            return None

    def _save_job(self, counts: Counts, runtime: float) -> None:
        """Save the counters in the ``JOBDIR``, for a resumed run to continue."""
        assert self.jobdir is not None and self.execution_id is not None
        previous = self.resumed
        jobstate.save(
            self.jobdir,
            jobstate.JobState(
                owner=self.tracker.owner,
                execution_id=self.execution_id,
                start_time=self.start_time,
                runtime_seconds=round(runtime, 2),
                total=counts.total,
                successful=counts.successful,
                failed=counts.failed,
                items=counts.items,
                errors=counts.errors,
                runs=(previous.runs if previous else 0) + 1,
                worker=self.shared.worker_id if self.shared is not None else "",
            ),
        )
