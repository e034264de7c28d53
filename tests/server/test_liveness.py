"""The receiver's conclusions about senders (``server/liveness.py``) and how
the store keeps what they need: late, lost, stalled, paused gaps,
transitions settled once across receivers, retention, and databases of 0.1;
and the read API filtering by them, over real HTTP."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapy_heartbeat.server import HeartbeatStore, LivenessRules, open_store, schema
from scrapy_heartbeat.server.listing import DECIDED, decode_cursor, page
from scrapy_heartbeat.server.schema import ExecutionRow
from scrapy_heartbeat.server.store import StoreUnavailable
from tests.crawl import wait_for
from tests.server.beats import worker_beat
from tests.server.serving import EXECUTIONS, Serve

T0 = 1_800_000_000.0


def beat(execution_id: str, container: str = "c1", **kwargs: Any) -> dict[str, Any]:
    crawled = kwargs.pop("crawled", 1)
    return {
        "execution_id": execution_id,
        "container_id": container,
        "timestamp": int(T0),
        "status": kwargs.pop("status", "running"),
        "progress": {"total_urls": 100, "crawled_urls": crawled, "data_items": 0},
        **kwargs,
    }


@pytest.fixture
def store(db: str) -> Any:
    s = open_store(db, LivenessRules(stall_after=100))
    yield s
    s.close()


def liveness(store: HeartbeatStore, execution_id: str, now: float) -> str:
    found = store.execution(execution_id, now)
    assert found is not None
    return str(found["liveness"])


@pytest.mark.parametrize(
    ("status", "silent", "interval", "still", "expected"),
    [
        ("running", 10, 30, 0, "running"),
        ("running", 61, 30, 0, "late"),  # over 2 intervals
        ("running", 299, 30, 0, "late"),  # 10 intervals is 300 s: not lost yet
        ("running", 301, 30, 0, "lost"),
        ("running", 301, 5, 0, "lost"),  # 10 intervals is 50 s, but at least 5 minutes
        ("running", 290, 5, 0, "late"),
        ("running", 599, 60, 0, "late"),  # 10 intervals of 60 s: 600 s
        ("running", 601, 60, 0, "lost"),
        ("running", 61, None, 0, "late"),  # the spec's 30 s until two beats
        ("running", 10, 30, 601, "stalled"),
        ("running", 61, 30, 601, "late"),  # silence says more than stillness
        ("paused", 10**6, 30, 10**6, "paused"),
        ("completed", 10**6, 30, 0, "completed"),
        ("failed", 10**6, 30, 0, "failed"),
    ],
)
def test_rules(
    status: str, silent: float, interval: float | None, still: float, expected: str
) -> None:
    assert LivenessRules().decide(status, silent, interval, still) == expected


def test_lost_after_given_is_never_before_late() -> None:
    rules = LivenessRules(lost_after=5)
    assert rules.decide("running", 6, 1, 0) == "lost"
    assert rules.decide("running", 59, 30, 0) == "running"  # never lost before late
    assert rules.decide("running", 61, 30, 0) == "lost"
    assert rules.lost_threshold(30) == 60


def test_late_lost_and_revived(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    for i in range(3):  # every 10 s
        store.add(beat(eid, crawled=i), T0 + 10 * i)
    last = T0 + 20
    assert store.execution(eid, last + 5)["interval_seconds"] == 10  # type: ignore[index]
    assert liveness(store, eid, last + 19) == "running"
    assert liveness(store, eid, last + 21) == "late"
    assert liveness(store, eid, last + 301) == "lost"
    assert [e["execution_id"] for e in store.executions("lost", last + 301)] == [eid]
    assert store.executions("stale", last + 301)[0]["execution_id"] == eid
    assert store.executions("late", last + 301) == []
    store.add(beat(eid, crawled=5), last + 400)  # a beat after lost revives it
    assert liveness(store, eid, last + 401) == "running"
    assert store.execution(eid, last + 401)["status"] == "running"  # type: ignore[index]


def test_stalled_when_counters_do_not_move(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    for i in range(30):  # beating every 10 s, crawled stuck at 7 from the start
        store.add(beat(eid, crawled=7), T0 + 10 * i)
    now = T0 + 290
    found = store.execution(eid, now)
    assert found is not None
    assert found["liveness"] == "stalled"  # stall_after=100 in this fixture
    assert found["seconds_since_progress"] == 290
    store.add(beat(eid, crawled=8), now + 10)
    assert liveness(store, eid, now + 11) == "running"
    # Beats without progress move nothing.
    for i in range(2, 14):
        store.add({**beat(eid), "progress": None}, now + 10 * i)
    assert liveness(store, eid, now + 135) == "stalled"


def test_a_pause_is_not_an_interval_and_restarts_the_stall_clock(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    store.add(beat(eid, crawled=3), T0)
    store.add(beat(eid, crawled=3), T0 + 10)
    store.add(beat(eid, crawled=3, status="paused"), T0 + 20)
    assert liveness(store, eid, T0 + 10**5) == "paused"  # silent a day: expected
    store.add(beat(eid, crawled=3), T0 + 10**5)  # resumed, same counters
    found = store.execution(eid, T0 + 10**5 + 5)
    assert found is not None
    assert found["interval_seconds"] == 10  # the gap after the pause is not counted
    assert found["liveness"] == "running"  # not stalled: the clock restarted at resume


def test_an_execution_is_as_alive_as_its_freshest_container(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    for i in range(4):
        store.add(beat(eid, "a", crawled=i), T0 + 30 * i)
        store.add(beat(eid, "b", crawled=i), T0 + 30 * i + 1)
    store.add(beat(eid, "a", crawled=9), T0 + 120)
    found = store.execution(eid, T0 + 160)
    assert found is not None
    # Beats of the execution come 1 s and 29 s apart; its containers' interval is 30 s.
    assert found["interval_seconds"] == 30
    assert found["liveness"] == "running"
    containers = {c["container_id"]: c for c in store.containers(eid, T0 + 160)}
    assert containers["a"]["liveness"] == "running"
    assert containers["b"]["liveness"] == "late"  # silent since T0 + 91


def test_settle_yields_each_transition_once_across_receivers(db: str) -> None:
    one, two = open_store(db), open_store(db)
    try:
        eid = str(uuid.uuid4())
        one.add(beat(eid), T0)
        one.add(beat(eid), T0 + 10)
        first = [(e["old_liveness"], e["liveness"]) for e in one.settle(T0 + 11)]
        assert first == [(None, "running")]
        assert list(two.settle(T0 + 12)) == []  # settled already
        # Both see it late; only one of them claims the transition.
        late_one = list(one.settle(T0 + 40))
        late_two = list(two.settle(T0 + 40))
        assert [(e["old_liveness"], e["liveness"]) for e in late_one + late_two] == [
            ("running", "late")
        ]
        two.add(beat(eid, status="failed"), T0 + 41)
        ended = list(two.settle(T0 + 42)) + list(one.settle(T0 + 42))
        assert [(e["old_liveness"], e["liveness"]) for e in ended] == [("late", "failed")]
        assert list(one.settle(T0 + 10**6)) == []  # finished: settled for good
    finally:
        one.close()
        two.close()


def test_settle_reads_in_batches(store: HeartbeatStore) -> None:
    ids = sorted(str(uuid.uuid4()) for _ in range(23))
    for eid in ids:
        store.add(beat(eid), T0)
    steps = list(store.settle(T0 + 1, batch=5))
    settled = [e for e in steps if e is not None]
    assert sorted(e["execution_id"] for e in settled) == ids
    assert steps.count(None) == 4  # after each full batch: the caller's turn


def test_prune_keeps_the_latest_state(store: HeartbeatStore) -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    for i in range(25):
        store.add(beat(old, crawled=i), T0 + i)
    for i in range(5):
        store.add(beat(new, crawled=i), T0 + 1000 + i)
    deleted = [store.prune(T0 + 500, batch=10) for _ in range(4)]
    assert deleted == [10, 10, 5, 0]
    assert store.count() == 5
    assert store.history(old) == []
    found = store.execution(old, T0 + 1001)
    assert found is not None and found["progress"]["crawled_urls"] == 24
    assert found["beats"] == 25
    assert len(store.history(new)) == 5


def test_a_database_of_0_1_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the 0.1 schema, with one execution in it
        db.executescript(
            """
            CREATE TABLE heartbeats (id INTEGER PRIMARY KEY, execution_id TEXT NOT NULL,
                container_id TEXT NOT NULL, status TEXT, client_timestamp INTEGER NOT NULL,
                received_at REAL NOT NULL, latency REAL NOT NULL, progress TEXT);
            CREATE TABLE executions (execution_id TEXT PRIMARY KEY, container_id TEXT NOT NULL,
                status TEXT NOT NULL, progress TEXT, first_seen REAL NOT NULL,
                last_seen REAL NOT NULL, beats INTEGER NOT NULL, latency REAL NOT NULL);
            CREATE TABLE containers (execution_id TEXT NOT NULL, container_id TEXT NOT NULL,
                status TEXT NOT NULL, progress TEXT, first_seen REAL NOT NULL,
                last_seen REAL NOT NULL, beats INTEGER NOT NULL,
                PRIMARY KEY (execution_id, container_id));
            """
        )
        eid = str(uuid.uuid4())
        db.execute(
            "INSERT INTO executions VALUES (?, 'c1', 'running', NULL, ?, ?, 1, 0.1)",
            (eid, T0, T0),
        )
        db.execute(
            "INSERT INTO containers VALUES (?, 'c1', 'running', NULL, ?, ?, 1)", (eid, T0, T0)
        )
    store = HeartbeatStore(str(path))
    try:
        assert liveness(store, eid, T0 + 61) == "late"
        store.add(beat(eid, crawled=2), T0 + 70)
        found = store.execution(eid, T0 + 71)
        assert found is not None
        assert (found["beats"], found["interval_seconds"], found["liveness"]) == (2, 70, "running")
    finally:
        store.close()


def test_liveness_filters_in_the_read_api(serve: Callable[..., Serve], db: str) -> None:
    s = serve("--check-every", "0.2", "--lost-after", "1", db=db)
    quiet, alive = str(uuid.uuid4()), str(uuid.uuid4())
    s.post(worker_beat(quiet))
    s.post(worker_beat(quiet))
    wait_for(
        lambda: (
            [e["execution_id"] for e in s.get(EXECUTIONS + "?status=lost").json()["executions"]]
            == [quiet]
        ),
        20,
        "lost",
    )
    s.post(worker_beat(alive))
    listed = {e["execution_id"]: e for e in s.get(EXECUTIONS).json()["executions"]}
    assert listed[quiet]["liveness"] == "lost" and listed[quiet]["status"] == "running"
    assert listed[quiet]["stale"] is True
    assert listed[alive]["liveness"] == "running"
    detail = s.get(f"{EXECUTIONS}/{quiet}").json()
    assert detail["containers"][0]["liveness"] == "lost"
    refused = s.get(EXECUTIONS + "?status=dead")
    assert refused.status_code == 400
    assert "late, lost, stalled, stale, active" in refused.json()["message"]


def test_one_long_gap_does_not_stretch_the_interval(store: HeartbeatStore) -> None:
    """The receiver down for an hour, then the container dies: it is lost
    after the usual 5 minutes, not after ten of its mean gaps."""
    eid = str(uuid.uuid4())
    moments = [T0 + 30 * i for i in range(6)]
    moments += [moments[-1] + 3600 + 30 * i for i in range(3)]
    for i, at in enumerate(moments):
        store.add(beat(eid, crawled=i), at)
    last = moments[-1]
    assert store.execution(eid, last + 1)["interval_seconds"] == 30  # type: ignore[index]
    assert liveness(store, eid, last + 301) == "lost"


def test_a_changed_interval_is_learnt_in_two_beats(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    moments = [T0 + 10 * i for i in range(20)]
    moments += [moments[-1] + 60 * i for i in range(1, 3)]
    for i, at in enumerate(moments):
        store.add(beat(eid, crawled=i), at)
    last = moments[-1]
    assert store.execution(eid, last + 1)["interval_seconds"] == 60  # type: ignore[index]
    assert liveness(store, eid, last + 59) == "running"


def test_a_receiver_that_could_not_hear_gives_a_fresh_grace(db: str) -> None:
    """Started after an hour down, a receiver blames no sender for that
    hour: silence counts from its start."""
    eid = str(uuid.uuid4())
    earlier = open_store(db)
    start = earlier.heard_since
    earlier.heard_since = start - 4000  # this one has been listening all along
    try:
        for i in range(3):
            earlier.add(beat(eid, crawled=i), start - 3600 + 30 * i)
        assert liveness(earlier, eid, start + 1) == "lost"
        assert [e["liveness"] for e in earlier.settle(start + 1) if e] == ["lost"]
    finally:
        earlier.close()
    later = open_store(db)
    try:
        heard = later.heard_since
        assert heard >= start
        assert liveness(later, eid, heard + 1) == "running"
        assert liveness(later, eid, heard + 61) == "late"
        assert liveness(later, eid, heard + 301) == "lost"
        # What a receiver that heard all along settled stands.
        assert [e for e in later.settle(heard + 1) if e] == []
    finally:
        later.close()


def test_a_new_eid_after_a_restart_is_settled_without_a_lost_alert(db: str) -> None:
    eid = str(uuid.uuid4())
    earlier = open_store(db)
    earlier.add(beat(eid), earlier.heard_since - 3600)
    earlier.close()
    later = open_store(db)
    try:
        found = [e for e in later.settle(later.heard_since + 1) if e]
        assert [(e["old_liveness"], e["liveness"]) for e in found] == [(None, "running")]
    finally:
        later.close()


def test_the_end_of_a_database_outage_gives_a_fresh_grace(tmp_path: Path) -> None:
    path = str(tmp_path / "hb.sqlite3")
    store = open_store(path)
    eid = str(uuid.uuid4())
    try:
        store.add(beat(eid), store.heard_since)
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable):
            store.add(beat(str(uuid.uuid4())), store.heard_since + 1)
        before = store.heard_since
        locker.execute("COMMIT")
        locker.close()
        store.add(beat(str(uuid.uuid4())), before + 2)
        assert store.heard_since > before
    finally:
        store.close()


def test_a_settle_after_an_outage_gives_the_grace_before_concluding(tmp_path: Path) -> None:
    """The database locked for longer than lost_after: the first check once
    it is back must not call lost what it could not hear."""
    path = str(tmp_path / "hb.sqlite3")
    store = open_store(path, LivenessRules(lost_after=6))
    try:
        now = time.time()
        store.heard_since = now - 3600  # listening all along, until the outage
        eid = str(uuid.uuid4())
        for i in range(3):
            store.add(beat(eid, crawled=i), now - 22 + i)
        assert [e["liveness"] for e in store.settle(now - 19) if e] == ["running"]
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable):
            list(store.settle(now - 10))
        locker.execute("COMMIT")
        locker.close()
        assert [e for e in store.settle() if e] == []  # not lost: silent through the outage
        assert liveness(store, eid, time.time()) == "running"
    finally:
        store.close()


def test_a_restart_makes_no_false_recovery(db: str) -> None:
    """An execution a receiver settled late, silent since (lost by now, had
    anyone heard): a receiver that starts afterwards yields no late ->
    running, and lost once its own grace is over."""
    eid = str(uuid.uuid4())
    earlier = open_store(db)
    start = earlier.heard_since
    earlier.heard_since = start - 4000
    try:
        for i in range(3):
            earlier.add(beat(eid, crawled=i), start - 500 + 30 * i)
        assert [e["liveness"] for e in earlier.settle(start - 360) if e] == ["late"]
    finally:
        earlier.close()
    later = open_store(db)
    try:
        assert [e for e in later.settle(later.heard_since + 1) if e] == []
        lost = [e["liveness"] for e in later.settle(later.heard_since + 400) if e]
        assert lost == ["lost"]
    finally:
        later.close()


def test_an_execution_shows_its_latest_containers_only(store: HeartbeatStore) -> None:
    eid = str(uuid.uuid4())
    store.add_many([(beat(eid, f"c{n}"), T0 + n * 0.001) for n in range(1005)])
    detail = store.detail(eid)
    assert detail is not None
    assert detail["container_count"] == 1005
    assert len(detail["containers"]) == 1000
    assert detail["containers"][0]["container_id"] == "c1004"


#: A gap between two arrival times: none, or a microsecond at least (the
#: clock's resolution), so that no product of two underflows on PostgreSQL.
_gap = st.none() | st.sampled_from([0.0, 0.5, 10.0, 30.0, 59.9]) | st.floats(1e-6, 900)
_container = st.tuples(st.integers(0, 4), _gap, _gap, _gap)
_execution = st.tuples(
    st.sampled_from(["running", "running", "running", "paused", "completed", "failed"]),
    st.sampled_from([None, "running", "late", "lost", "stalled", "paused", "completed"]),
    st.sampled_from([0.0, 60.0, 300.0, 600.0]) | st.floats(0, 4000),  # silent for
    st.sampled_from([0.0, 100.0]) | st.floats(0, 4000),  # still for
    st.lists(_container, max_size=3),
    st.booleans(),  # settled at its count of beats (as a confirmed lost one is)
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    executions=st.lists(_execution, min_size=1, max_size=12),
    heard_before=st.sampled_from([0.0, 61.0, 3600.0]) | st.floats(0, 4000),
    lost_after=st.none() | st.sampled_from([60.0, 300.0]) | st.floats(1, 2000),
    window=st.integers(1, 5),
)
def test_the_database_reads_exactly_the_executions_whose_liveness_changed(
    db: str,
    executions: list[tuple[Any, ...]],
    heard_before: float,
    lost_after: float | None,
    window: int,
) -> None:
    """Settling asks the database for the executions whose liveness is not
    the one settled, deciding it in SQL: the same ones Python's rules pick,
    for any silence, stillness, gaps, grace and rules, on both databases."""
    store = open_store(db, LivenessRules(lost_after=lost_after, stall_after=100))
    try:
        store.heard_since = T0 - heard_before
        ids = _seed_liveness(store, executions)
        [read] = [store.read(schema.SELECT_EXECUTIONS + " ORDER BY e.execution_id")]
        confirmed = {eid for eid, e in zip(ids, executions, strict=True) if e[-1]}
        expected = [
            row.execution_id
            for row in map(ExecutionRow._make, read)
            if not _settled_for_good(row, row.execution_id in confirmed)
            and (
                store.liveness_of(row, T0) != row.settled_liveness
                or row.settled_liveness == "lost"  # to be confirmed
            )
        ]
        picked, after = [], ""
        while True:
            ends = store.read(schema.SETTLE_WINDOW_END, (after, window - 1))
            until = ends[0][0] if ends else None
            picked += [row[0] for row in store.read(*store._unsettled(T0, after, until))]
            if until is None:
                break
            after = until
        assert sorted(ids) == sorted(r[0] for r in read)
        assert picked == expected
    finally:
        store.close()


def test_a_lost_execution_is_read_again_only_once_it_beats(store: HeartbeatStore) -> None:
    """Settling confirms a lost execution once, then skips it (silence only
    grows) until a beat changes its count of beats, even if the rules
    change meanwhile; a finished one it skips from the start."""
    eid, done = str(uuid.uuid4()), str(uuid.uuid4())
    store.heard_since = T0 - 1
    for i in range(3):
        store.add(beat(eid, crawled=i), T0 + 10 * i)
    store.add(beat(done, status="completed"), T0)

    def read(moment: float) -> list[str]:
        return [row[0] for row in store.read(*store._unsettled(moment, "", None))]

    def settle(moment: float) -> list[tuple[str | None, str]]:
        found = [e for e in store.settle(moment) if e is not None]
        return [(e["old_liveness"], e["liveness"]) for e in found if e["execution_id"] == eid]

    assert settle(T0 + 21) == [(None, "running")]
    assert read(T0 + 22) == []  # running as settled; the completed one skipped
    assert settle(T0 + 400) == [("running", "lost")]
    assert read(T0 + 401) == []  # confirmed by the claim itself
    # As an older receiver left it: lost, not confirmed.
    store._write(("UPDATE executions SET settled_beats = NULL", ()))
    assert read(T0 + 401) == [eid]
    assert settle(T0 + 401) == []  # confirms it
    assert read(T0 + 10_000) == []
    # Not even rules that would now call it late read it again.
    store.rules = LivenessRules(lost_after=100_000, stall_after=store.rules.stall_after)
    assert store.liveness_of(store.rows_of([eid])[0], T0 + 10_000) == "late"
    assert read(T0 + 10_000) == []
    store.add(beat(eid, crawled=9), T0 + 10_000)
    assert read(T0 + 10_001) == [eid]
    assert settle(T0 + 10_001) == [("lost", "running")]


def test_a_beat_during_the_claim_of_lost_keeps_the_execution_read(
    store: HeartbeatStore,
) -> None:
    """A beat that lands between deciding ``lost`` and claiming it leaves
    the execution unconfirmed, so the next round sees the beat."""
    eid = str(uuid.uuid4())
    store.heard_since = T0 - 1
    store.add(beat(eid, crawled=0), T0)
    store.add(beat(eid, crawled=1), T0 + 10)

    def meanwhile(event: dict[str, Any], moment: float) -> list[Any]:
        store.add(beat(eid, crawled=2), moment)
        return []

    events = [e for e in store.settle(T0 + 400, then=meanwhile) if e is not None]
    assert [e["liveness"] for e in events] == ["lost"]
    found = [e for e in store.settle(T0 + 401) if e is not None]
    assert [(e["old_liveness"], e["liveness"]) for e in found] == [("lost", "running")]


def _settled_for_good(row: ExecutionRow, confirmed: bool) -> bool:
    """The model of what settling skips: a status settled as itself, and
    a lost execution confirmed at its count of beats."""
    if row.settled_liveness in ("completed", "failed", "paused"):
        return row.settled_liveness == row.status
    return row.settled_liveness == "lost" and confirmed


def _seed_liveness(store: HeartbeatStore, executions: list[tuple[Any, ...]]) -> list[str]:
    """Rows as the receiver keeps them, written directly: each execution
    with its settled liveness and its containers' gaps."""
    store._write(("DELETE FROM executions", ()), ("DELETE FROM containers", ()))
    ids = []
    for status, settled, silent, still, containers, confirmed in executions:
        eid = str(uuid.uuid4())
        ids.append(eid)
        state = (status, T0 - 5000, T0 - silent, 3, T0 - still, settled)
        statements = [
            (
                "INSERT INTO executions (execution_id, container_id, latency, status, "
                "first_seen, last_seen, beats, moved_at, liveness, settled_beats) "
                "VALUES (?, 'c0', 0.1, ?, ?, ?, ?, ?, ?, ?)",
                (eid, *state, 3 if confirmed else None),
            )
        ]
        for n, (gaps, gap1, gap2, gap3) in enumerate(containers):
            statements.append(
                (
                    "INSERT INTO containers (execution_id, container_id, status, first_seen, "
                    "last_seen, beats, moved_at, liveness, gaps, gap_seconds, gap1, gap2, gap3) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (eid, f"c{n}", *state, gaps, 37.0 * gaps, gap1, gap2, gap3),
                )
            )
        store._write(*statements)
    return ids


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    executions=st.lists(_execution, min_size=1, max_size=12),
    heard_before=st.sampled_from([0.0, 3600.0]) | st.floats(0, 4000),
    lost_after=st.none() | st.floats(1, 2000),
    paging=st.tuples(st.sampled_from(DECIDED), st.integers(1, 4), st.integers(1, 5)),
)
def test_pages_of_a_liveness_filter_list_exactly_its_executions(
    db: str,
    executions: list[tuple[Any, ...]],
    heard_before: float,
    lost_after: float | None,
    paging: tuple[str, int, int],
) -> None:
    """Followed to the end, the pages of ``?status=late`` (lost, stalled,
    stale), which the database decides, list the executions Python's rules
    give that liveness, newest first, each once."""
    status, limit, budget = paging
    store = open_store(db, LivenessRules(lost_after=lost_after, stall_after=100))
    try:
        store.heard_since = T0 - heard_before
        _seed_liveness(store, executions)
        rows = map(ExecutionRow._make, store.read(schema.SELECT_EXECUTIONS))
        wanted = ("late", "lost") if status == "stale" else (status,)
        expected = sorted(
            (
                (row.last_seen, row.execution_id)
                for row in rows
                if store.liveness_of(row, T0) in wanted
            ),
            reverse=True,
        )
        listed, cursor = [], None
        for _ in range(len(executions) + 2):
            found = page(store, status, limit, after=cursor, now=T0, budget=budget)
            assert len(found.executions) <= limit
            listed += [e["execution_id"] for e in found.executions]
            if found.next_cursor is None:
                break
            cursor = decode_cursor(found.next_cursor)
        assert listed == [eid for _, eid in expected]
    finally:
        store.close()


def test_an_execution_added_meanwhile_pushes_none_out_of_a_window(store: HeartbeatStore) -> None:
    """Another receiver (or, on PostgreSQL, the writer's thread) adds an
    execution between finding where a window of settling ends and reading
    it: the window still holds every execution up to its end."""
    store.heard_since = T0 - 7200
    a, added, b, lost, d = sorted(str(uuid.uuid4()) for _ in range(5))
    for eid in (a, b, lost, d):
        store.add(beat(eid), T0 - 3600 if eid == lost else T0)
    until = store.read(schema.SETTLE_WINDOW_END, ("", 2))[0][0]
    assert until == lost
    store.add(beat(added), T0)  # between a and b: inside the window
    picked = [row[0] for row in store.read(*store._unsettled(T0, "", until))]
    assert lost in picked
