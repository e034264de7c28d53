"""Alerts delivered from ``alert_outbox``, by whichever receiver claims
them: the table is the queue, so a burst drops nothing, and a receiver that
stops or crashes loses nothing.

For each webhook, a receiver leases the oldest due alerts to itself, as
many as it has free of :attr:`DeliveryRules.concurrency` attempts, until
``now + lease``; a lease that runs out (its receiver was killed) lets any
receiver claim the alert again. An alert is marked delivered only after a
2xx; after any other outcome it is due again after a backoff that doubles
(``backoff``, twice that, ... at most :data:`MAX_BACKOFF`), until it is
``max_age`` old (or ``retries`` were made): then it is given up, with one
WARNING line. A 3xx or a 4xx other than 408 and 429 is given up at once:
the same request to the same URL gets the same answer. So delivery is at
least once: an attempt whose 2xx was not recorded (the receiver killed in
between) is made again, with the same ``event_id``.

Each attempt is :func:`.webhook.post`'s, bounded whole by ``timeout``,
which the lease must exceed. Every line logged shows a webhook by its
origin only (``https://hooks.slack.com/…``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet import defer, task, threads
from twisted.python.failure import Failure

from scrapy_heartbeat.redact import url_origin
from scrapy_heartbeat.server import webhook
from scrapy_heartbeat.server.alerts import webhook_key
from scrapy_heartbeat.server.schema import AlertRow
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable

logger = logging.getLogger(__name__)

#: Seconds an attempt may take in all (``serve --alert-timeout``).
TIMEOUT = 10.0
#: Seconds a claimed alert is a receiver's own (``serve --alert-lease``).
LEASE = 60.0
#: Seconds before the first retry (``serve --alert-backoff``).
BACKOFF = 1.0
#: The longest wait between two attempts, seconds.
MAX_BACKOFF = 600.0
#: An alert older than this many seconds is given up after its next failed
#: attempt (``serve --alert-max-age``).
MAX_AGE = 86400.0
#: Attempts at once per webhook (``serve --alert-concurrency``).
CONCURRENCY = 4
#: Seconds between two looks at the outbox when nothing woke the receiver
#: (a transition it settled, an attempt that ended): alerts another
#: receiver wrote, retries coming due, leases running out.
POLL = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class DeliveryRules:
    timeout: float = TIMEOUT
    lease: float = LEASE
    backoff: float = BACKOFF
    max_age: float = MAX_AGE
    concurrency: int = CONCURRENCY
    #: Retries at most, besides ``max_age`` (None: as many as it allows).
    retries: int | None = None
    poll: float = POLL

    def next_attempt(self, failed: int, created: float, now: float) -> float | None:
        """When to try again after ``failed`` failed attempts, or None to
        give up."""
        if self.retries is not None and failed > self.retries:
            return None
        at = now + min(self.backoff * 2 ** min(failed - 1, 30), MAX_BACKOFF)
        return None if at > created + self.max_age else at


class Deliveries:
    """Drains the outbox to each webhook, on the reactor."""

    def __init__(
        self,
        store: HeartbeatStore,
        urls: Sequence[str],
        rules: DeliveryRules,
        *,
        reactor: Any,
    ) -> None:
        self.store = store
        self.owner = uuid.uuid4().hex  # this receiver, while it runs
        self._reactor = reactor
        self._hooks = [_Hook(store, url, rules, reactor, self.owner) for url in urls]

    def start(self) -> None:
        for hook in self._hooks:
            hook.start()
        # The attempts under way end as the reactor shuts down, before
        # stop() runs: they are cut by us, not failed by their webhook.
        self._reactor.addSystemEventTrigger("before", "shutdown", self._stopping)

    def _stopping(self) -> None:
        for hook in self._hooks:
            hook.stopped = True

    def wake(self) -> None:
        """Look for due alerts now (a transition was just written)."""
        for hook in self._hooks:
            hook.pump()

    def stop(self) -> None:
        """Stop, and hand back this receiver's leases (the reactor stopped:
        its attempts are over) so that the next to claim need not wait."""
        for hook in self._hooks:
            hook.stop()
        try:
            self.store.release_alerts(self.owner)
        except StoreUnavailable as exc:
            logger.warning("alert leases not handed back (they run out): %s", exc)


class _Hook:
    """One webhook's deliveries."""

    def __init__(
        self, store: HeartbeatStore, url: str, rules: DeliveryRules, reactor: Any, owner: str
    ) -> None:
        self.store = store
        self.url = url
        self.key = webhook_key(url)
        self.shown = url_origin(url)
        self.rules = rules
        self.reactor = reactor
        self.owner = owner
        self.running = 0  # attempts under way
        self.claiming = False
        self.stopped = False
        self.failing = False  # since the last attempt that failed, until one delivers
        self.paused = False  # the database could not be used
        self.loop = task.LoopingCall(self.pump)
        self.loop.clock = reactor

    def start(self) -> None:
        self.loop.start(self.rules.poll, now=True)

    def stop(self) -> None:
        self.stopped = True
        if self.loop.running:
            self.loop.stop()

    def _call(self, work: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """``work`` on a thread when the store waits on the network, else
        here, on the reactor's thread, which writes SQLite."""
        if self.store.blocking:
            return threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), work, *args
            )
        return defer.maybeDeferred(work, *args)

    def pump(self) -> None:
        free = self.rules.concurrency - self.running
        if self.stopped or self.claiming or free <= 0:
            return
        self.claiming = True
        claimed = self._call(
            self.store.claim_alerts, self.key, self.owner, time.time(), self.rules.lease, free
        )
        claimed.addCallbacks(self._claimed, self._not_claimed)

    def _claimed(self, rows: list[AlertRow]) -> None:
        """Each claimed alert attempted at once; when all were due, more
        may be: claimed again as each attempt ends."""
        self.claiming = False
        self._usable()
        for row in rows:
            self.running += 1
            attempt = webhook.post(
                self.reactor, self.url, json.loads(row.payload), self.rules.timeout
            )
            attempt.addCallback(self._record, row)
            attempt.addErrback(self._trouble)
            attempt.addBoth(self._ended)

    def _ended(self, _: object) -> None:
        self.running -= 1
        self.pump()

    def _record(self, outcome: webhook.Outcome, row: AlertRow) -> defer.Deferred[Any]:
        now = time.time()
        if self.stopped and not outcome.delivered:
            # Our own stop cut the attempt: not the webhook's failure. The
            # lease is handed back; the next receiver sends it again.
            return defer.succeed(None)
        if outcome.delivered:
            if self.failing:
                self.failing = False
                logger.info("alerts to %s delivered again", self.shown)
            return self._call(self.store.alert_delivered, row.id, now)
        failed = row.attempts + 1
        at = self.rules.next_attempt(failed, row.created_at, now) if outcome.retry else None
        if at is not None:
            if not self.failing:  # once until one is delivered: not a line per attempt
                self.failing = True
                logger.warning(
                    "alert to %s failed: %s; retried until delivered or %g s old",
                    self.shown, outcome.problem, self.rules.max_age,
                )  # fmt: skip
            logger.debug(
                "alert %d to %s: %s; next at %.1f", row.id, self.shown, outcome.problem, at
            )
            return self._call(self.store.alert_retry, row.id, self.owner, at)
        given_up = self._call(self.store.alert_given_up, row.id, self.owner, now)
        given_up.addCallback(self._given_up, row, failed, outcome.problem)
        return given_up

    def _given_up(self, ours: bool, row: AlertRow, failed: int, problem: str) -> None:
        if not ours:  # another receiver took it over meanwhile: its to tell
            return
        payload = json.loads(row.payload)
        logger.warning(
            "alert to %s not delivered after %d attempt(s) in %.0f s, given up: %s; "
            "execution %s %s (event %s)",
            self.shown, failed, time.time() - row.created_at, problem,
            payload.get("execution_id"), payload.get("new_state"), payload.get("event_id"),
        )  # fmt: skip

    def _usable(self) -> None:
        if self.paused:
            self.paused = False
            logger.info("alert deliveries to %s: the database is usable again", self.shown)

    def _not_claimed(self, failure: Failure) -> None:
        self.claiming = False
        self._trouble(failure)

    def _trouble(self, failure: Failure) -> None:
        if isinstance(failure.value, StoreUnavailable):
            if not self.paused:
                logger.warning("alert deliveries to %s paused: %s", self.shown, failure.value)
            self.paused = True
            return
        logger.error(
            "alert deliveries to %s: unexpected error\n%s",
            self.shown,
            failure.getTraceback(),
        )
