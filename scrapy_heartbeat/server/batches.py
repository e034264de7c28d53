"""Beats stored in batches, for a store that waits on the network
(PostgreSQL): :class:`BatchWriter`."""

from __future__ import annotations

import queue
import threading
from typing import Any

from twisted.internet import defer

from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable

#: A beat waiting to be stored: its body, when it arrived, and its answer.
_Waiting = tuple[dict[str, Any], float, "defer.Deferred[float]"]


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
        self.thread = threading.Thread(target=self._run, name="heartbeat-writer", daemon=True)
        self.thread.start()

    def add(self, body: dict[str, Any], now: float) -> defer.Deferred[float]:
        """Queue a beat received at ``now``; fires with its latency once
        stored, or fails with why not."""
        done: defer.Deferred[float] = defer.Deferred()
        self.waiting.put((body, now, done))
        return done

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
        try:
            latencies = self.store.add_many([(body, now) for body, now, _ in batch])
        except StoreUnavailable as exc:  # a 503 for each
            self.reactor.callFromThread(_fail_all, batch, exc)
        except Exception as exc:
            if len(batch) == 1:
                self.reactor.callFromThread(_fail_all, batch, exc)
            else:  # one beat the database refuses must not cost the others theirs
                for one in batch:
                    self._store([one])
        else:
            self.reactor.callFromThread(_answer_all, batch, latencies)


def _answer_all(batch: list[_Waiting], latencies: list[float]) -> None:
    for (_, _, done), latency in zip(batch, latencies, strict=True):
        done.callback(latency)


def _fail_all(batch: list[_Waiting], exc: Exception) -> None:
    for _, _, done in batch:
        done.errback(exc)
