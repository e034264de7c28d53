"""A database outage, logged once when it begins and once when it ends:
:class:`Outage`. While the database cannot be used every beat is answered
503, and a fleet beats hundreds of times a second: a line per refusal
would bury the log and cost the reactor what the beats do."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


class Outage:
    """Told of each request refused for want of the database, and of each
    beat stored; logs the transitions between the two."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.refused = 0

    def refused_because(self, reason: object) -> None:
        """A request answered 503: the database cannot be used."""
        self.refused += 1
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("receiver: %s; answering 503 until it can be used again", reason)

    def stored(self) -> None:
        """A beat stored: an outage, if any, is over."""
        if self.since is None:
            return
        logger.info(
            "receiver: the database is usable again after %.1f s; %d request(s) refused meanwhile",
            time.monotonic() - self.since,
            self.refused,
        )
        self.since = None
        self.refused = 0
