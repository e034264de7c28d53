"""Shared counters against a real Redis, as pure exchanges (no crawl): the
rules that make every worker's beat carry the execution's numbers."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scrapy.settings import Settings

from scrapy_heartbeat.closing import FleetEnding
from scrapy_heartbeat.closing import fleet_status as final_status
from scrapy_heartbeat.counts import Counts
from scrapy_heartbeat.shared import ExecutionView, SharedCounters, connect
from tests.conftest import EXECUTION_ID
from tests.redis_server import RedisServer


def worker(
    redis_server: RedisServer, name: str, stale_after: float = 30, execution: str = EXECUTION_ID
) -> SharedCounters:
    client = connect(Settings({"REDIS_URL": redis_server.url}), None, 2.0)
    return SharedCounters(client, execution, name, ttl=600, stale_after=stale_after)


def test_ids_that_differ_only_in_case_are_one_execution(redis_server: RedisServer) -> None:
    lower, upper = (
        worker(redis_server, "a"),
        worker(redis_server, "b", execution=EXECUTION_ID.upper()),
    )
    lower.exchange(Counts(60, 60, 0, 60, 0), 1, "t")
    both = upper.exchange(Counts(60, 60, 0, 60, 0), 1, "t")
    assert both is not None and both.counts == Counts(120, 120, 0, 120, 0)
    assert both.live_others == 1


def _ending(shared: SharedCounters, status: str = "completed") -> FleetEnding:
    return FleetEnding(
        shared,
        Counts(5, 5, 0, 5, 0),
        start=(0, "t"),
        status=status,
        reason="finished",
        local_queued=0,
        render=lambda s, view, label: {"status": s, "label": label, "shared": view is not None},
        labels=("label", "finished-label"),
    )


def test_the_last_worker_out_ends_the_execution(redis_server: RedisServer) -> None:
    a, b = worker(redis_server, "a"), worker(redis_server, "b")
    b.exchange(Counts(), 0, "t")
    first_out = _ending(a)
    assert first_out.first()[0] == "running"  # b still crawls
    assert first_out.then() is None
    last_out = _ending(b)
    status, progress = last_out.first()
    assert (status, progress["shared"]) == ("completed", True)
    assert last_out.then() is None  # the ending went out in the first step


def test_a_worker_that_cannot_reach_redis_never_ends_the_execution(
    redis_server: RedisServer,
) -> None:
    a, b = worker(redis_server, "a"), worker(redis_server, "b")
    a.exchange(Counts(), 0, "t")
    b.exchange(Counts(), 0, "t")
    redis_server.stop()
    for status in ("completed", "failed"):
        ending = _ending(a, status)
        sent, progress = ending.first()
        assert (sent, progress["label"]) == ("running", "finished-label")
        assert ending.then() is None


def test_absolute_totals_never_count_twice(redis_server: RedisServer) -> None:
    a, b = worker(redis_server, "a"), worker(redis_server, "b")
    view = a.exchange(Counts(10, 4, 1, 3, 0), 1000, "t0")
    assert view is not None and view.counts == Counts(10, 4, 1, 3, 0)
    again = a.exchange(Counts(10, 4, 1, 3, 0), 1000, "t0")  # a beat whose reply was lost
    assert again is not None and again.counts == view.counts
    both = b.exchange(Counts(2, 5, 0, 5, 1), 900, "t-1")
    assert both is not None
    assert both.counts == Counts(12, 9, 1, 8, 1)
    assert (both.start_ms, both.start_time) == (900, "t-1")  # the earliest start
    assert both.live_others == 1
    fewer = a.exchange(Counts(9, 4, 1, 3, 0), 1000, "t0")  # a chain skipped: total goes down
    assert fewer is not None and fewer.counts.total == 11
    for key in a.keys:
        assert 0 < redis_server.client().ttl(key) <= 600


def test_redis_down_gives_none_then_recovers(redis_server: RedisServer) -> None:
    a = worker(redis_server, "a")
    assert a.exchange(Counts(1, 1, 0, 1, 0), 1, "t") is not None
    redis_server.stop()
    assert a.exchange(Counts(5, 5, 0, 5, 0), 1, "t") is None  # None, not an exception
    redis_server.start()  # its data kept (append-only file)
    view = a.exchange(Counts(7, 6, 0, 6, 0), 1, "t")
    assert view is not None and view.counts == Counts(7, 6, 0, 6, 0)


def test_closing_leaves_and_stale_workers_are_gone(redis_server: RedisServer) -> None:
    a, b = worker(redis_server, "a", stale_after=0.5), worker(redis_server, "b", stale_after=0.5)
    a.exchange(Counts(), 0, "t")
    seen = b.exchange(Counts(), 0, "t")
    assert seen is not None and seen.live_others == 1
    time.sleep(0.7)  # a is silent for longer than 0.5 s: gone (SIGKILLed, say)
    alone = b.exchange(Counts(), 0, "t")
    assert alone is not None and alone.live_others == 0
    a.exchange(Counts(), 0, "t")
    left = a.exchange(Counts(), 0, "t", closing=True)
    assert left is not None and left.live_others == 1
    last = b.exchange(Counts(), 0, "t", closing=True, failed=True)
    assert last is not None and (last.live_others, last.failures) == (0, 1)


def view(
    live: int = 0, failures: int = 0, queued: int | None = 0, crawled: int = 5
) -> ExecutionView:
    return ExecutionView(Counts(5, crawled, 0, 0, 0), 0, "t", failures, live, queued)


def test_final_status_rules() -> None:
    assert final_status("completed", "finished", view(live=1), None) == ("running", True)
    assert final_status("failed", "shutdown", view(live=2), None) == ("running", True)
    assert final_status("completed", "finished", view(failures=1), None) == ("failed", False)
    assert final_status("completed", "finished", view(), None) == ("completed", False)
    # stopped by the orchestrator once the work was done
    assert final_status("failed", "shutdown", view(), None) == ("completed", False)
    assert final_status("failed", "shutdown", view(queued=3), None) == ("failed", False)
    assert final_status("failed", "shutdown", view(crawled=4), None) == ("failed", False)
    assert final_status("paused", "shutdown", view(queued=None), 2) == ("paused", False)
    assert final_status("paused", "shutdown", view(queued=None), 0) == ("completed", False)
    assert final_status("failed", "cancelled", view(), None) == ("failed", False)


def test_a_redis_that_hangs_at_the_close_keeps_to_its_share_of_the_budget(
    redis_server: RedisServer,
) -> None:
    a = worker(redis_server, "a")
    a.exchange(Counts(), 0, "t")
    ending = FleetEnding(
        a,
        Counts(5, 5, 0, 5, 0),
        start=(0, "t"),
        status="completed",
        reason="shutdown",
        local_queued=0,
        render=lambda s, view, label: {"status": s},
        labels=(None, "finished"),
        redis_within=0.5,
    )
    stall = threading.Thread(
        target=lambda: redis_server.client().execute_command("DEBUG", "SLEEP", 3)
    )
    stall.start()
    time.sleep(0.2)  # Redis is asleep now
    began = time.monotonic()
    sent, _ = ending.first()
    took = time.monotonic() - began
    stall.join()
    assert sent == "running"  # it cannot know whether others live: no ending
    assert took < 1.5, took  # its 0.5 s share, not the 2 s socket timeout


@pytest.mark.parametrize(
    ("field", "value"),
    [("total", "abc"), ("successful", "-5"), ("failures", "1e9"), ("start_ms", "x")],
)
def test_what_another_program_writes_into_redis_is_never_trusted(
    redis_server: RedisServer, field: str, value: str
) -> None:
    a = worker(redis_server, "a")
    a.exchange(Counts(3, 2, 0, 2, 0), 1, "t")
    key = next(k for k in a.keys if k.endswith(":totals"))
    redis_server.client().hset(key, field, value)
    view = a.exchange(Counts(3, 2, 0, 2, 0), 1, "t")  # never an exception
    if view is not None:
        counts = view.counts
        assert min(counts.total, counts.successful, counts.failed, counts.items) >= 0
        assert counts.total >= counts.crawled


_redis_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from(["", "1e9", "nan", "-0", "0x10", " 5 ", "9" * 40]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.dictionaries(
        st.sampled_from(["total", "successful", "failed", "items", "errors", "start_ms",
                         "start_time", "failures"]),
        _redis_values,
        max_size=8,
    )
)  # fmt: skip
def test_any_redis_hash_contents_give_a_valid_view_or_none(
    redis_server: RedisServer, fields: dict[str, Any]
) -> None:
    a = worker(redis_server, "a", execution=str(uuid.uuid4()))
    key = next(k for k in a.keys if k.endswith(":totals"))
    if fields:
        redis_server.client().hset(key, mapping=fields)
    view = a.exchange(Counts(3, 2, 1, 2, 0), 1, "t")  # never an exception
    if view is not None:
        counts = view.counts
        assert min(counts.total, counts.successful, counts.failed, counts.items) >= 0
        assert counts.total >= counts.crawled
        assert len(view.start_time) <= 40
    a.close()
