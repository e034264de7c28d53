"""What the receiver concludes about a sender from the beats it stopped or
kept sending: the rules behind each execution's and container's
``liveness``, kept apart from what the client said (its ``status``).

==========  ==============================================================
liveness    when
==========  ==============================================================
completed   the last status was ``completed`` (or ``failed``: ``failed``)
paused      the last status was ``paused``: silence is expected
lost        silent for ``lost_after`` (default 10 intervals, at least
            5 minutes): a SIGKILLed or OOM-killed container; no final beat
            will come. A beat after it revives the sender
late        silent for more than 2 intervals
stalled     beating, but ``crawled_urls`` and ``data_items`` have not moved
            for ``stall_after`` seconds (default 600)
running     otherwise
==========  ==============================================================

The interval is the one observed: the median of the last three gaps
between beats (not counting a gap after a ``paused`` beat), so that one long
silence or a changed rhythm moves it for a beat or two at most; the spec's
30 s until there are two beats. An execution's is its slowest container's.
Silence and stillness count from when the receiver could hear at the
earliest (its start, the end of a database outage): no sender is blamed for
what the receiver could not have heard.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Until a sender has beaten twice, its interval is assumed to be the spec's.
DEFAULT_INTERVAL = 30.0
LATE_AFTER_INTERVALS = 2
LOST_AFTER_INTERVALS = 10
LOST_AFTER_AT_LEAST = 300.0
STALL_AFTER = 600.0

FINISHED = ("completed", "failed")
STATES = ("running", "late", "lost", "stalled", "paused", "completed", "failed")
#: The states a client never sends: the receiver's own conclusions.
CONCLUDED = ("late", "lost", "stalled")
#: Silent for over 2 intervals: what ``stale`` means.
STALE = ("late", "lost")


@dataclass(frozen=True)
class LivenessRules:
    """``lost_after``: seconds of silence after which a sender is lost
    (None: 10 intervals, at least 5 minutes; never before it is late).
    ``stall_after``: seconds without progress after which it is stalled."""

    lost_after: float | None = None
    stall_after: float = STALL_AFTER

    def lost_threshold(self, interval: float) -> float:
        late = LATE_AFTER_INTERVALS * interval
        if self.lost_after is None:
            return max(LOST_AFTER_INTERVALS * interval, LOST_AFTER_AT_LEAST, late)
        return max(self.lost_after, late)

    def decide(
        self,
        status: str,
        silent_for: float,
        interval: float | None,
        still_for: float,
    ) -> str:
        """The liveness of a sender whose last status is ``status``, silent
        for ``silent_for`` seconds, beating every ``interval`` (None: not
        known yet), its counters unmoved for ``still_for`` seconds."""
        if status in FINISHED or status == "paused":
            return status
        every = interval if interval else DEFAULT_INTERVAL
        if silent_for > self.lost_threshold(every):
            return "lost"
        if silent_for > LATE_AFTER_INTERVALS * every:
            return "late"
        if still_for > self.stall_after:
            return "stalled"
        return "running"


def progress_key(progress: object) -> str | None:
    """What must change for a sender to count as moving: its crawled URLs
    and data items (None for a beat without progress: it moves nothing)."""
    if not isinstance(progress, dict):
        return None
    return f"{progress.get('crawled_urls')}/{progress.get('data_items')}"
