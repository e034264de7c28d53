"""Sending beats from a worker thread of our own, so HTTP never runs on the
reactor thread nor in the reactor's shared thread pool (Scrapy resolves DNS
there).

The loop thread submits a beat and learns its result on the loop thread again;
the worker only talks HTTP. At most one periodic beat is in flight: a tick that
finds one is skipped, never queued (the next beat carries newer state).

A periodic beat's deadline is a timer of the event loop (``call_later``), which
cuts the request off from the loop thread: no thread is started per beat (on a
CPU the crawl shares, each thread start and wake-up is a hand-off of the GIL).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy_heartbeat.client import HeartbeatClient, HeartbeatResult, timed_out

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

#: After the first failure of a kind, one summary line per this many failures.
SUMMARY_EVERY = 10
#: How long the final beat waits for a periodic beat in flight before it
#: cuts it off, seconds (at most a quarter of the close budget).
SUPERSEDE_AFTER = 1.0
#: Less time than this left before the close deadline: no further attempt.
MIN_ATTEMPT_SECONDS = 0.05


#: Runs on the worker thread just before a beat is sent, and returns the
#: status and progress to send instead (shared counters read from Redis).
Prepare = Callable[[], tuple[str, dict[str, Any]]]
#: Runs on the worker thread once the final beat is delivered (or given up):
#: a second beat to send, or None (the last worker out of a shared execution
#: ends it only after its own last beat is out; see the extension).
FollowUp = Callable[[], "tuple[str, dict[str, Any]] | None"]
#: Runs a callable on the loop thread after a delay; returns its cancel.
CallLater = Callable[[float, Callable[[], None]], Callable[[], None]]


@dataclass
class _Beat:
    status: str
    progress: dict[str, Any]
    future: concurrent.futures.Future[HeartbeatResult]
    retry_times: int = 0
    retry_delay: float = 0.0
    deadline: float | None = None  # time.monotonic() by which to give up
    prepare: Prepare | None = None
    follow_up: FollowUp | None = None
    superseded: str | None = None  # a periodic beat that the final beat cut off
    timed_out: str | None = None  # a periodic beat cut off at its deadline


class HeartbeatSender:
    def __init__(
        self,
        client: HeartbeatClient,
        crawler: Crawler,
        call_in_loop: Callable[[Callable[[], None]], None],
        call_later: CallLater | None = None,
    ) -> None:
        self.client = client
        self.crawler = crawler
        self.stats = crawler.stats
        self._call_in_loop = call_in_loop
        self._call_later = call_later  # None: the client's watchdog thread times beats
        self._cancel_deadline: Callable[[], None] | None = None
        self._jobs: queue.SimpleQueue[_Beat | None] = queue.SimpleQueue()
        self._in_flight = False
        self._lock = threading.Lock()
        self._sending: _Beat | None = None  # the beat the worker is sending now
        self._failures = {"failed": 0, "rejected": 0}
        self._unreported = {"failed": 0, "rejected": 0}
        self._failing = False
        self.exiting = False  # the process exits before the crawl's close ended
        # A daemon thread: a hanging API must never hold the process open.
        self._thread = threading.Thread(
            target=self._work,
            name=f"scrapy-heartbeat-{client.execution_id[:8]}",
            daemon=True,
        )
        self._thread.start()

    @property
    def in_flight(self) -> bool:
        return self._in_flight

    # -- loop thread ------------------------------------------------------------

    def send(self, status: str, progress: dict[str, Any], prepare: Prepare | None = None) -> bool:
        """Send a periodic beat; False (and nothing sent) if one is in flight.
        The caller checks :attr:`in_flight` first, to skip building a payload."""
        if self._in_flight:
            return False
        self._in_flight = True
        beat = self._submit(_Beat(status, progress, concurrent.futures.Future(), prepare=prepare))
        if self._call_later is not None:
            self._cancel_deadline = self._call_later(
                self.client.timeout, lambda: self._time_out(beat)
            )
        beat.future.add_done_callback(
            lambda f: self._call_in_loop(lambda: self._periodic_done(beat, f))
        )
        return True

    def _time_out(self, periodic: _Beat) -> None:
        """Loop thread, at a periodic beat's deadline: cut it off."""
        if periodic.future.done():
            return
        # Marked first: a request that starts after the cut_off() below sees
        # the mark and never goes out.
        periodic.timed_out = timed_out(self.client.timeout)
        with self._lock:
            if self._sending is periodic:
                self.client.cut_off(periodic.timed_out)

    def send_final(
        self,
        status: str,
        progress: dict[str, Any],
        retry_times: int,
        retry_delay: float,
        timeout: float,
        *,
        prepare: Prepare | None = None,
        follow_up: FollowUp | None = None,
    ) -> concurrent.futures.Future[HeartbeatResult]:
        """Queue the final beat, retried on connection errors and 5xx, given
        up ``timeout`` seconds from now. A periodic beat still in flight is
        cut off: the final beat supersedes it and must not wait behind it."""
        beat = _Beat(
            status,
            progress,
            concurrent.futures.Future(),
            retry_times,
            retry_delay,
            time.monotonic() + timeout,
            prepare,
            follow_up,
        )
        self._submit(beat)
        with self._lock:
            sending = self._sending
        if sending is not None and sending.deadline is None:
            # A healthy reply takes milliseconds: give the beat in flight a
            # moment, then cut it off rather than wait behind it.
            timer = threading.Timer(min(SUPERSEDE_AFTER, timeout / 4), self._supersede, (sending,))
            timer.daemon = True
            timer.start()
        return beat.future

    def _supersede(self, periodic: _Beat) -> None:
        with self._lock:
            if self._sending is not periodic:
                return  # it finished meanwhile
            # Marked first: a request that starts after the cut_off() below
            # sees the mark and never goes out.
            periodic.superseded = "cut off: the final beat supersedes it"
            self.client.cut_off(periodic.superseded)

    def record_final(self, status: str, result: HeartbeatResult) -> None:
        """Count and log the final beat's fate, in one line, and let the
        worker end."""
        stats = self.stats
        stats.set_value("heartbeat/final_status", status)
        self.record(result, final=True)
        self.close()
        stats.set_value("heartbeat/final_delivered", result.ok)
        extra = {"crawler": self.crawler}
        if result.ok:
            logger.info("Final heartbeat (%(status)s) delivered", {"status": status}, extra=extra)
        else:
            logger.warning(
                "Final heartbeat (%(status)s) not delivered: %(reason)s",
                {"status": status, "reason": result.message},
                extra=extra,
            )

    def record(self, result: HeartbeatResult, final: bool = False) -> None:
        """Count and log one result; repeated failures are summarised."""
        self.stats.inc_value("heartbeat/sent", result.attempts)
        if result.ok:
            self.stats.inc_value("heartbeat/ok")
            if self._failing:
                logger.info(
                    "Heartbeat delivered again after failures (%(failed)d failed, "
                    "%(rejected)d rejected so far)",
                    dict(self._failures),
                    extra={"crawler": self.crawler},
                )
                self._failing = False
            else:
                logger.debug("Heartbeat delivered", extra={"crawler": self.crawler})
            return
        kind = result.outcome
        self.stats.inc_value(f"heartbeat/{kind}")
        self._failures[kind] += 1
        self._unreported[kind] += 1
        if final:
            return  # the extension logs the final beat's fate itself
        count = self._failures[kind]
        if count != 1 and count % SUMMARY_EVERY:
            return
        level = logging.ERROR if kind == "rejected" else logging.WARNING
        what = "rejected by the server" if kind == "rejected" else "failed"
        if count == 1:
            logger.log(
                level,
                "Heartbeat %(what)s: %(reason)s (further failures are summarised every %(every)d)",
                {"what": what, "reason": result.message, "every": SUMMARY_EVERY},
                extra={"crawler": self.crawler},
            )
        else:
            logger.log(
                level,
                "Heartbeat %(what)s %(new)d more times (%(count)d in all); last: %(reason)s",
                {
                    "what": what,
                    "new": self._unreported[kind],
                    "count": count,
                    "reason": result.message,
                },
                extra={"crawler": self.crawler},
            )
        self._unreported[kind] = 0
        self._failing = True

    def close(self) -> None:
        """Let the worker end once its queue is empty; never waits for it."""
        self._jobs.put(None)

    def _periodic_done(
        self, beat: _Beat, future: concurrent.futures.Future[HeartbeatResult]
    ) -> None:
        self._in_flight = False
        if self._cancel_deadline is not None:
            self._cancel_deadline()
            self._cancel_deadline = None
        if beat.superseded is not None:  # not a failure: the final beat carries newer state
            self.stats.inc_value("heartbeat/superseded")
            return
        try:
            self.record(future.result())
        except Exception:  # pragma: no cover - the worker never sets exceptions
            logger.exception("scrapy-heartbeat: unexpected sender error")

    def _submit(self, beat: _Beat) -> _Beat:
        self._jobs.put(beat)
        return beat

    # -- worker thread ----------------------------------------------------------

    def _work(self) -> None:
        while True:
            beat = self._jobs.get()
            if beat is None:
                break
            if not beat.future.set_running_or_notify_cancel():
                continue
            try:
                result = self._deliver(beat)
                if beat.follow_up is not None:
                    result = self._follow_up(beat, result)
            except Exception as exc:  # pragma: no cover - client.send never raises
                result = HeartbeatResult("failed", type(exc).__name__)
            if beat.deadline is not None and not self.exiting:
                # The final beat: nothing follows it. Close the connection
                # before the close goes on, so the process never exits with
                # it still open. (When the process is exiting already, the
                # system closes it; closing here would race the exit.)
                self.client.close()
            beat.future.set_result(result)
        self.client.close()

    def _follow_up(self, beat: _Beat, first: HeartbeatResult) -> HeartbeatResult:
        assert beat.follow_up is not None
        try:
            follow = beat.follow_up()
        except Exception:  # pragma: no cover - a bug of ours
            logger.exception("scrapy-heartbeat: could not read the shared counters")
            return first
        if follow is None:
            return first
        beat.status, beat.progress = follow
        beat.prepare = beat.follow_up = None
        second = self._deliver(beat)
        return dataclasses.replace(second, attempts=first.attempts + second.attempts)

    def _deliver(self, beat: _Beat) -> HeartbeatResult:
        if beat.prepare is not None:  # once, whatever the retries
            try:
                beat.status, beat.progress = beat.prepare()
            except Exception:  # pragma: no cover - a bug of ours: send what the loop built
                logger.exception("scrapy-heartbeat: could not read the shared counters")
        attempts = 0
        while True:
            timeout = self.client.timeout
            if beat.deadline is not None:
                timeout = min(timeout, beat.deadline - time.monotonic())
                if timeout <= 0:
                    return HeartbeatResult(
                        "failed",
                        "close timeout reached before sending",
                        attempts=attempts,
                        beat_status=beat.status,
                    )
            with self._lock:
                self._sending = beat
            try:
                result = self.client.send(
                    beat.status,
                    beat.progress,
                    timeout=timeout,
                    cancelled=lambda: beat.superseded or beat.timed_out,
                    # the loop's timer cuts a periodic beat off (see _time_out)
                    watchdog=beat.deadline is not None or self._call_later is None,
                )
            finally:
                with self._lock:
                    self._sending = None
            attempts += result.attempts
            if result.ok or not result.retryable or attempts > beat.retry_times:
                break
            delay = beat.retry_delay * 2 ** (attempts - 1)
            if result.retry_after is not None:  # 429, or 503 with Retry-After
                delay = max(delay, result.retry_after)
            if beat.deadline is not None:
                remaining = beat.deadline - time.monotonic()
                if remaining < MIN_ATTEMPT_SECONDS:
                    break
                # Whenever time remains, retry within it (half of it, leaving
                # the other half to the attempt itself).
                delay = min(delay, remaining / 2)
            time.sleep(delay)
        return dataclasses.replace(result, attempts=attempts, beat_status=beat.status)
