"""HeartbeatExtension reports a crawl's progress to the platform's heartbeat API:
a beat when the spider opens, every ``HEARTBEAT_INTERVAL`` seconds, and a final
one when it closes (:mod:`scrapy_heartbeat.closing` says which status).
Nothing here can stop the crawl or change its result.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.extensions.corestats import CoreStats
from scrapy.utils.job import job_dir

from scrapy_heartbeat import jobstate
from scrapy_heartbeat._compat import loop_thread_caller, loop_timer, looping_call, started
from scrapy_heartbeat._scrapy import (
    crawl_running,
    engine_of,
    engine_paused,
    local_queued,
    not_a_crawl,
    observe_crawl,
)
from scrapy_heartbeat.client import HeartbeatClient, HeartbeatResult
from scrapy_heartbeat.closing import SHUTDOWN, CloseBudget, ExitGuard, FleetEnding, status_on_close
from scrapy_heartbeat.ids import execution_id_for
from scrapy_heartbeat.middleware import enable_companions, start_failed
from scrapy_heartbeat.progress import ProgressTracker
from scrapy_heartbeat.redact import redact_url
from scrapy_heartbeat.report import Reporter, Snapshot
from scrapy_heartbeat.sender import HeartbeatSender
from scrapy_heartbeat.settings import ConfigError, HeartbeatConfig, MissingBaseUrl, load_config
from scrapy_heartbeat.shared import SharedCounters, open_shared_counters, shared_wanted

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from concurrent.futures import Future

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure
    from typing_extensions import Self

    from scrapy_heartbeat._compat import LoopingTask

logger = logging.getLogger(__name__)


class HeartbeatExtension:
    def __init__(self, crawler: Crawler, config: HeartbeatConfig):
        self.crawler: Crawler = crawler
        self.config: HeartbeatConfig = config
        self.tracker: ProgressTracker = ProgressTracker()
        self.report: Reporter = Reporter(config, crawler, self.tracker)
        self.sender: HeartbeatSender | None = None
        self.task: LoopingTask | None = None
        self.jobdir: str | None = None
        self.fleet: bool = False  # one worker of a shared execution
        self.shared: SharedCounters | None = None  # its counters, when they can be used
        self.closing: tuple[str, Future[HeartbeatResult]] | None = None  # the final beat queued
        self.finished: bool = False  # the final beat's fate recorded
        self.exit_guard: ExitGuard | None = None

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
        command = not_a_crawl()
        if command is not None and not config.all_commands:
            logger.debug(
                "scrapy-heartbeat: 'scrapy %(command)s' is not a crawl; sending no heartbeats "
                "(HEARTBEAT_ALL_COMMANDS = True sends them)",
                {"command": command},
            )
            raise NotConfigured
        o = cls(crawler, config)
        enable_companions(crawler)
        crawler.signals.connect(o.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(o.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(o.engine_stopped, signal=signals.engine_stopped)
        crawler.signals.connect(o.spider_error, signal=signals.spider_error)
        crawler.signals.connect(o.item_error, signal=signals.item_error)
        crawler.signals.connect(o.start_failed, signal=start_failed)
        return o

    # -- counting ---------------------------------------------------------------

    def item_scraped(self) -> None:
        self.tracker.items += 1

    def item_error(self) -> None:
        self.tracker.errors += 1

    def spider_error(self, failure: Failure, response: Any = None) -> None:
        if response is not None:  # None: start() raised; start_failed counts it
            self.tracker.errors += 1

    def start_failed(self) -> None:
        self.tracker.start_failed = True
        self.tracker.errors += 1

    # -- opening ----------------------------------------------------------------

    def spider_opened(self, spider: Spider) -> None:
        if engine_of(self.crawler) is None:
            logger.debug("scrapy-heartbeat: no engine (signals sent by hand); no heartbeats")
            return
        try:
            execution_id, how = execution_id_for(self.config.execution_id, spider)
        except ConfigError as exc:
            logger.error("scrapy-heartbeat disabled: %s", exc, extra={"crawler": self.crawler})
            return
        if how is not None:
            self._info("scrapy-heartbeat: %s %s", how, execution_id)
        # CoreStats already counts item_scraped (dropped items excluded): read
        # its stat rather than add a signal handler to every item.
        if self.crawler.get_extension(CoreStats) is None:
            self.report.counts_items = True
            self.crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        self.jobdir = job_dir(self.crawler.settings)
        resumed = jobstate.load(self.jobdir, execution_id) if self.jobdir else None
        self.report.start(execution_id, resumed)
        worker = resumed.worker if resumed is not None else ""
        self.fleet = shared_wanted(self.crawler, self.config)
        if self.fleet:
            self.shared = open_shared_counters(self.crawler, self.config, execution_id, worker)
        if self.shared is not None:
            # The execution owns the markers: what one worker queued, another counts.
            self.tracker.owner = execution_id.lower()
        for problem in observe_crawl(engine_of(self.crawler), self.tracker, bool(self.jobdir)):
            logger.warning("scrapy-heartbeat: %s", problem, extra={"crawler": self.crawler})
        client = HeartbeatClient.from_config(self.config, execution_id)
        self.sender = HeartbeatSender(client, self.crawler, loop_thread_caller(), loop_timer())
        url, interval = redact_url(client.heartbeat_url), self.config.interval
        self._info(
            "Sending heartbeats for execution %s to %s every %gs", execution_id, url, interval
        )
        self.task = looping_call(self.beat)
        self.task.start(self.config.interval, now=True)
        self.exit_guard = ExitGuard(self._close_at_exit, self.config.shutdown_timeout, self.crawler)
        self.exit_guard.arm()

    # -- beating ----------------------------------------------------------------

    def beat(self) -> None:
        """The looping call's tick: never raises, never blocks."""
        try:
            if self.sender is None:
                return
            if self.sender.in_flight:  # skipped, never queued
                self.crawler.stats.inc_value("heartbeat/skipped_in_flight")
                return
            status = "paused" if engine_paused(self.crawler) else "running"
            snapshot = self.report.snapshot(status)
            if self.shared is None:
                self.report.log_payload(status, snapshot.progress)
                self.sender.send(status, snapshot.progress)
            else:
                prepare = self.report.exchange(self.shared, status, snapshot)
                self.sender.send(status, snapshot.progress, prepare)
        except Exception:  # pragma: no cover - a bug of ours must not stop the crawl
            logger.exception("scrapy-heartbeat: could not send a heartbeat")

    def _info(self, message: str, *args: Any) -> None:
        logger.info(message, *args, extra={"crawler": self.crawler})

    # -- closing ----------------------------------------------------------------

    def spider_closed(self, spider: Spider, reason: str) -> Awaitable[None] | None:
        """Stop beating and send the final beat, then return what waits for
        it (Scrapy awaits it). Not ``async def``: the wait is already under
        way, so a signal sent by hand with the synchronous
        ``send_catch_log`` leaves no coroutine unawaited, and the final beat's
        fate is recorded all the same."""
        if self.sender is None or self.closing is not None:
            return None  # never reported, or closed already
        if crawl_running(self.crawler):
            # Sent by hand while the crawl goes on: its true final state is
            # known only when the engine closes it.
            logger.warning(
                "scrapy-heartbeat: spider_closed was sent while the crawl runs; the final "
                "heartbeat is sent when Scrapy closes the spider",
                extra={"crawler": self.crawler},
            )
            return None
        return self._end(reason)

    def engine_stopped(self) -> Awaitable[None] | None:
        """The engine stopped and ``spider_closed`` never reached us (a
        handler before ours broke the signal): end as at a shutdown, so that
        no beat loop outlives the crawl."""
        if self.sender is None or self.closing is not None:
            return None
        logger.warning(
            "scrapy-heartbeat: the engine stopped without spider_closed; sending the final "
            "heartbeat as for a shutdown",
            extra={"crawler": self.crawler},
        )
        return self._end(SHUTDOWN)

    def _end(self, reason: str) -> Awaitable[None] | None:
        budget = CloseBudget.for_reason(self.config, reason)
        status, future = self._close(reason, budget)
        if budget.waits:
            return started(self._finish(status, budget, future))
        # HEARTBEAT_CLOSE_TIMEOUT = 0: nothing waits. The fate is recorded
        # when the beat ends; the exit guard holds the process for it meanwhile.
        call = loop_thread_caller()
        future.add_done_callback(lambda done: call(lambda: self._finished(status, done)))
        return None

    def _close(self, reason: str, budget: CloseBudget) -> tuple[str, Future[HeartbeatResult]]:
        """Stop beating, save the ``JOBDIR`` state, queue the final beat."""
        if self.task and self.task.running:
            self.task.stop()
        status = status_on_close(
            reason, self.config.completed_reasons, self.tracker.start_failed, bool(self.jobdir)
        )
        stage = None
        if self.fleet and self.shared is None:
            # Without its shared counters this worker cannot know whether
            # others still crawl: it says it finished, and never ends the execution.
            status, stage = "running", "worker_finished"
        snapshot = self.report.snapshot(status, final=True, stage=stage)
        if self.jobdir:
            worker = self.shared.worker_id if self.shared is not None else ""
            jobstate.save(self.jobdir, self.report.job_state(snapshot, worker))
        future = self._send_final(status, reason, snapshot, budget)
        self.closing = (status, future)
        return self.closing

    async def _finish(
        self, status: str, budget: CloseBudget, future: Future[HeartbeatResult]
    ) -> None:
        self._record(status, await budget.backstop(future))

    def _finished(self, status: str, future: Future[HeartbeatResult]) -> None:
        """The final beat ended, with nothing waiting for it."""
        try:
            result = future.result()
        except Exception as exc:  # pragma: no cover - a bug of ours in the sender
            result = HeartbeatResult("failed", type(exc).__name__)
        self._record(status, result)

    def _record(self, status: str, result: HeartbeatResult) -> None:
        if self.finished:
            return
        self.finished = True
        if self.exit_guard is not None:
            self.exit_guard.disarm()
        assert self.sender is not None
        self.sender.record_final(result.beat_status or status, result)
        if self.shared is not None:
            self.shared.close()

    def _close_at_exit(self) -> tuple[str, Future[HeartbeatResult]]:
        """The process exits before the close ended (a second Ctrl-C): the
        final beat the close queued, or the close's first steps now."""
        assert self.sender is not None
        self.sender.exiting = True
        return self.closing or self._close(SHUTDOWN, CloseBudget.for_reason(self.config, SHUTDOWN))

    def _send_final(
        self, status: str, reason: str, snapshot: Snapshot, budget: CloseBudget
    ) -> Future[HeartbeatResult]:
        progress = snapshot.progress
        assert self.sender is not None
        prepare = follow_up = None
        if self.shared is None:
            self.report.log_payload(status, progress)
        else:
            ending = FleetEnding.of(
                self.shared,
                self.report,
                snapshot,
                budget,
                status=status,
                reason=reason,
                local_queued=local_queued(self.crawler),
            )
            prepare, follow_up = ending.first, ending.then
        return self.sender.send_final(
            status,
            progress,
            self.config.retry_times,
            self.config.retry_delay,
            budget.for_sender,
            prepare=prepare,
            follow_up=follow_up,
        )
