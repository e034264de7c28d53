"""``scrapy-heartbeat``: ``serve`` the reference receiver, ``send`` one
heartbeat from a shell, or run the end-to-end ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any

from scrapy_heartbeat.alerts import ALERT_ON
from scrapy_heartbeat.liveness import STATES
from scrapy_heartbeat.payload import COUNTER_FIELDS, STATUSES

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scrapy-heartbeat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the reference heartbeat receiver")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port, 0 for any (default 8000)")
    serve.add_argument(
        "--db",
        default="heartbeats.sqlite3",
        help="SQLite file, or postgresql://user@host/db to share one database between "
        "receivers (default heartbeats.sqlite3)",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("HEARTBEAT_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (env HEARTBEAT_TOKEN)",
    )
    serve.add_argument("--max-body", type=int, default=64 * 1024, help="largest body, bytes")
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds a request may take to arrive whole, else the connection is closed "
        "(default 10)",
    )
    serve.add_argument(
        "--max-connections", type=int, default=512, help="open connections at most (default 512)"
    )
    serve.add_argument(
        "--lost-after",
        type=_seconds,
        default=None,
        help="seconds of silence after which a running execution is 'lost' "
        "(default: 10 intervals, at least 300)",
    )
    serve.add_argument(
        "--stall-after",
        type=_seconds,
        default=600.0,
        help="seconds without crawled_urls or data_items moving after which a beating "
        "execution is 'stalled' (default 600)",
    )
    serve.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="POST a JSON event here on each liveness transition in --alert-on (repeatable)",
    )
    serve.add_argument(
        "--alert-on",
        type=_states,
        default=",".join(ALERT_ON),
        help=f"comma-separated states to alert on (default {','.join(ALERT_ON)}; "
        f"any of {','.join(STATES)})",
    )
    serve.add_argument(
        "--alert-retries",
        type=int,
        default=3,
        help="attempts after the first to deliver an event, 1 s, 2 s, 4 s ... apart (default 3)",
    )
    serve.add_argument(
        "--keep-days",
        type=_seconds,
        default=14.0,
        help="delete history older than this many days; 0 keeps it all (default 14)",
    )
    serve.add_argument(
        "--check-every",
        type=_positive,
        default=5.0,
        help="seconds between liveness checks, which raise the alerts (default 5)",
    )
    serve.add_argument(
        "--print",
        dest="print_beats",
        action="store_true",
        help="print one line per heartbeat received",
    )

    send = commands.add_parser("send", help="send one heartbeat and exit 0/1/2")
    send.add_argument(
        "--api-base-url",
        default=os.environ.get("API_BASE_URL"),
        help="platform base URL (env API_BASE_URL)",
    )
    send.add_argument(
        "--execution-id",
        default=os.environ.get("EXECUTION_ID"),
        help="execution UUID (env EXECUTION_ID)",
    )
    send.add_argument(
        "--container-id",
        default=os.environ.get("HOSTNAME"),
        help="container id (env HOSTNAME, else the host name)",
    )
    send.add_argument("--status", choices=STATUSES, default=None)
    send.add_argument("--progress", help="progress object as JSON")
    for name in COUNTER_FIELDS:
        send.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    send.add_argument("--current-url")
    send.add_argument("--current-stage")
    send.add_argument("--timeout", type=float, default=10.0)
    send.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    send.add_argument("--insecure", action="store_true", help="skip TLS verification")

    demo = commands.add_parser("demo", help="receiver + local site + example crawl, end to end")
    demo.add_argument(
        "--keep-open",
        action="store_true",
        help="keep the receiver and its dashboard running afterwards",
    )
    demo.add_argument("--project", help="path of example_project (found automatically)")
    demo.add_argument("--interval", type=float, default=0.5, help="heartbeat interval, s")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "send":
        return _send(args, parser)
    from scrapy_heartbeat.demo import run_demo

    return run_demo(keep_open=args.keep_open, project=args.project, interval=args.interval)


def _serve(args: argparse.Namespace) -> int:
    from scrapy_heartbeat._compat import twisted_reactor
    from scrapy_heartbeat.alerts import WebhookAlerts
    from scrapy_heartbeat.liveness import LivenessRules
    from scrapy_heartbeat.receiver import HeartbeatReceiver, listen
    from scrapy_heartbeat.store import StoreUnavailable, open_store
    from scrapy_heartbeat.upkeep import Upkeep

    # Our log lines on stderr; stdout is for the URLs and --print.
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    rules = LivenessRules(lost_after=args.lost_after, stall_after=args.stall_after)
    try:
        store = open_store(args.db, rules)
    except StoreUnavailable as exc:
        print(f"scrapy-heartbeat serve: --db {_shown(args.db)}: {exc}", file=sys.stderr)
        return 2
    on_beat = print_heartbeat if args.print_beats else None
    receiver = HeartbeatReceiver(store, args.token, args.max_body, on_beat, _metrics(args, rules))
    reactor = twisted_reactor()
    port = listen(
        receiver,
        args.host,
        args.port,
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
    print(f"Receiving heartbeats at {url}/api/v1/monitoring/heartbeat", flush=True)
    print(f"Dashboard: {url}/   database: {_shown(args.db)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    upkeep.stop()
    if alerts is not None:
        alerts.close()
    store.close()
    return 0


def _metrics(args: argparse.Namespace, rules: Any) -> Any:
    """``/metrics``, when ``prometheus_client`` is installed (the
    ``[server]`` extra); each scrape reads with a connection of its own."""
    try:
        from scrapy_heartbeat.metrics import ReceiverMetrics
    except ImportError:
        logging.getLogger(__name__).warning(
            "GET /metrics is off: pip install 'scrapy-heartbeat[server]' for prometheus_client"
        )
        return None
    from scrapy_heartbeat.store import open_store

    def executions(seen_since: float) -> list[dict[str, Any]]:
        reader = open_store(args.db, rules)
        try:
            return reader.executions(seen_since=seen_since)
        finally:
            reader.close()

    return ReceiverMetrics(executions)


def _shown(db: str) -> str:
    """``db`` without the password a URL may carry."""
    from urllib.parse import urlsplit

    parts = urlsplit(db)
    if parts.password is None:
        return db
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def _positive(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def _states(text: str) -> tuple[str, ...]:
    states = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown state {unknown[0]!r}; use a comma-separated list of {','.join(STATES)}"
        )
    return states


def printable(text: object) -> str:
    """``text`` on one line, its control characters escaped: client text
    must neither forge output lines nor reach the terminal as escapes."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text)
    )


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


def _send(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import socket

    from scrapy_heartbeat.client import HeartbeatClient
    from scrapy_heartbeat.settings import ConfigError

    if not args.api_base_url:
        parser.error("set --api-base-url or the API_BASE_URL environment variable")
    if not args.execution_id:
        parser.error("set --execution-id or the EXECUTION_ID environment variable")
    progress: dict[str, Any] = {}
    if args.progress:
        try:
            progress = json.loads(args.progress, parse_constant=_refuse_constant)
        except ValueError as exc:
            parser.error(
                f"--progress is not valid JSON ({str(exc).split(':')[0]}); "
                "pass an object like '{\"total_urls\": 3}'"
            )
        if not isinstance(progress, dict):
            parser.error("--progress must be a JSON object")
    for name in (*COUNTER_FIELDS, "current_url", "current_stage"):
        if getattr(args, name) is not None:
            progress[name] = getattr(args, name)
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep:  # never echo it: it may be a token
            parser.error(
                "--header needs 'Name: value' (a colon after the name), e.g. "
                "--header 'Authorization: Bearer <token>'"
            )
        headers[name.strip()] = value.strip()
    try:
        client = HeartbeatClient(
            args.api_base_url,
            args.execution_id,
            args.container_id or socket.gethostname(),
            timeout=args.timeout,
            headers=headers,
            verify=not args.insecure,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    with client:
        result = client.send(args.status, progress or None)
    if result.ok:
        print(f"heartbeat accepted ({args.status or 'no status'})")
        return EXIT_ACCEPTED
    print(f"heartbeat {result.outcome}: {result.message}", file=sys.stderr)
    return EXIT_REJECTED if result.outcome == "rejected" else EXIT_FAILED


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number the platform can store: {name}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
