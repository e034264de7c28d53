"""``GET /metrics`` of the reference receiver, in Prometheus' text format,
written by ``prometheus_client`` (``pip install 'scrapy-heartbeat[server]'``).

Receiver-wide: beats accepted, beats rejected by reason, and a histogram of
the time to answer a beat. Per execution, for those that beat within the
last hour (active ones, and those finished or lost recently, so that the
number of series stays bounded): the progress counters, percentage,
liveness, containers and seconds since the last beat.

Each receiver has a registry of its own: two in one process never mix. The
per-execution series are read from the database when scraped, on a thread
with a connection of its own, so a scrape never holds the reactor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

#: Executions that last beat within this many seconds are exported.
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

Executions = Callable[[float], list[dict[str, Any]]]


class ReceiverMetrics:
    def __init__(self, executions: Executions) -> None:
        """``executions(seen_since)``: the executions to export, read on
        the scraping thread."""
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
        self.registry.register(_ExecutionCollector(executions))

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
    def __init__(self, executions: Executions) -> None:
        self.executions = executions

    def describe(self) -> list[Any]:
        return []  # read at each scrape: nothing to describe in advance

    def collect(self) -> Iterator[GaugeMetricFamily]:
        found = self.executions(time.time() - RECENT)
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
            "1 for the execution's liveness: running, late, lost, stalled, paused, "
            "completed or failed",
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
