"""What ``scrapy-heartbeat serve`` takes for each option: argument types
that refuse a value out of its documented range with one line naming the
fix, before anything starts. A value that parses but cannot work (every
connection aborted, every beat refused) is refused here, not discovered
by the first client.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from urllib.parse import urlsplit

from scrapy_heartbeat.redact import printable, redact_url
from scrapy_heartbeat.server.liveness import STATES

#: The bounds of each numeric option, inclusive; documented in the
#: receiver's "Limits".
PORTS = (0, 65535)
#: A spec beat with its longest fields fits in 1 KiB; past 1 MiB, one
#: body per open connection is more memory than a receiver should hold.
MAX_BODY_RANGE = (1024, 1024 * 1024)
MAX_CONNECTIONS_RANGE = (1, 65536)
REQUEST_TIMEOUT_RANGE = (0.1, 3600.0)
CHECK_EVERY_RANGE = (0.1, 3600.0)
#: Seconds: from a tenth of a second (tests, demos) to 30 days.
SILENCE_RANGE = (0.1, 30 * 86400.0)
#: 0 keeps all history; at most a century.
KEEP_DAYS_RANGE = (0.0, 36500.0)
ALERT_RETRIES_RANGE = (0, 10)
#: Seconds: an attempt's whole deadline; a lease, which must exceed it.
ALERT_TIMEOUT_RANGE = (0.1, 300.0)
ALERT_LEASE_RANGE = (0.2, 86400.0)
ALERT_BACKOFF_RANGE = (0.01, 3600.0)
#: Seconds: from one (tests) to 30 days.
ALERT_MAX_AGE_RANGE = (1.0, 30 * 86400.0)
ALERT_CONCURRENCY_RANGE = (1, 64)
METRICS_EXECUTIONS_RANGE = (0, 100_000)


def _parsed(text: str, integer: bool) -> float | None:
    """``text`` as a finite number (an integer if ``integer``), else None."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _plain(value: float) -> str:
    """2592000, not 2.592e+06."""
    return f"{int(value)}" if value == int(value) else f"{value:g}"


def _refused(text: str, fix: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{printable(text)[:40]!r} cannot be used; {fix}")


def bounded(low: float, high: float) -> Callable[[str], float]:
    """An argument type: a finite number from ``low`` to ``high``."""

    def number(text: str) -> float:
        value = _parsed(text, integer=False)
        if value is None or not low <= value <= high:
            raise _refused(text, f"give a number from {_plain(low)} to {_plain(high)}")
        return value

    return number


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argument type: an integer from ``low`` to ``high``."""

    def integer(text: str) -> int:
        value = _parsed(text, integer=True)
        if value is None or not low <= value <= high:
            raise _refused(text, f"give an integer from {low} to {high}")
        return int(value)

    return integer


def webhook_url(text: str) -> str:
    """An argument type: an http(s) URL with a host. Only its redacted
    form is ever shown: a webhook's credentials are secrets."""
    shown = printable(redact_url(text))[:200]
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{shown!r} is not a URL ({exc}); give http://host[:port]/path"
        ) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{shown!r} is not an http:// or https:// URL with a host; "
            "give e.g. https://hooks.example.com/path"
        )
    if not text.isascii():
        # Sent as is, a path's ü would become "?" and start a query, and a
        # host's would never resolve: the alerts would go elsewhere or nowhere.
        raise argparse.ArgumentTypeError(
            f"{shown!r} has characters that are not ASCII; write the host in its "
            "xn-- form and the path and query percent-encoded (%C3%BC)"
        )
    return text


def states(text: str) -> tuple[str, ...]:
    """An argument type: a comma-separated list of liveness states."""
    found = tuple(s.strip() for s in text.split(",") if s.strip())
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no state: no alert would ever be sent; "
            f"give a comma-separated list of {','.join(STATES)}"
        )
    unknown = [s for s in found if s not in STATES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown state {unknown[0]!r}; use a comma-separated list of {','.join(STATES)}"
        )
    return found
