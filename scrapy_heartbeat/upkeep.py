"""The reference receiver's work off the request path, on its reactor:
every few seconds it settles each execution's liveness and hands the
transitions to the alerts; every minute it deletes history older than
``--keep-days``. Both go in small steps (a batch of rows each) through
Twisted's cooperator, so that beats keep being answered meanwhile; with a
store that waits on the network (PostgreSQL), on a thread instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from twisted.internet import defer, task, threads

from scrapy_heartbeat.alerts import WebhookAlerts, event
from scrapy_heartbeat.store import KEEP_DAYS, HeartbeatStore, StoreUnavailable, iso

logger = logging.getLogger(__name__)

#: Seconds between two settlings of liveness (``serve --check-every``).
CHECK_EVERY = 5.0
PRUNE_EVERY = 60.0


class Upkeep:
    def __init__(
        self,
        store: HeartbeatStore,
        alerts: WebhookAlerts | None = None,
        *,
        clock: Any,
        check_every: float = CHECK_EVERY,
        keep_days: float | None = KEEP_DAYS,
        prune_every: float = PRUNE_EVERY,
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.clock = clock
        self.keep_days = keep_days
        # One step per turn of the reactor: beats are answered between steps.
        self._cooperator = task.Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda work: clock.callLater(0, work),
        )
        self._loops = [task.LoopingCall(self._run, self._settle)]
        self._loops[0].clock = clock
        self._intervals = [check_every]
        if keep_days is not None:
            prune = task.LoopingCall(self._run, self._prune)
            prune.clock = clock
            self._loops.append(prune)
            self._intervals.append(prune_every)
        self._busy: set[str] = set()
        self._unavailable = False

    def start(self) -> None:
        for loop, every in zip(self._loops, self._intervals, strict=True):
            loop.start(every, now=True)

    def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._cooperator.stop()

    def _run(self, steps: Any) -> None:
        name = steps.__name__
        if name in self._busy:  # the last round has not finished: skip this one
            return
        self._busy.add(name)
        done: defer.Deferred[Any]
        if self.store.blocking:  # each step waits on the network: all of them on a thread
            done = threads.deferToThread(lambda: list(self._guarded(steps())))
        else:
            done = self._cooperator.coiterate(self._guarded(steps()))
        done.addBoth(lambda _: self._busy.discard(name))

    def _guarded(self, steps: Iterator[None]) -> Iterator[None]:
        try:
            yield from steps
        except StoreUnavailable as exc:
            if not self._unavailable:
                logger.warning("receiver upkeep paused: %s", exc)
            self._unavailable = True
            return
        except Exception:
            logger.exception("receiver upkeep: unexpected error")
            return
        if self._unavailable:
            logger.info("receiver upkeep: the database is usable again")
        self._unavailable = False

    def _settle(self) -> Iterator[None]:
        now = time.time()
        for found in self.store.settle(now):
            if found is None:  # a batch read: let the reactor answer beats
                yield None
                continue
            old, new = found["old_liveness"], found["liveness"]
            log = logger.debug if old is None and new == "running" else logger.info
            log("execution %s: %s -> %s", found["execution_id"], old, new)
            if self.alerts is not None and self.alerts.wants(new):
                self.alerts.notify(event(found, iso(now)))
            yield None

    def _prune(self) -> Iterator[None]:
        assert self.keep_days is not None
        before = time.time() - self.keep_days * 86400
        total = 0
        while (deleted := self.store.prune(before)) > 0:
            total += deleted
            yield None
        if total:
            logger.info("receiver: deleted %d heartbeats older than %g days", total, self.keep_days)
