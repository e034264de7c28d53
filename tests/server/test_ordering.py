"""Beats that arrive out of order: per container, an older beat never
replaces a newer one, and a final status is never reopened by an older beat
(a retry, two receivers behind a load balancer, a worker's last ``running``
overtaken by the fleet's ending). On both backends, and over real HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapy_heartbeat.server import HeartbeatStore, open_store
from tests.server.serving import EXECUTIONS, Serve

T0 = 1_800_000_000


def beat(eid: str, ts: int, status: str, crawled: int, container: str = "c1") -> dict[str, Any]:
    return {
        "execution_id": eid,
        "container_id": container,
        "timestamp": ts,
        "status": status,
        "progress": {"total_urls": 100, "crawled_urls": crawled, "data_items": crawled},
    }


@pytest.fixture(scope="module")
def stores(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, HeartbeatStore]]:
    """One store per backend, shared by the module's examples (each uses
    executions of its own)."""
    pg = request.getfixturevalue("postgres_server").database()
    opened = {
        "sqlite": open_store(str(tmp_path_factory.mktemp("order") / "hb.sqlite3")),
        "postgresql": open_store(pg),
    }
    yield opened
    for store in opened.values():
        store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, stores: dict[str, HeartbeatStore]) -> HeartbeatStore:
    return stores[request.param]


def state(store: HeartbeatStore, eid: str) -> tuple[str, int]:
    found = store.execution(eid, T0 + 30)
    assert found is not None
    return found["status"], found["progress"]["crawled_urls"]


def test_an_older_running_beat_does_not_reopen_a_final_one(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    store.add(beat(eid, T0 + 10, "completed", 100), T0 + 10)
    store.add(beat(eid, T0 + 5, "running", 95), T0 + 11)  # sent earlier, arrives later
    assert state(store, eid) == ("completed", 100)
    [container] = store.containers(eid, T0 + 30)
    assert (container["status"], container["progress"]["crawled_urls"]) == ("completed", 100)
    assert store.execution(eid, T0 + 10**6)["liveness"] == "completed"  # type: ignore[index]


def test_a_running_beat_of_the_same_second_does_not_reopen_it(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    store.add(beat(eid, T0, "failed", 40), T0)
    store.add(beat(eid, T0, "running", 39), T0 + 1)
    assert state(store, eid) == ("failed", 40)


def test_a_newer_beat_reopens_it(store: HeartbeatStore) -> None:
    """A resumed crawl: its beats are newer than the final one."""
    eid = str(uuid.uuid4())
    store.add(beat(eid, T0, "paused", 40), T0)
    store.add(beat(eid, T0 + 20, "running", 41), T0 + 20)
    assert state(store, eid) == ("running", 41)


def test_an_older_beat_still_counts_as_heard(store: HeartbeatStore) -> None:
    """What the client said is taken from the newer beat; that the sender
    is alive, from every beat."""
    eid = str(uuid.uuid4())
    store.add(beat(eid, T0 + 10, "running", 50), T0 + 10)
    store.add(beat(eid, T0 + 5, "running", 45), T0 + 12)
    found = store.execution(eid, T0 + 13)
    assert found is not None
    assert found["progress"]["crawled_urls"] == 50
    assert found["beats"] == 2
    assert found["seconds_since_last_beat"] == 1


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plan=st.lists(
        st.sampled_from(["running", "running", "paused", "completed", "failed"]),
        min_size=1,
        max_size=8,
    ),
    order=st.randoms(use_true_random=False),
    containers=st.integers(1, 3),
)
def test_any_arrival_order_ends_in_the_newest_state(
    store: HeartbeatStore, plan: list[str], order: Any, containers: int
) -> None:
    """Beats sent a second apart and stored in any order: each container
    ends as its newest beat said, and so does the execution of a single
    container (across containers, beats sent within a delivery's delay of
    each other may be taken in the order they arrive)."""
    eid = str(uuid.uuid4())
    sent = [
        beat(eid, T0 + i, status, i, container=f"c{i % containers}")
        for i, status in enumerate(plan)
    ]
    arrival = list(sent)
    order.shuffle(arrival)
    for n, body in enumerate(arrival):
        store.add(body, T0 + 100 + n)
    newest = sent[-1]
    if containers == 1:
        assert state(store, eid) == (newest["status"], newest["progress"]["crawled_urls"])
    for container in store.containers(eid, T0 + 200):
        mine = [b for b in sent if b["container_id"] == container["container_id"]][-1]
        assert container["status"] == mine["status"]
        assert container["progress"]["crawled_urls"] == mine["progress"]["crawled_urls"]


def test_out_of_order_over_http(serve: Callable[..., Serve]) -> None:
    receiver = serve()
    eid = str(uuid.uuid4())
    now = int(time.time())
    assert receiver.post(beat(eid, now, "completed", 100)).status_code == 200
    assert receiver.post(beat(eid, now - 5, "running", 95)).status_code == 200
    found = receiver.get(f"{EXECUTIONS}/{eid}").json()
    assert (found["status"], found["progress"]["crawled_urls"]) == ("completed", 100)
    assert [h["status"] for h in found["history"]] == ["completed", "running"]  # all kept


def test_a_final_beat_from_a_lagging_clock_still_ends_the_execution(
    store: HeartbeatStore,
) -> None:
    """The fleet's ending sent by a worker whose clock is an hour behind;
    then another worker's beat sent before it, delivered after it."""
    eid = str(uuid.uuid4())
    store.add(beat(eid, T0, "running", 50, container="ahead"), T0)
    store.add(beat(eid, T0 - 3600 + 5, "completed", 100, container="behind"), T0 + 5)
    assert state(store, eid) == ("completed", 100)
    store.add(beat(eid, T0 + 2, "running", 60, container="ahead"), T0 + 10)
    assert state(store, eid) == ("completed", 100)
    [ahead] = [c for c in store.containers(eid, T0 + 11) if c["container_id"] == "ahead"]
    assert ahead["progress"]["crawled_urls"] == 60  # its own state moves on


def test_a_clock_far_ahead_does_not_freeze_the_state(store: HeartbeatStore) -> None:
    """A container whose clock read a year ahead, then was set right: its
    own state follows at once; the execution's from the beat after (a clock
    that was set is learnt from one beat, used for the next, so that a beat
    delayed for minutes is never taken for one)."""
    eid = str(uuid.uuid4())
    now = time.time()
    store.add(beat(eid, int(now) + 365 * 86400, "running", 10), now)
    store.add(beat(eid, int(now) + 400, "running", 20), now + 400)
    [container] = store.containers(eid, now + 401)
    assert container["progress"]["crawled_urls"] == 20
    store.add(beat(eid, int(now) + 430, "running", 30), now + 430)
    assert store.execution(eid, now + 431)["progress"]["crawled_urls"] == 30  # type: ignore[index]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    gaps=st.lists(
        st.tuples(st.integers(1, 4000), st.booleans()),
        min_size=1,
        max_size=7,
    )
)
def test_the_interval_is_the_median_of_the_last_three_gaps(
    store: HeartbeatStore, gaps: list[tuple[int, bool]]
) -> None:
    """Against a model: a gap after a ``paused`` beat is not counted; of the
    last three gaps counted the median, of two the larger, of one itself."""
    eid = str(uuid.uuid4())
    at, counted = T0, []
    store.add(beat(eid, at, "running", 0), at)
    previous_paused = False
    for n, (gap, paused) in enumerate(gaps, 1):
        at += gap
        if not previous_paused:
            counted.append(gap)
        store.add(beat(eid, at, "paused" if paused else "running", n), at)
        previous_paused = paused
    last = counted[-3:]
    expected = None if not last else sorted(last)[len(last) // 2] if len(last) != 2 else max(last)
    [container] = store.containers(eid, at)
    assert container["interval_seconds"] == expected


@pytest.mark.parametrize("container", ["c1", "c2"])
def test_a_beat_delayed_for_minutes_does_not_reopen_a_final_one(
    store: HeartbeatStore, container: str
) -> None:
    """Held by a buffering proxy for over two minutes: not taken for a clock
    that was set, by the same container or another."""
    eid = str(uuid.uuid4())
    store.add(beat(eid, T0 - 30, "running", 90), T0 - 30)
    store.add(beat(eid, T0 - 30, "running", 90, container="c2"), T0 - 30)
    store.add(beat(eid, T0, "completed", 100), T0)
    store.add(beat(eid, T0 - 200, "running", 95, container=container), T0 + 2)
    assert state(store, eid) == ("completed", 100)
