"""``scrapy-heartbeat serve``: the receiver put together from the parsed
command line (:func:`serve`). The options are :mod:`scrapy_heartbeat.cli`'s,
their types and ranges :mod:`.options`'."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError

from scrapy_heartbeat._compat import twisted_reactor
from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.payload import HEARTBEAT_PATH
from scrapy_heartbeat.redact import printable, redact_url
from scrapy_heartbeat.server import listing
from scrapy_heartbeat.server.alerts import Alerts
from scrapy_heartbeat.server.backends import open_store
from scrapy_heartbeat.server.credentials import credentials_from
from scrapy_heartbeat.server.delivery import Deliveries, DeliveryRules
from scrapy_heartbeat.server.liveness import LivenessRules
from scrapy_heartbeat.server.resource import HeartbeatReceiver
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable
from scrapy_heartbeat.server.transport import listen
from scrapy_heartbeat.server.upkeep import Upkeep

logger = logging.getLogger(__name__)

#: ``serve``'s exit codes: stopped, or could not start.
EXIT_STOPPED, EXIT_UNUSABLE = 0, 2
#: On SIGTERM, how long the beats already received may take to be stored
#: and answered; then how long their answers get to leave.
DRAIN_SECONDS = 5.0
FLUSH_SECONDS = 0.2


def serve(args: argparse.Namespace) -> int:
    """Run the receiver until SIGTERM or Ctrl-C; the exit code."""
    # Our log lines on stderr; stdout is for the URLs and --print.
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        credentials = credentials_from(args.token, args.signing_key, args.read_token, os.environ)
    except ConfigError as exc:
        print(f"scrapy-heartbeat serve: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.alert_lease <= args.alert_timeout:
        print(
            f"scrapy-heartbeat serve: --alert-lease {args.alert_lease:g} must be more than "
            f"--alert-timeout {args.alert_timeout:g}, or an attempt could outlive its claim",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    rules = LivenessRules(lost_after=args.lost_after, stall_after=args.stall_after)
    try:
        store = open_store(args.db, rules)
    except StoreUnavailable as exc:
        print(f"scrapy-heartbeat serve: --db {redact_url(args.db)}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    on_beat = print_heartbeat if args.print_beats else None
    metrics = _metrics(store, args.metrics_max_executions)
    receiver = HeartbeatReceiver(store, credentials, args.max_body, on_beat, metrics)
    reactor = twisted_reactor()
    port = _listen(args, receiver, metrics)
    if port is None or (args.port_file and not _write_port(args.port_file, port.getHost().port)):
        if port is not None:
            port.stopListening()
        store.close()
        return EXIT_UNUSABLE
    logger.info("%s", credentials.describe())
    alerts, deliveries = _alerts(args, store, reactor)
    upkeep = Upkeep(
        store,
        alerts,
        deliveries,
        clock=reactor,
        check_every=args.check_every,
        keep_days=args.keep_days or None,
        thin_after_days=args.thin_after or None,
    )
    upkeep.start()
    if deliveries is not None:
        deliveries.start()
    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address
    url = f"http://{host}:{port.getHost().port}"
    print(f"Receiving heartbeats at {url}{HEARTBEAT_PATH}", flush=True)
    print(f"Dashboard: {url}/   database: {redact_url(args.db)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.addSystemEventTrigger("before", "shutdown", _finish_beats, port, receiver, reactor)
    reactor.run()
    upkeep.stop()
    if deliveries is not None:
        deliveries.stop()
    store.close()
    return EXIT_STOPPED


def _finish_beats(port: Any, receiver: HeartbeatReceiver, reactor: Any) -> defer.Deferred[None]:
    """Before the reactor stops: no new connection, and every beat already
    received stored and answered, within :data:`DRAIN_SECONDS`. Twisted
    drops the connections at shutdown with whatever they had not sent, so
    a beat committed meanwhile would be answered by a reset, and sent
    again."""
    drained: defer.Deferred[Any] = defer.maybeDeferred(port.stopListening)
    drained.addCallback(lambda _: receiver.drain())
    drained.addTimeout(DRAIN_SECONDS, reactor)
    drained.addErrback(_drain_failed)
    drained.addCallback(lambda _: task.deferLater(reactor, FLUSH_SECONDS, lambda: None))
    return drained


def _drain_failed(failure: Any) -> None:
    if failure.check(defer.TimeoutError):
        logger.warning(
            "receiver stopping: beats still unanswered after %g s; their senders see a reset",
            DRAIN_SECONDS,
        )
    else:
        logger.warning("receiver stopping: %s", failure.getErrorMessage())


def _alerts(
    args: argparse.Namespace, store: HeartbeatStore, reactor: Any
) -> tuple[Alerts | None, Deliveries | None]:
    """What writes alerts to the outbox, and what delivers them: none
    without a ``--webhook``."""
    if not args.webhook:
        return None, None
    rules = DeliveryRules(
        timeout=args.alert_timeout,
        lease=args.alert_lease,
        backoff=args.alert_backoff,
        max_age=args.alert_max_age,
        concurrency=args.alert_concurrency,
        retries=args.alert_retries,
    )
    return Alerts(args.webhook, args.alert_on), Deliveries(
        store, args.webhook, rules, reactor=reactor
    )


def _listen(args: argparse.Namespace, receiver: HeartbeatReceiver, metrics: Any) -> Any:
    """The listening port, or None once the reason was printed."""
    try:
        return listen(
            receiver,
            args.host,
            args.port,
            max_body=args.max_body,
            on_refused=None if metrics is None else metrics.beat_answered,
            request_timeout=args.request_timeout,
            max_connections=args.max_connections,
        )
    except CannotListenError as exc:
        reason = cannot_listen(args.host, args.port, exc)
        print(f"scrapy-heartbeat serve: {reason}", file=sys.stderr)
        return None


def cannot_listen(host: str, port: int, exc: CannotListenError) -> str:
    """One line naming the option to change, for a failed ``listen``."""
    reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
    code = getattr(exc.socketError, "errno", None)
    if code == errno.EADDRINUSE:
        return (
            f"--port {port}: {host}:{port} is already in use ({reason}); "
            "stop what listens there or give another port (0: any free one)"
        )
    if code == errno.EACCES:
        return (
            f"--port {port}: this user may not listen on it ({reason}); "
            "give a port above 1023, or run with the right to bind it"
        )
    return (
        f"--host {printable(host)[:100]}: cannot listen there ({reason}); "
        "give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
    )


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


def _write_port(path: str, port: int) -> bool:
    """Whole or not at all: a reader waiting for the file never sees half.
    False once the reason it cannot be written was printed."""
    partial = Path(f"{path}.partial")
    try:
        partial.write_text(f"{port}\n", encoding="ascii")
        os.replace(partial, path)
    except OSError as exc:
        shown = printable(path)[:200]
        print(
            f"scrapy-heartbeat serve: --port-file {shown}: cannot write it "
            f"({exc.strerror or type(exc).__name__}); give a file path in a writable directory",
            file=sys.stderr,
        )
        return False
    return True


def print_heartbeat(body: dict[str, Any], latency: float) -> None:
    """One line per beat, as the dashboard words it: a dash for a count the
    beat did not carry, and the latency in whole seconds, since the beat's
    timestamp has no finer ones."""
    p = body.get("progress") or {}

    def count(field: str) -> str:
        value = p.get(field)
        if value is None:
            return "–"
        return f"{value:.2f}" if isinstance(value, float) else printable(str(value))

    stage = printable(p.get("current_stage", ""))
    late = "< 1" if latency < 1 else f"{latency:.0f}"
    print(
        f"heartbeat {short_id(body['execution_id'])} {body.get('status') or '–':9} "
        f"{count('crawled_urls')}/{count('total_urls')} URLs ({count('percentage')}%), "
        f"ok {count('successful_urls')}, failed {count('failed_urls')}, "
        f"items {count('data_items')}, errors {count('error_count')}, latency {late} s | {stage}",
        flush=True,
    )


def short_id(execution_id: str) -> str:
    """As the dashboard shows it: the first 8 digits, or the last 8 of a
    time-ordered UUID (version 6 or 7), whose first digits are a clock that
    executions started in the same minute share."""
    if len(execution_id) == 36 and execution_id[14] in "67":
        return "…" + execution_id[-8:]
    return execution_id[:8]
