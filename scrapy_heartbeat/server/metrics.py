"""``GET /metrics`` of the reference receiver, in Prometheus' text format,
written by ``prometheus_client`` (``pip install 'scrapy-heartbeat[server]'``).

Receiver-wide: beats accepted, beats rejected by reason, a histogram of
the time to answer a beat, and every execution counted by status and
liveness. Per execution, only for unfinished ones that beat within the last
hour, the newest first up to a cap (``serve --metrics-max-executions``),
with a gauge of how many were left out: the progress counters, percentage,
liveness, containers and seconds since the last beat. So a scrape has a
bounded number of series, whatever the fleet.

Each receiver has a registry of its own: two in one process never mix. The
executions are read from the receiver's store when scraped, on a thread of
the reactor's pool, so a scrape never holds the reactor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

#: Unfinished executions that last beat within this many seconds are exported.
RECENT = 3600.0
#: Reply times, seconds: a beat is answered in about a millisecond on an idle
#: receiver; the spec's client gives up at 10 s.
REPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
PROGRESS_GAUGES = (
    ("total_urls", "URLs accepted for crawling"),
    ("crawled_urls", "URLs crawled (answered or given up)"),
    ("successful_urls", "URLs answered with a success"),
    ("failed_urls", "URLs that failed"),
    ("data_items", "items scraped"),
    ("error_count", "errors logged"),
    ("percentage", "crawled over total, percent"),
)
#: The text format every Prometheus reads (our names need none of 1.0.0's
#: escaping); newer prometheus_client releases call theirs 1.0.0.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Labels of beats rejected by reply code.
REJECTED_REASONS = {
    400: "invalid",
    401: "unauthorized",
    405: "method",
    413: "too_large",
    415: "not_json",
    503: "unavailable",
}

#: ``read(seen_since)``: executions counted by (status, liveness), the
#: unfinished executions to export one by one, and how many were left out.
Read = Callable[[float], tuple[dict[tuple[str, str], int], list[dict[str, Any]], int]]


class ReceiverMetrics:
    def __init__(self, read: Read) -> None:
        """``read`` is called on the scraping thread."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.accepted = Counter(
            "heartbeat_receiver_beats_accepted", "Heartbeats stored", registry=self.registry
        )
        self.rejected = Counter(
            "heartbeat_receiver_beats_rejected",
            "Heartbeats refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECTED_REASONS.values():
            self.rejected.labels(reason)  # present at 0 from the start, for rate()
        self.reply_seconds = Histogram(
            "heartbeat_receiver_reply_seconds",
            "Time to answer a heartbeat POST, seconds",
            buckets=REPLY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ExecutionCollector(read))

    def beat_answered(self, code: int, seconds: float | None = None) -> None:
        if code == 200:
            self.accepted.inc()
        else:
            self.rejected.labels(REJECTED_REASONS.get(code, str(code))).inc()
        if seconds is not None:
            self.reply_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ExecutionCollector:
    def __init__(self, read: Read) -> None:
        self.read = read

    def describe(self) -> list[Any]:
        return []  # read at each scrape: nothing to describe in advance

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, found, left_out = self.read(time.time() - RECENT)
        yield from _aggregates(counts, left_out)
        yield from _per_execution(found)


def _aggregates(counts: dict[tuple[str, str], int], left_out: int) -> Iterator[GaugeMetricFamily]:
    by_state = GaugeMetricFamily(
        "heartbeat_executions",
        "Executions by client status and liveness (as of the last liveness check)",
        labels=["status", "liveness"],
    )
    for (status, liveness), count in sorted(counts.items()):
        by_state.add_metric([status, liveness], count)
    yield by_state
    yield GaugeMetricFamily(
        "heartbeat_executions_not_exported",
        "Unfinished executions that beat within the hour but have no series of their own "
        "(over --metrics-max-executions)",
        value=left_out,
    )


def _per_execution(found: list[dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    labels = ["execution_id"]
    gauges = {
        field: GaugeMetricFamily(f"heartbeat_execution_{field}", text, labels=labels)
        for field, text in PROGRESS_GAUGES
    }
    silent = GaugeMetricFamily(
        "heartbeat_execution_seconds_since_last_beat",
        "Seconds since any container of the execution beat",
        labels=labels,
    )
    containers = GaugeMetricFamily(
        "heartbeat_execution_containers", "Containers that beat for it", labels=labels
    )
    liveness = GaugeMetricFamily(
        "heartbeat_execution_liveness",
        "1 for the execution's liveness: running, late, lost, stalled or paused",
        labels=["execution_id", "liveness"],
    )
    for execution in found:
        eid = execution["execution_id"]
        progress = execution["progress"] or {}
        for field, gauge in gauges.items():
            value = progress.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauge.add_metric([eid], value)
        silent.add_metric([eid], execution["seconds_since_last_beat"])
        containers.add_metric([eid], execution["container_count"])
        liveness.add_metric([eid, execution["liveness"]], 1)
    yield from gauges.values()
    yield silent
    yield containers
    yield liveness
