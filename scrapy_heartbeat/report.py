"""What each beat says: the crawl's counters as the spec's ``progress``.

:class:`Reporter` reads this crawl's counters on the loop thread; the
rendering functions are pure, so the sender's thread renders the execution's
numbers (shared counters) with them too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from scrapy_heartbeat.jobstate import JobState
from scrapy_heartbeat.payload import clean_url, percentage, stage_text

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from scrapy_heartbeat.counts import Counts
    from scrapy_heartbeat.progress import ProgressTracker
    from scrapy_heartbeat.settings import HeartbeatConfig
    from scrapy_heartbeat.shared import ExecutionView, SharedCounters

logger = logging.getLogger(__name__)


class Snapshot(NamedTuple):
    """This process's counters at one beat, the spider's stage label, and
    the progress object they make."""

    counts: Counts
    label: str | None
    progress: dict[str, Any]


class Reporter:
    """Reads this crawl's counters into progress objects (loop thread)."""

    def __init__(self, config: HeartbeatConfig, crawler: Crawler, tracker: ProgressTracker):
        self.config = config
        self.crawler = crawler
        self.tracker = tracker
        self.execution_id = ""
        self.started = 0.0  # monotonic, for this run's running time
        self.start_ms = 0  # wall clock, for the execution's earliest start
        self.start_time = ""
        self.resumed: JobState | None = None  # what a paused run of this JOBDIR saved
        self.counts_items = False  # True only when CoreStats is off
        self.bad_stage_logged = False

    def start(self, execution_id: str, resumed: JobState | None) -> None:
        self.execution_id = execution_id
        self.started = time.monotonic()
        self.start_ms = int(time.time() * 1000)
        self.start_time = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.resumed = resumed
        if resumed is not None:  # continue the counters the paused run saved
            self.tracker.owner = resumed.owner
            self.tracker.restore(resumed.counts)
            self.start_time = resumed.start_time

    def counts(self) -> Counts:
        if self.counts_items:
            return self.tracker.counts(self.tracker.items)
        before = self.resumed.counts.items if self.resumed is not None else 0
        scraped = int(self.crawler.stats.get_value("item_scraped_count", 0) or 0)
        return self.tracker.counts(before + scraped)

    def runtime(self) -> float:
        before = self.resumed.runtime_seconds if self.resumed is not None else 0.0
        return before + time.monotonic() - self.started

    def snapshot(self, status: str, final: bool = False, stage: str | None = None) -> Snapshot:
        """``stage``: a configured stage label to use instead of the spider's."""
        self.tracker.settle(final=final)
        counts = self.counts()
        label = self._spider_stage() if stage is None else self.config.stage_labels.get(stage)
        current_url = clean_url(self.tracker.current_url(), strip_query=self.config.strip_query)
        progress = render_progress(
            self.config,
            status,
            counts,
            label=label,
            current_url=current_url,
            runtime=self.runtime(),
            start_time=self.start_time,
        )
        return Snapshot(counts, label, progress)

    def exchange(
        self, shared: SharedCounters, status: str, snapshot: Snapshot
    ) -> Callable[[], tuple[str, dict[str, Any]]]:
        """What a periodic beat with shared counters runs on the sender's
        thread: this worker's counts written, the execution's read back."""

        def prepare() -> tuple[str, dict[str, Any]]:
            view = shared.exchange(snapshot.counts, self.start_ms, self.start_time)
            return status, self.execution(status, view, snapshot.label, snapshot.progress)

        return prepare

    def job_state(self, snapshot: Snapshot, worker: str) -> JobState:
        """What the ``JOBDIR`` keeps of this run, for a resumed run to continue."""
        runs = self.resumed.runs if self.resumed is not None else 0
        return JobState(
            owner=self.tracker.owner,
            execution_id=self.execution_id,
            start_time=self.start_time,
            runtime_seconds=snapshot.progress["runtime_seconds"],
            counts=snapshot.counts,
            runs=runs + 1,
            worker=worker,
        )

    def execution(
        self, status: str, view: ExecutionView | None, label: str | None, mine: dict[str, Any]
    ) -> dict[str, Any]:
        """The execution's progress (sender's thread), logged when debugging."""
        progress = execution_progress(self.config, status, mine, view, label)
        self.log_payload(status, progress)
        return progress

    def log_payload(self, status: str, progress: dict[str, Any]) -> None:
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
        label, bad = spider_stage(self.crawler.spider)
        if bad is not None and not self.bad_stage_logged:
            self.bad_stage_logged = True
            logger.error("scrapy-heartbeat: %s", bad, extra={"crawler": self.crawler})
        return label


def render_progress(
    config: HeartbeatConfig,
    status: str,
    counts: Counts,
    *,
    label: str | None,
    current_url: str,
    runtime: float,
    start_time: str,
) -> dict[str, Any]:
    """The progress object for ``counts``; ``label`` is the spider's own
    stage text, else the configured label of ``status``."""
    crawled, total = counts.crawled, counts.total
    pct = percentage(crawled, total)
    if label is None:
        label = config.stage_labels.get(status, status)
    stage = stage_text(
        config.stage_format,
        stage=label,
        status=status,
        crawled=crawled,
        total=total,
        percentage=pct,
        items=counts.items,
    )
    return {
        "total_urls": total,
        "crawled_urls": crawled,
        "successful_urls": counts.successful,
        "failed_urls": counts.failed,
        "current_url": current_url,
        "current_stage": stage,
        "data_items": counts.items,
        "percentage": pct,
        "runtime_seconds": round(runtime, 2),
        "start_time": start_time,
        "error_count": counts.errors,
    }


def execution_progress(
    config: HeartbeatConfig,
    status: str,
    mine: dict[str, Any],
    view: ExecutionView | None,
    label: str | None,
) -> dict[str, Any]:
    """The execution's progress from ``view`` (the shared counters), else
    this worker's own ``mine`` (Redis unreachable)."""
    if view is None:
        return mine
    return render_progress(
        config,
        status,
        view.counts,
        label=label,
        current_url=mine["current_url"],
        runtime=max(time.time() - view.start_ms / 1000, mine["runtime_seconds"]),
        start_time=view.start_time,
    )


def spider_stage(spider: object) -> tuple[str | None, str | None]:
    """The spider's own ``heartbeat_stage`` text (None: it sets none), and
    what is wrong with it when it is not a usable one."""
    label = getattr(spider, "heartbeat_stage", None)
    if label is None or (isinstance(label, str) and label):
        return label, None
    return None, (
        f"spider attribute heartbeat_stage={label!r} is not a non-empty string; set it to "
        "a short text such as '解析详情页' (using the stage labels meanwhile)"
    )
