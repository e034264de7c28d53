"""Alerts from the reference receiver: a JSON event POSTed to each
``serve --webhook URL`` when an execution's liveness changes to a state in
``--alert-on``.

Each webhook has a thread of its own and a bounded queue, so the receiver
never waits for one, and one that hangs delays only its own events. An event
is retried with backoff when the webhook cannot be reached, times out or
answers 5xx or 429, and given up after the last attempt with one WARNING
line. Its ``event_id`` stays the same over retries, for a webhook that
wants to drop a duplicate (a reply lost after the event arrived).

The ``text`` field is one line that a Slack or Mattermost incoming webhook
shows as is. What clients sent in it has ``&``, ``<`` and ``>`` escaped, as
Slack asks, so a container id cannot mention ``<!channel>`` or forge a link.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import requests

from scrapy_heartbeat.redact import describe, printable

logger = logging.getLogger(__name__)

#: The transitions alerted on unless ``--alert-on`` says otherwise.
ALERT_ON = ("failed", "lost", "stalled", "completed")
TIMEOUT = 5.0
#: Attempts after the first to deliver an event (``serve --alert-retries``).
RETRIES = 3
ATTEMPTS = 1 + RETRIES
#: Seconds before the first retry; each next waits twice as long.
BACKOFF = 1.0
#: The most characters of a client's text quoted in an event's ``text``.
MAX_QUOTED = 200
#: Events waiting for one webhook at most; more are dropped, with a WARNING.
QUEUE_SIZE = 1000


def event(found: dict[str, Any], at: str) -> dict[str, Any]:
    """The event for one transition, from the execution as
    :meth:`.store.HeartbeatStore.settle` yields it."""
    progress = found.get("progress") or {}
    old, new = found.get("old_liveness"), found["liveness"]
    text = (
        f"scrapy-heartbeat: execution {found['execution_id']} is {new.upper()}"
        f"{f' (was {old})' if old else ''}; container {_escape(found['container_id'])}"
        f" ({found.get('container_count', 1)} in all); "
        f"{progress.get('crawled_urls', 0)}/{progress.get('total_urls', 0)} URLs, "
        f"{progress.get('failed_urls', 0)} failed, {progress.get('data_items', 0)} items, "
        f"{progress.get('error_count', 0)} errors; "
        f"last beat {found['seconds_since_last_beat']:.0f} s ago"
    )
    return {
        "event_id": str(uuid.uuid4()),
        "event": "liveness",
        "execution_id": found["execution_id"],
        "container_id": found["container_id"],
        "old_state": old,
        "new_state": new,
        "status": found["status"],
        "progress": found.get("progress"),
        "last_seen": found["last_seen"],
        "seconds_since_last_beat": found["seconds_since_last_beat"],
        "at": at,
        "text": text,
    }


def _escape(text: object) -> str:
    one_line = printable(text)[:MAX_QUOTED]
    return one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookAlerts:
    """Sends events to webhooks, one thread and queue per URL."""

    def __init__(
        self,
        urls: Sequence[str],
        alert_on: Iterable[str] = ALERT_ON,
        *,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
    ) -> None:
        self.alert_on = frozenset(alert_on)
        self._hooks = [_Webhook(url, timeout, attempts, backoff) for url in urls]

    def wants(self, new_state: str) -> bool:
        return bool(self._hooks) and new_state in self.alert_on

    def notify(self, payload: dict[str, Any]) -> None:
        """Queue an event for every webhook; never waits."""
        for hook in self._hooks:
            hook.put(payload)

    def close(self, wait: float = 2.0) -> None:
        """Stop the threads, giving events already queued ``wait`` seconds."""
        for hook in self._hooks:
            hook.stop()
        for hook in self._hooks:
            hook.thread.join(wait)


class _Webhook:
    def __init__(self, url: str, timeout: float, attempts: int, backoff: float) -> None:
        self.url = url
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self.stopping = threading.Event()
        self.session = requests.Session()
        self.session.trust_env = False  # an operator's webhook, not the crawl's proxy
        self.thread = threading.Thread(target=self._run, name="heartbeat-webhook", daemon=True)
        self.thread.start()

    def put(self, payload: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(payload)
        except queue.Full:
            logger.warning(
                "alert to %s dropped: %d events already waiting for it", self.url, QUEUE_SIZE
            )

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(queue.Full):  # full: it stops after those
            self.queue.put_nowait(None)

    def _run(self) -> None:
        try:
            while (payload := self.queue.get()) is not None:
                self._deliver(payload)
        finally:
            self.session.close()

    def _deliver(self, payload: dict[str, Any]) -> None:
        problem = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and self.stopping.wait(self.backoff * 2 ** (attempt - 2)):
                problem += " (receiver stopping)"
                break
            try:
                reply = self.session.post(self.url, json=payload, timeout=self.timeout)
                reply.close()
            except requests.RequestException as exc:
                problem = describe(exc)
                continue
            if reply.status_code < 300:
                return
            problem = f"HTTP {reply.status_code}"
            if reply.status_code < 500 and reply.status_code != 429:
                break  # the webhook refuses this event: sending it again will not help
        logger.warning(
            "alert to %s not delivered after %d attempt(s): %s; execution %s %s",
            self.url,
            attempt,
            problem,
            payload.get("execution_id"),
            payload.get("new_state"),
        )
