"""Alerts from the reference receiver: a JSON event for each
``serve --webhook URL`` when an execution's liveness changes to a state in
``--alert-on``.

The event is not sent from here: :meth:`Alerts.statements` gives the rows
of ``alert_outbox`` (one per webhook) that the store writes in the very
transaction that claims the transition, and :mod:`.delivery` sends them
from there, at least once. The ``event_id`` is made when the rows are
written, so every attempt, by any receiver, carries the same one: a webhook
drops a duplicate by it.

The ``text`` field is one line that a Slack or Mattermost incoming webhook
shows as is. What clients sent in it has ``&``, ``<`` and ``>`` escaped, as
Slack asks, so a container id cannot mention ``<!channel>`` or forge a link.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from scrapy_heartbeat.redact import printable
from scrapy_heartbeat.server import schema
from scrapy_heartbeat.server.store import iso

#: The transitions alerted on unless ``--alert-on`` says otherwise.
ALERT_ON = ("failed", "lost", "stalled", "completed")
#: The most characters of a client's text quoted in an event's ``text``.
MAX_QUOTED = 200


def webhook_key(url: str) -> str:
    """What names a webhook in the database: a hash of its URL, so that
    its secrets are not stored, and receivers given the same URL share its
    alerts."""
    return hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class Alerts:
    """Which transitions are alerted, and to which webhooks."""

    def __init__(self, urls: Sequence[str], alert_on: Iterable[str] = ALERT_ON) -> None:
        self.alert_on = frozenset(alert_on)
        self.keys = [webhook_key(url) for url in urls]

    def statements(self, found: dict[str, Any], moment: float) -> list[schema.Statement]:
        """The outbox rows for one claimed transition: none when it is not
        alerted on, else one per webhook, with one event id."""
        if not self.keys or found["liveness"] not in self.alert_on:
            return []
        payload = event(found, iso(moment))
        body = json.dumps(payload)  # ASCII: no lone surrogate reaches the database
        return [
            (schema.INSERT_ALERT, (payload["event_id"], key, body, moment, moment))
            for key in self.keys
        ]


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
