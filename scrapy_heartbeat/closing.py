"""How a crawl ends: the status its close reports, the time the close may
take, for an execution shared by workers which worker ends it, and the
final beat of a process that exits before its close ended.

Pure rules and small classes, testable without a crawl.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy_heartbeat._compat import wait_for_future
from scrapy_heartbeat.client import HeartbeatResult

if TYPE_CHECKING:
    from scrapy_heartbeat.counts import Counts
    from scrapy_heartbeat.report import Reporter, Snapshot
    from scrapy_heartbeat.settings import HeartbeatConfig
    from scrapy_heartbeat.shared import ExecutionView, SharedCounters

logger = logging.getLogger(__name__)

#: Scrapy's finish reason for Ctrl-C and SIGTERM (docker stop, a pod's deletion).
SHUTDOWN = "shutdown"

#: Renders the progress of a status, from the execution's view of the shared
#: counters (None: this worker's own numbers) and a stage label.
Render = Callable[[str, "ExecutionView | None", "str | None"], dict[str, Any]]


def status_on_close(
    reason: str, completed_reasons: Collection[str], start_failed: bool, jobdir: bool
) -> str:
    """The final status of a crawl that closed for ``reason``: ``completed``
    for a finish reason the user counts as done, ``paused`` for a ``JOBDIR``
    crawl stopped to be resumed, else ``failed``. A ``start()`` that raised
    is a failure whatever the reason (Scrapy then finishes ``finished``)."""
    if start_failed:
        return "failed"
    if reason in completed_reasons:
        return "completed"
    if jobdir and reason == SHUTDOWN:
        return "paused"
    return "failed"


@dataclass(frozen=True)
class CloseBudget:
    """How long the close may wait for the final beat.

    After SIGTERM the runtime kills the process when its grace period ends
    (Docker's 10 s): the close must end well before, or the crawl exits 137
    without its stats. The sender gives up :attr:`margin` before the budget,
    so that its own account of a failure arrives before the backstop's."""

    seconds: float
    setting: str
    #: False with ``HEARTBEAT_CLOSE_TIMEOUT = 0``: the close does not wait;
    #: the final beat has one request's time, and the process waits for it
    #: at exit (:class:`ExitGuard`).
    waits: bool = True

    @classmethod
    def for_reason(cls, config: HeartbeatConfig, reason: str) -> CloseBudget:
        if config.close_timeout == 0:
            return cls(config.timeout, "HEARTBEAT_TIMEOUT", waits=False)
        if reason == SHUTDOWN and config.shutdown_timeout < config.close_timeout:
            return cls(config.shutdown_timeout, "HEARTBEAT_SHUTDOWN_TIMEOUT")
        return cls(config.close_timeout, "HEARTBEAT_CLOSE_TIMEOUT")

    @property
    def margin(self) -> float:
        return min(0.25, self.seconds / 10)

    @property
    def for_sender(self) -> float:
        return self.seconds - self.margin

    async def backstop(self, future: Future[HeartbeatResult]) -> HeartbeatResult:
        """The final beat's result, or "no answer" once the budget is spent,
        whatever the sender does; a failure the budget cut short says so."""
        began = time.monotonic()
        done = await wait_for_future(future, self.seconds)
        result = future.result() if done else HeartbeatResult("failed", "no answer")
        if not result.ok and time.monotonic() - began >= self.for_sender - 0.05:
            reached = f"{self.setting}={self.seconds:g}s reached"
            result = dataclasses.replace(result, message=f"{result.message} ({reached})")
        return result


def fleet_status(
    own: str, reason: str, view: ExecutionView, local_queued: int | None
) -> tuple[str, bool]:
    """The status a closing worker of a shared execution sends, and whether
    only this worker finished (others still crawl). ``own``: the status this
    worker's own close would give (``completed``, ``failed`` or ``paused``)."""
    if view.live_others:
        return "running", True
    if view.failures:
        return "failed", False
    if own == "completed":
        return "completed", False
    queued = view.queued if view.queued is not None else local_queued
    if reason == SHUTDOWN and queued == 0 and view.counts.crawled == view.counts.total:
        return "completed", False  # stopped by the orchestrator once the work was done
    return own, False


class FleetEnding:
    """The final beat of a worker of a shared execution, in two steps on the
    sender's thread, so that the execution's ending is the last beat to arrive:

    1. :meth:`first`: this worker flushes its totals (still counted as alive)
       and, if other workers live, sends ``running`` with the
       ``worker_finished`` stage;
    2. :meth:`then`, once that beat is out: it leaves the workers' hash; if
       none is left alive then, it sends the execution's ending.

    Of workers closing together, each one's step 2 follows its own step 1
    delivery, so whoever leaves last sends the ending after every other
    worker's last beat. With Redis unreachable, this worker only says it
    finished (``running``): it cannot know whether others live."""

    def __init__(
        self,
        shared: SharedCounters,
        mine: Counts,
        *,
        start: tuple[int, str],
        status: str,
        reason: str,
        local_queued: int | None,
        render: Render,
        labels: tuple[str | None, str],
        redis_within: float | None = None,
    ) -> None:
        self.shared = shared
        self.mine = mine
        self.start_ms, self.start_time = start
        self.status = status
        self.reason = reason
        self.local_queued = local_queued
        self.render = render
        self.label, self.finished_label = labels
        self.redis_within = redis_within  # each exchange's share of the close's budget
        self.others_live = False
        self.redis_down = False  # at the close: the ending was left to others

    @classmethod
    def of(
        cls,
        shared: SharedCounters,
        report: Reporter,
        snapshot: Snapshot,
        budget: CloseBudget,
        *,
        status: str,
        reason: str,
        local_queued: int | None,
    ) -> FleetEnding:
        """The ending of this worker's close, from the close's ``snapshot``."""
        counts, label, progress = snapshot
        finished = report.config.stage_labels.get("worker_finished", "worker finished")
        return cls(
            shared,
            counts,
            start=(report.start_ms, report.start_time),
            status=status,
            reason=reason,
            local_queued=local_queued,
            render=lambda s, view, lbl: report.execution(s, view, lbl, progress),
            labels=(label, finished),
            # At most two exchanges: the final beat keeps half the budget.
            redis_within=budget.for_sender / 4,
        )

    def _exchange(self, **flags: bool) -> ExecutionView | None:
        return self.shared.exchange(
            self.mine, self.start_ms, self.start_time, within=self.redis_within, **flags
        )

    def first(self) -> tuple[str, dict[str, Any]]:
        failed = self.status == "failed" and self.reason != SHUTDOWN
        view = self._exchange(failed=failed)
        if view is None:
            # Redis unreachable: whether other workers still crawl cannot be
            # known, so this worker must not end the execution. It goes
            # stale in Redis by itself; the last worker that can reach Redis
            # ends the execution, or the platform decides it is lost.
            self.redis_down = True
            logger.warning(
                "scrapy-heartbeat: Redis is unreachable at this worker's close; it reports "
                "itself finished and leaves the execution's ending to the workers that can "
                "reach Redis (with none, the platform decides the execution is lost)"
            )
            return "running", self.render("running", None, self.finished_label)
        final, worker_finished = fleet_status(self.status, self.reason, view, self.local_queued)
        if worker_finished:
            self.others_live = True
            return "running", self.render("running", view, self.finished_label)
        self._exchange(closing=True)
        return final, self.render(final, view, self.label)

    def then(self) -> tuple[str, dict[str, Any]] | None:
        if not self.others_live:
            return None
        view = self._exchange(closing=True)
        if view is None:
            return None
        final, worker_finished = fleet_status(self.status, self.reason, view, self.local_queued)
        if worker_finished:
            return None  # another worker lives on and will end the execution
        return final, self.render(final, view, self.label)


class ExitGuard:
    """The final beat of a crawl whose process exits before its close ended.

    A second Ctrl-C (or SIGTERM twice: an impatient user, scrapyd's cancel
    twice) stops Scrapy's event loop at once; the process then exits through
    the interpreter's exit handlers, while the sender's thread still runs.
    There, the final beat the close queued is given up to
    ``HEARTBEAT_SHUTDOWN_TIMEOUT`` to go out, or, if the close never began,
    the close's first steps are taken and its final beat sent (``failed``,
    or ``paused`` with ``JOBDIR``, with the last counts). Armed when the
    spider opens, disarmed once the close recorded its final beat."""

    def __init__(
        self, close: Callable[[], tuple[str, Future[HeartbeatResult]]], seconds: float, crawler: Any
    ) -> None:
        self.close = close
        self.seconds = seconds
        self.extra = {"crawler": crawler}

    def arm(self) -> None:
        atexit.register(self.at_exit)

    def disarm(self) -> None:
        atexit.unregister(self.at_exit)

    def at_exit(self) -> None:
        try:
            status, future = self.close()
            result = future.result(timeout=self.seconds)
        except FutureTimeout:
            reached = f"HEARTBEAT_SHUTDOWN_TIMEOUT={self.seconds:g}s reached"
            result = HeartbeatResult("failed", f"no answer ({reached})")
        except Exception:  # pragma: no cover - a bug of ours: the process is ending anyway
            logger.exception("scrapy-heartbeat: could not send the final heartbeat at exit")
            return
        status = result.beat_status or status
        if result.ok:
            logger.info(
                "Final heartbeat (%(status)s) delivered as the process exits",
                {"status": status},
                extra=self.extra,
            )
        else:
            logger.warning(
                "Final heartbeat (%(status)s) not delivered as the process exits: %(reason)s",
                {"status": status, "reason": result.message},
                extra=self.extra,
            )
