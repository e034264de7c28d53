"""The reference receiver's work off the request path, on its reactor:
every few seconds it settles each execution's liveness, writing the alerts
of each transition in the transaction that claims it (and then wakes the
deliveries); every minute it thins history older than
``--thin-after`` days to one beat per container per five minutes, and
deletes history older than ``--keep-days``, and alerts delivered or given
up over an hour ago. Both go in small steps (a batch of rows each) through
Twisted's cooperator, so that beats keep being answered meanwhile; with a
store that waits on the network (PostgreSQL), on a thread instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import defer, task, threads

from scrapy_heartbeat.server.alerts import Alerts
from scrapy_heartbeat.server.delivery import Deliveries
from scrapy_heartbeat.server.options import ALERT_MAX_AGE_RANGE
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable

logger = logging.getLogger(__name__)

#: Seconds between two settlings of liveness (``serve --check-every``).
CHECK_EVERY = 5.0
#: How long history rows are kept by default (``serve --keep-days``).
KEEP_DAYS = 14.0
#: Seconds between two prunings of history and of the alert outbox.
PRUNE_EVERY = 60.0
#: Seconds an alert delivered or given up stays in the outbox.
ALERTS_KEPT = 3600.0
#: History older than this many days is thinned (``serve --thin-after``).
THIN_AFTER_DAYS = 1.0
#: Thinned history keeps one beat per container per this many seconds.
THIN_BUCKET = 300.0

Steps = Callable[[], Iterator[None]]


class Upkeep:
    def __init__(
        self,
        store: HeartbeatStore,
        alerts: Alerts | None = None,
        deliveries: Deliveries | None = None,
        *,
        clock: Any,
        check_every: float = CHECK_EVERY,
        keep_days: float | None = KEEP_DAYS,
        prune_every: float = PRUNE_EVERY,
        thin_after_days: float | None = THIN_AFTER_DAYS,
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.deliveries = deliveries
        self.keep_days = keep_days
        self.thin_after_days = thin_after_days
        self._thinned_to = 0  # the history id thinning goes on after
        # One step per turn of the reactor: beats are answered between steps.
        self._cooperator = task.Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda work: clock.callLater(0, work),
        )
        self._jobs = [
            _Job(self._settle, check_every, clock, self._settled),
            _Job(self._prune_alerts, prune_every, clock, self._run),
        ]
        if keep_days is not None:
            self._jobs.append(_Job(self._prune, prune_every, clock, self._run))
        if thin_after_days is not None:
            self._jobs.append(_Job(self._thin, prune_every, clock, self._run))
        self._unavailable = False

    def start(self) -> None:
        for job in self._jobs:
            job.start()

    def stop(self) -> None:
        for job in self._jobs:
            job.stop()
        self._cooperator.stop()

    def _run(self, steps: Steps) -> defer.Deferred[Any]:
        if self.store.blocking:  # each step waits on the network: all of them on a thread
            return threads.deferToThread(lambda: list(self._guarded(steps())))
        return self._cooperator.coiterate(self._guarded(steps()))

    def _settled(self, steps: Steps) -> defer.Deferred[Any]:
        """A round of settling, then the alerts it wrote looked for."""
        done = self._run(steps)
        if self.deliveries is not None:
            done.addBoth(_then, self.deliveries.wake)
        return done

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
        then = None if self.alerts is None else self.alerts.statements
        for found in self.store.settle(now, then=then):
            if found is None:  # a batch read: let the reactor answer beats
                yield None
                continue
            old, new = found["old_liveness"], found["liveness"]
            log = logger.debug if old is None and new == "running" else logger.info
            log("execution %s: %s -> %s", found["execution_id"], old, new)
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

    def _prune_alerts(self) -> Iterator[None]:
        """Alerts delivered or given up over :data:`ALERTS_KEPT` ago, and
        those still waiting past any receiver's ``--alert-max-age``: their
        webhook is no receiver's any more."""
        now = time.time()
        orphaned_before = now - ALERT_MAX_AGE_RANGE[1] - ALERTS_KEPT
        while self.store.prune_alerts(now - ALERTS_KEPT, orphaned_before) > 0:
            yield None

    def _thin(self) -> Iterator[None]:
        """Thin old history from where the last round stopped (from the
        start after a restart: ranges thinned already cost little)."""
        assert self.thin_after_days is not None
        before = time.time() - self.thin_after_days * 86400
        while (after := self.store.thin(self._thinned_to, before, THIN_BUCKET)) is not None:
            self._thinned_to = after
            yield None


def _then(result: object, call: Callable[[], None]) -> object:
    call()
    return result


class _Job:
    """``steps`` run every ``every`` seconds by ``run``; a round that has
    not finished when the next is due makes that one skip."""

    def __init__(
        self,
        steps: Steps,
        every: float,
        clock: Any,
        run: Callable[[Steps], defer.Deferred[Any]],
    ) -> None:
        self.steps = steps
        self.every = every
        self.run = run
        self.busy = False
        self.loop = task.LoopingCall(self._round)
        self.loop.clock = clock

    def start(self) -> None:
        self.loop.start(self.every, now=True)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()

    def _round(self) -> None:
        if self.busy:
            return
        self.busy = True
        self.run(self.steps).addBoth(self._done)

    def _done(self, _: object) -> None:
        self.busy = False
