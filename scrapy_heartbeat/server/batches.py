"""Beats stored in batches, one transaction for many: :class:`BatchWriter`
for a store that waits on the network (PostgreSQL), on a thread of its
own; :class:`TickBatcher` for one that does not (SQLite), on the reactor's
thread. A beat is answered only once its transaction is committed."""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol

from twisted.internet import defer

from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable

#: A beat waiting to be stored: its body, when it arrived, and its answer.
_Waiting = tuple[dict[str, Any], float, "defer.Deferred[float]"]


class Batches(Protocol):
    def add(self, body: dict[str, Any], now: float) -> defer.Deferred[float]:
        """Queue a beat received at ``now``; fires with its latency once
        stored, or fails with why not."""

    def drain(self) -> defer.Deferred[None]:
        """Fires once every beat queued so far has its answer."""


class _Unanswered:
    """The beats queued and not answered yet, counted on the reactor's
    thread, and who waits for there to be none (a receiver stopping)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.count = 0
        self.waiting: list[defer.Deferred[None]] = []

    def track(self, done: defer.Deferred[float]) -> defer.Deferred[float]:
        self.count += 1
        return done.addBoth(self._answered)

    def _answered(self, result: Any) -> Any:
        self.count -= 1
        if not self.count and self.waiting:
            # Once this beat's answer is written: the callbacks after this one.
            self.reactor.callLater(0, self._release)
        return result

    def _release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for drained in waiting:
            drained.callback(None)

    def drain(self) -> defer.Deferred[None]:
        if not self.count:
            return defer.succeed(None)
        drained: defer.Deferred[None] = defer.Deferred()
        self.waiting.append(drained)
        return drained


def batches_for(store: HeartbeatStore, reactor: Any) -> Batches:
    """The batching that suits ``store``."""
    if store.blocking:
        return BatchWriter(store, reactor)
    return TickBatcher(store, reactor)


class BatchWriter:
    """One thread takes every beat waiting, up to :attr:`BATCH`, and stores
    them in one transaction, then answers them all. A beat is answered only
    once it is committed; under load the batches grow, and a beat costs the
    receiver a fraction of a round trip and of a thread hand-off."""

    BATCH = 200

    def __init__(self, store: HeartbeatStore, reactor: Any) -> None:
        self.store = store
        self.reactor = reactor
        self.waiting: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self.unanswered = _Unanswered(reactor)
        self.thread = threading.Thread(target=self._run, name="heartbeat-writer", daemon=True)
        self.thread.start()

    def add(self, body: dict[str, Any], now: float) -> defer.Deferred[float]:
        """Queue a beat received at ``now``; fires with its latency once
        stored, or fails with why not."""
        done: defer.Deferred[float] = defer.Deferred()
        self.waiting.put((body, now, done))
        return self.unanswered.track(done)

    def drain(self) -> defer.Deferred[None]:
        """Fires once every beat queued so far has its answer."""
        return self.unanswered.drain()

    def _run(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while len(batch) < self.BATCH:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            self._store(batch)

    def _store(self, batch: list[_Waiting]) -> None:
        for answer, part, outcome in _stored(self.store, batch):
            self.reactor.callFromThread(answer, part, outcome)


class TickBatcher:
    """The beats that arrive while the reactor handles one round of ready
    connections are stored together when the round ends, in one
    transaction: under load a round brings tens of beats, and a commit per
    beat would cost more than the beats themselves. Unloaded, a beat waits
    for nothing but the end of the round it came in."""

    def __init__(self, store: HeartbeatStore, reactor: Any) -> None:
        self.store = store
        self.reactor = reactor
        self.waiting: list[_Waiting] = []
        self.unanswered = _Unanswered(reactor)

    def add(self, body: dict[str, Any], now: float) -> defer.Deferred[float]:
        """Queue a beat received at ``now``; fires with its latency once
        stored, or fails with why not."""
        done: defer.Deferred[float] = defer.Deferred()
        if not self.waiting:
            self.reactor.callLater(0, self._flush)
        self.waiting.append((body, now, done))
        return self.unanswered.track(done)

    def drain(self) -> defer.Deferred[None]:
        """Fires once every beat queued so far has its answer."""
        return self.unanswered.drain()

    def _flush(self) -> None:
        batch, self.waiting = self.waiting, []
        for answer, part, outcome in _stored(self.store, batch):
            answer(part, outcome)


def _stored(store: HeartbeatStore, batch: list[_Waiting]) -> list[tuple[Any, Any, Any]]:
    """Store ``batch`` in one transaction: how to answer which beats, with
    what. One beat the database refuses must not cost the others theirs, so
    a batch refused for anything but the database being away is stored one
    beat at a time."""
    try:
        latencies = store.add_many([(body, now) for body, now, _ in batch])
    except StoreUnavailable as exc:  # a 503 for each
        return [(_fail_all, batch, exc)]
    except Exception as exc:
        if len(batch) == 1:
            return [(_fail_all, batch, exc)]
        return [answer for one in batch for answer in _stored(store, [one])]
    return [(_answer_all, batch, latencies)]


def _answer_all(batch: list[_Waiting], latencies: list[float]) -> None:
    for (_, _, done), latency in zip(batch, latencies, strict=True):
        done.callback(latency)


def _fail_all(batch: list[_Waiting], exc: Exception) -> None:
    for _, _, done in batch:
        done.errback(exc)
