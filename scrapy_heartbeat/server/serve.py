"""``scrapy-heartbeat serve``: the receiver put together from the parsed
command line (:func:`serve`), and the argument types its options use. The
options themselves are :mod:`scrapy_heartbeat.cli`'s."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from scrapy_heartbeat._compat import twisted_reactor
from scrapy_heartbeat.payload import HEARTBEAT_PATH
from scrapy_heartbeat.redact import printable, redact_url
from scrapy_heartbeat.server import listing
from scrapy_heartbeat.server.alerts import WebhookAlerts
from scrapy_heartbeat.server.backends import open_store
from scrapy_heartbeat.server.liveness import STATES, LivenessRules
from scrapy_heartbeat.server.resource import HeartbeatReceiver
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable
from scrapy_heartbeat.server.transport import listen
from scrapy_heartbeat.server.upkeep import Upkeep

logger = logging.getLogger(__name__)

#: ``serve``'s exit codes: stopped, or could not start.
EXIT_STOPPED, EXIT_UNUSABLE = 0, 2


def serve(args: argparse.Namespace) -> int:
    """Run the receiver until SIGTERM or Ctrl-C; the exit code."""
    # Our log lines on stderr; stdout is for the URLs and --print.
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    rules = LivenessRules(lost_after=args.lost_after, stall_after=args.stall_after)
    try:
        store = open_store(args.db, rules)
    except StoreUnavailable as exc:
        print(f"scrapy-heartbeat serve: --db {redact_url(args.db)}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    on_beat = print_heartbeat if args.print_beats else None
    metrics = _metrics(store, args.metrics_max_executions)
    receiver = HeartbeatReceiver(store, args.token, args.max_body, on_beat, metrics)
    reactor = twisted_reactor()
    port = listen(
        receiver,
        args.host,
        args.port,
        max_body=args.max_body,
        on_refused=None if metrics is None else metrics.beat_answered,
        request_timeout=args.request_timeout,
        max_connections=args.max_connections,
    )
    alerts = None
    if args.webhook:
        alerts = WebhookAlerts(args.webhook, args.alert_on, attempts=1 + max(0, args.alert_retries))
    upkeep = Upkeep(
        store,
        alerts,
        clock=reactor,
        check_every=args.check_every,
        keep_days=args.keep_days or None,
    )
    upkeep.start()
    url = f"http://{args.host}:{port.getHost().port}"
    print(f"Receiving heartbeats at {url}{HEARTBEAT_PATH}", flush=True)
    print(f"Dashboard: {url}/   database: {redact_url(args.db)}", flush=True)
    if args.port_file:
        _write_port(args.port_file, port.getHost().port)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    upkeep.stop()
    if alerts is not None:
        alerts.close()
    store.close()
    return EXIT_STOPPED


def _metrics(store: HeartbeatStore, cap: int) -> Any:
    """``/metrics``, when ``prometheus_client`` is installed (the
    ``[server]`` extra); each scrape reads through the receiver's store,
    which migrated once, at start."""
    try:
        from scrapy_heartbeat.server.metrics import ReceiverMetrics
    except ImportError:
        logger.warning(
            "GET /metrics is off: pip install 'scrapy-heartbeat[server]' for prometheus_client"
        )
        return None

    def read(seen_since: float) -> tuple[dict[tuple[str, str], int], list[dict[str, Any]], int]:
        found, left_out = listing.unfinished(store, seen_since, cap)
        return listing.count_by_state(store), found, left_out

    return ReceiverMetrics(read)


def _write_port(path: str, port: int) -> None:
    """Whole or not at all: a reader waiting for the file never sees half."""
    partial = Path(f"{path}.partial")
    partial.write_text(f"{port}\n", encoding="ascii")
    os.replace(partial, path)


def print_heartbeat(body: dict[str, Any], latency: float) -> None:
    p = body.get("progress") or {}
    stage = printable(p.get("current_stage", ""))
    print(
        f"heartbeat {body['execution_id'][:8]} {body.get('status') or '-':9} "
        f"{p.get('crawled_urls', 0)}/{p.get('total_urls', 0)} URLs "
        f"({p.get('percentage', 0)}%), ok {p.get('successful_urls', 0)}, "
        f"failed {p.get('failed_urls', 0)}, items {p.get('data_items', 0)}, "
        f"errors {p.get('error_count', 0)}, latency {latency:g}s | {stage}",
        flush=True,
    )


def seconds(text: str) -> float:
    """An argument type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def positive(text: str) -> float:
    """An argument type: a finite number > 0."""
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def count(text: str) -> int:
    """An argument type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return value


def states(text: str) -> tuple[str, ...]:
    """An argument type: a comma-separated list of liveness states."""
    found = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in found if s not in STATES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown state {unknown[0]!r}; use a comma-separated list of {','.join(STATES)}"
        )
    return found
