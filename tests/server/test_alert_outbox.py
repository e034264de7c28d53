"""Alerts that are never lost: written in the transaction that claims
their transition, delivered from the outbox by whichever receiver claims
them, taken over when a receiver is killed, never dropped in a burst, and
pruned once delivered. Real receivers in processes of their own, real
webhook servers, SQLite and Debian's PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from scrapy_heartbeat.server import open_store, schema
from scrapy_heartbeat.server.alerts import Alerts, webhook_key
from scrapy_heartbeat.server.delivery import DeliveryRules
from tests.crawl import wait_for
from tests.server.beats import worker_beat
from tests.server.serving import Serve
from tests.servers import HeartbeatServer

if TYPE_CHECKING:
    from tests.server.postgres_server import PostgresServer

HOOK = "http://127.0.0.1:9/hook"


def event_ids(hook: HeartbeatServer) -> dict[str, set[str]]:
    """The event ids each execution's alerts came with."""
    found: dict[str, set[str]] = defaultdict(set)
    for body in hook.bodies():
        found[body["execution_id"]].add(body["event_id"])
    return found


def finished(db: str, count: int) -> list[str]:
    """``count`` executions that completed, stored straight in ``db``."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    store = open_store(db)
    try:
        now = time.time()
        store.add_many([(worker_beat(eid, "completed", crawled=3), now) for eid in ids])
    finally:
        store.close()
    return ids


def test_a_transition_is_claimed_with_its_alerts_or_not_at_all(db: str) -> None:
    one, two = open_store(db), open_store(db)
    alerts = Alerts([HOOK, HOOK + "2"])
    try:
        done, broken = str(uuid.uuid4()), str(uuid.uuid4())
        one.add(worker_beat(done, "completed"))
        [event] = [e for e in one.settle(then=alerts.statements) if e]
        assert event["liveness"] == "completed"
        assert one.waiting_alerts() == 2  # one per webhook
        assert [e for e in two.settle(then=alerts.statements) if e] == []  # claimed already
        assert two.waiting_alerts() == 2
        rows = one.read("SELECT event_id, webhook, payload FROM alert_outbox ORDER BY id")
        assert rows[0][0] == rows[1][0]  # one event, one id
        assert {r[1] for r in rows} == {webhook_key(HOOK), webhook_key(HOOK + "2")}
        assert HOOK not in str(rows)  # the URL (and its secrets) is not stored
        assert f'"event_id": "{rows[0][0]}"' in rows[0][2]

        # Writing the alert fails: the transition is not claimed either,
        # so the next settling claims it with its alert.
        one.add(worker_beat(broken, "failed"))
        with pytest.raises(Exception, match="no_such_table"):  # each backend's own error
            list(one.settle(then=lambda e, at: [("INSERT INTO no_such_table VALUES (?)", (1,))]))
        assert one.execution(broken)["liveness"] == "failed"  # as decided now
        assert one.read("SELECT liveness FROM executions WHERE execution_id = ?", (broken,)) == [
            (None,)
        ]
        assert [e["execution_id"] for e in two.settle(then=alerts.statements) if e] == [broken]
        assert two.waiting_alerts() == 4
    finally:
        one.close()
        two.close()


def test_a_lease_runs_out_and_another_receiver_takes_the_alerts_over(db: str) -> None:
    store = open_store(db)
    key = webhook_key(HOOK)
    try:
        finished_ids = finished(db, 3)
        list(store.settle(then=Alerts([HOOK]).statements))
        now = time.time()
        mine = store.claim_alerts(key, "a", now, 0.5, 2)
        assert [r.id for r in mine] == [1, 2]
        assert [r.id for r in store.claim_alerts(key, "b", now, 0.5, 5)] == [3]
        assert store.claim_alerts(key, "b", now, 0.5, 5) == []  # all leased
        assert store.claim_alerts(webhook_key(HOOK + "x"), "b", now + 9, 1, 5) == []
        later = now + 0.6
        taken = store.claim_alerts(key, "b", later, 5, 5)
        assert [r.id for r in taken] == [1, 2, 3]  # a's leases ran out (and b's own)
        assert not store.alert_retry(1, "a", later)  # no longer a's to retry or give up
        assert not store.alert_given_up(2, "a", later)
        assert store.alert_retry(1, "b", later + 10)
        store.alert_delivered(2, later)
        assert store.claim_alerts(key, "c", later + 1, 5, 5) == []  # 1 due later, 3 leased
        # 1 is due again; b's lease on 3 ran out too.
        assert [r.id for r in store.claim_alerts(key, "c", later + 11, 5, 5)] == [1, 3]
        assert store.waiting_alerts() == 2
        assert len(finished_ids) == 3
    finally:
        store.close()


def test_receivers_claiming_together_on_postgres_take_different_alerts(
    postgres_server: PostgresServer,
) -> None:
    db = postgres_server.database()
    finished(db, 200)
    store = open_store(db)
    list(store.settle(then=Alerts([HOOK]).statements))
    got: list[list[int]] = []

    def claim(owner: str) -> None:
        mine = open_store(db)
        try:
            for _ in range(10):
                got.append(
                    [r.id for r in mine.claim_alerts(webhook_key(HOOK), owner, time.time(), 60, 7)]
                )
        finally:
            mine.close()

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    ids = [i for batch in got for i in batch]
    assert len(ids) == len(set(ids)) == 200  # every alert claimed once


def test_the_backoff_doubles_and_stops_at_the_max_age() -> None:
    rules = DeliveryRules(backoff=1, max_age=100)
    assert [rules.next_attempt(n, 0, 0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert rules.next_attempt(7, 0, 30) == 94
    assert rules.next_attempt(7, 0, 40) is None  # 104: past its max age
    assert DeliveryRules(backoff=1).next_attempt(40, 0, 0) == 600  # at most 10 minutes apart
    assert DeliveryRules(retries=2).next_attempt(3, 0, 0) is None


def test_a_receiver_killed_mid_burst_loses_no_alert(serve: Callable[..., Serve], db: str) -> None:
    """A webhook taking 1 s per event; the receiver is SIGKILLed with
    attempts under way and alerts waiting, then started again: every alert
    arrives, any twice with the same event id."""
    hook = HeartbeatServer(behaviour="slow:1")
    try:
        args = (
            "--check-every", "0.2", "--webhook", hook.url + "/hook",
            "--alert-timeout", "3", "--alert-lease", "4",
        )  # fmt: skip
        first = serve(*args, db=db)
        ids = [str(uuid.uuid4()) for _ in range(20)]
        for eid in ids:
            assert first.post(worker_beat(eid, "completed", crawled=3)).status_code == 200
        wait_for(lambda: len(hook.received) >= 6, 30, "some alerts")
        first.process.kill()
        first.process.wait(10)
        got = len(event_ids(hook))
        assert got < 20  # killed mid-burst
        serve(*args, db=db)
        wait_for(lambda: set(event_ids(hook)) == set(ids), 60, "every alert")
        assert all(len(events) == 1 for events in event_ids(hook).values())
        assert {b["new_state"] for b in hook.bodies()} == {"completed"}
    finally:
        hook.stop()


def test_two_receivers_on_one_postgres_one_killed_lose_no_alert(
    serve: Callable[..., Serve], postgres_server: PostgresServer
) -> None:
    db = postgres_server.database()
    hook = HeartbeatServer(behaviour="slow:1")
    try:
        args = (
            "--check-every", "0.2", "--webhook", hook.url + "/hook",
            "--alert-timeout", "3", "--alert-lease", "4",
        )  # fmt: skip
        one, two = serve(*args, db=db), serve(*args, db=db)
        ids = [str(uuid.uuid4()) for _ in range(24)]
        for i, eid in enumerate(ids):
            receiver = one if i % 2 else two
            assert receiver.post(worker_beat(eid, "completed", crawled=3)).status_code == 200
        wait_for(lambda: len(hook.received) >= 6, 30, "some alerts")
        one.process.kill()
        one.process.wait(10)
        wait_for(lambda: set(event_ids(hook)) == set(ids), 60, "every alert")
        assert all(len(events) == 1 for events in event_ids(hook).values())
    finally:
        hook.stop()


def test_a_burst_of_1500_transitions_is_delivered_whole(
    serve: Callable[..., Serve], db: str
) -> None:
    hook = HeartbeatServer()
    try:
        ids = finished(db, 1500)  # all settled in the receiver's first check
        serve("--check-every", "0.5", "--webhook", hook.url + "/hook", db=db)
        wait_for(lambda: len(event_ids(hook)) == 1500, 120, "1500 alerts")
        assert set(event_ids(hook)) == set(ids)
        assert all(len(events) == 1 for events in event_ids(hook).values())
    finally:
        hook.stop()


def test_delivered_and_given_up_alerts_are_pruned(serve: Callable[..., Serve], db: str) -> None:
    store = open_store(db)
    now = time.time()
    try:
        for n in range(5):  # for a webhook this receiver does not have: they wait
            store._write((schema.INSERT_ALERT, (f"e{n}", "k", "{}", now - 7200, now - 7200)))
        store.alert_delivered(1, now - 7200)
        store.alert_delivered(2, now - 60)  # an hour is not over
        store.claim_alerts("k", "gone", now, 60, 5)
        store.alert_given_up(3, "gone", now - 7200)
        # Waiting for 40 days: a webhook no receiver has any more.
        store._write((schema.INSERT_ALERT, ("e5", "k2", "{}", now - 40 * 86400, now)))
    finally:
        store.close()
    s = serve("--check-every", "0.2", db=db)

    def left() -> list[str]:
        reader = open_store(s.db)
        try:
            return sorted(r[0] for r in reader.read("SELECT event_id FROM alert_outbox"))
        finally:
            reader.close()

    wait_for(lambda: left() == ["e1", "e3", "e4"], 20, "pruned")


def test_a_lease_must_outlast_an_attempt() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scrapy_heartbeat", "serve",
         "--alert-timeout", "10", "--alert-lease", "5"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "scrapy-heartbeat serve: --alert-lease 5 must be more than --alert-timeout 10, "
        "or an attempt could outlive its claim"
    )
