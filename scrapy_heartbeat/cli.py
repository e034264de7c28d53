"""``scrapy-heartbeat``: ``serve`` the reference receiver, ``send`` one
heartbeat from a shell, print an execution's ``token``, or run the
end-to-end ``demo``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, NoReturn

from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.payload import COUNTER_FIELDS, STATUSES
from scrapy_heartbeat.redact import printable, utf8_text

#: What ``--help`` says first: plain text, as a terminal shows it.
DESCRIPTION = (
    "Report Scrapy crawls to a control platform: 'serve' runs the reference "
    "receiver, 'send' sends one heartbeat from a shell, 'token' prints an "
    "execution's token for 'serve --signing-key', 'demo' runs a crawl against "
    "a local receiver, end to end."
)

#: ``send``'s exit codes; 2 is argparse's, for bad usage.
EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scrapy-heartbeat", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    _add_serve_parser(commands)
    _add_send_parser(commands)
    _add_token_parser(commands)
    _add_demo_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        from scrapy_heartbeat.server.serve import serve

        return serve(args)
    if args.command == "send":
        return _send(args, parser)
    if args.command == "token":
        return _token(args)
    from scrapy_heartbeat.demo import run_demo

    return run_demo(keep_open=args.keep_open, project=args.project, interval=args.interval)


class _OneLineParser(argparse.ArgumentParser):
    """A command's parser whose errors are one line naming the option and
    the fix, not a usage block a log or a terminal shows half of."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the reference heartbeat receiver")
    _add_serving_options(serve)
    _add_upkeep_options(serve)
    serve.add_argument(
        "--print",
        dest="print_beats",
        action="store_true",
        help="print one line per heartbeat received",
    )


def _add_serving_options(serve: argparse.ArgumentParser) -> None:
    """Where ``serve`` listens, what it stores in, whom it answers."""
    from scrapy_heartbeat.server import backends, options, transport

    serve.add_argument(
        "--host",
        default=transport.DEFAULT_HOST,
        help=f"interface (default {transport.DEFAULT_HOST})",
    )
    serve.add_argument(
        "--port",
        type=options.bounded_int(*options.PORTS),
        default=transport.DEFAULT_PORT,
        help=f"port, 0 for any (default {transport.DEFAULT_PORT})",
    )
    serve.add_argument(
        "--port-file",
        metavar="PATH",
        help="once listening, write the port to this file (for --port 0)",
    )
    serve.add_argument(
        "--db",
        default=backends.DEFAULT_DB,
        help="SQLite file, or postgresql://user@host/db to share one database between "
        f"receivers (default {backends.DEFAULT_DB})",
    )
    _add_credential_options(serve)
    serve.add_argument(
        "--max-body",
        type=options.bounded_int(*options.MAX_BODY_RANGE),
        default=transport.MAX_BODY,
        help=f"largest body, bytes (default {transport.MAX_BODY})",
    )
    serve.add_argument(
        "--request-timeout",
        type=options.bounded(*options.REQUEST_TIMEOUT_RANGE),
        default=transport.REQUEST_TIMEOUT,
        help="seconds a request may take to arrive whole, else the connection is closed "
        f"(default {transport.REQUEST_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-connections",
        type=options.bounded_int(*options.MAX_CONNECTIONS_RANGE),
        default=transport.MAX_CONNECTIONS,
        help=f"open connections at most (default {transport.MAX_CONNECTIONS})",
    )


def _add_credential_options(serve: argparse.ArgumentParser) -> None:
    """Who may write and read (``scrapy_heartbeat.server.credentials``);
    each option's environment variable is read there, to be named in errors."""
    serve.add_argument(
        "--token",
        help="simple mode: one token, 'Authorization: Bearer TOKEN', for beats, reads and "
        "/metrics (env HEARTBEAT_TOKEN)",
    )
    serve.add_argument(
        "--signing-key",
        metavar="KEY",
        help="scoped mode: a beat takes only its execution's token, derived from KEY "
        "(scrapy-heartbeat token EXECUTION_ID); with --read-token (env HEARTBEAT_SIGNING_KEY)",
    )
    serve.add_argument(
        "--read-token",
        metavar="TOKEN",
        help="scoped mode: the token of the read API, the dashboard and /metrics, which "
        "never writes (env HEARTBEAT_READ_TOKEN)",
    )


def _add_upkeep_options(serve: argparse.ArgumentParser) -> None:
    """What ``serve`` concludes about senders and what it keeps."""
    from scrapy_heartbeat.server import listing, liveness, options, upkeep

    silence = options.bounded(*options.SILENCE_RANGE)

    serve.add_argument(
        "--lost-after",
        type=silence,
        default=None,
        help="seconds of silence after which a running execution is 'lost' "
        f"(default: {liveness.LOST_AFTER_INTERVALS} intervals, "
        f"at least {liveness.LOST_AFTER_AT_LEAST:g})",
    )
    serve.add_argument(
        "--stall-after",
        type=silence,
        default=liveness.STALL_AFTER,
        help="seconds without crawled_urls or data_items moving after which a beating "
        f"execution is 'stalled' (default {liveness.STALL_AFTER:g})",
    )
    _add_delivery_options(serve)
    serve.add_argument(
        "--keep-days",
        type=options.bounded(*options.KEEP_DAYS_RANGE),
        default=upkeep.KEEP_DAYS,
        help="delete history older than this many days; 0 keeps it all "
        f"(default {upkeep.KEEP_DAYS:g})",
    )
    serve.add_argument(
        "--thin-after",
        type=options.bounded(*options.KEEP_DAYS_RANGE),
        default=upkeep.THIN_AFTER_DAYS,
        help="keep one beat per container per 5 minutes of history older than this "
        f"many days; 0 thins nothing (default {upkeep.THIN_AFTER_DAYS:g})",
    )
    serve.add_argument(
        "--metrics-max-executions",
        type=options.bounded_int(*options.METRICS_EXECUTIONS_RANGE),
        default=listing.MAX_EXPORTED,
        help="unfinished executions given series of their own on /metrics at most, the newest "
        f"first; the others are only counted (default {listing.MAX_EXPORTED})",
    )
    serve.add_argument(
        "--check-every",
        type=options.bounded(*options.CHECK_EVERY_RANGE),
        default=upkeep.CHECK_EVERY,
        help="seconds between liveness checks, which raise the alerts "
        f"(default {upkeep.CHECK_EVERY:g})",
    )


def _add_delivery_options(serve: argparse.ArgumentParser) -> None:
    """Whom ``serve`` alerts, on what, and how alerts are delivered from
    the outbox (see the receiver's docs)."""
    from scrapy_heartbeat.server import alerts, delivery, liveness, options

    serve.add_argument(
        "--webhook",
        action="append",
        type=options.webhook_url,
        default=[],
        metavar="URL",
        help="POST a JSON event here on each liveness transition in --alert-on (repeatable)",
    )
    serve.add_argument(
        "--alert-on",
        type=options.states,
        default=",".join(alerts.ALERT_ON),
        help=f"comma-separated states to alert on (default {','.join(alerts.ALERT_ON)}; "
        f"any of {','.join(liveness.STATES)})",
    )
    serve.add_argument(
        "--alert-retries",
        type=options.bounded_int(*options.ALERT_RETRIES_RANGE),
        default=None,
        help="attempts after the first to deliver an event at most (default: as many as "
        "--alert-max-age allows)",
    )
    serve.add_argument(
        "--alert-max-age",
        type=options.bounded(*options.ALERT_MAX_AGE_RANGE),
        default=delivery.MAX_AGE,
        help="seconds after which an event not delivered is given up, with one WARNING "
        f"(default {delivery.MAX_AGE:g})",
    )
    serve.add_argument(
        "--alert-timeout",
        type=options.bounded(*options.ALERT_TIMEOUT_RANGE),
        default=delivery.TIMEOUT,
        help=f"seconds an attempt may take in all (default {delivery.TIMEOUT:g})",
    )
    serve.add_argument(
        "--alert-lease",
        type=options.bounded(*options.ALERT_LEASE_RANGE),
        default=delivery.LEASE,
        help="seconds a claimed event is this receiver's; then another may send it; more "
        f"than --alert-timeout (default {delivery.LEASE:g})",
    )
    serve.add_argument(
        "--alert-backoff",
        type=options.bounded(*options.ALERT_BACKOFF_RANGE),
        default=delivery.BACKOFF,
        help="seconds before the first retry; each next waits twice as long, at most "
        f"{delivery.MAX_BACKOFF:g} (default {delivery.BACKOFF:g})",
    )
    serve.add_argument(
        "--alert-concurrency",
        type=options.bounded_int(*options.ALERT_CONCURRENCY_RANGE),
        default=delivery.CONCURRENCY,
        help=f"attempts at once per webhook (default {delivery.CONCURRENCY})",
    )


def _add_send_parser(commands: Any) -> None:
    from scrapy_heartbeat.settings import DEFAULTS

    send = commands.add_parser(
        "send",
        help="send one heartbeat; exit 0 accepted, 1 rejected, 2 bad usage, 3 network failure",
    )
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
    send.add_argument("--container-id", help="container id (env HOSTNAME, else the host name)")
    send.add_argument("--status", choices=STATUSES, default=None)
    send.add_argument("--progress", help="progress object as JSON")
    for name in COUNTER_FIELDS:
        send.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    send.add_argument("--current-url")
    send.add_argument("--current-stage")
    send.add_argument("--timeout", type=float, default=DEFAULTS["HEARTBEAT_TIMEOUT"])
    send.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    send.add_argument("--insecure", action="store_true", help="skip TLS verification")


def _add_token_parser(commands: Any) -> None:
    token = commands.add_parser(
        "token",
        help="print the token that lets a crawler send beats for EXECUTION_ID to "
        "'serve --signing-key'",
    )
    token.add_argument("execution_id", metavar="EXECUTION_ID")
    token.add_argument(
        "--signing-key",
        metavar="KEY",
        help="the receiver's signing key (env HEARTBEAT_SIGNING_KEY, better: a command line "
        "is visible to every user of the host)",
    )


def _add_demo_parser(commands: Any) -> None:
    from scrapy_heartbeat.demo import INTERVAL

    demo = commands.add_parser("demo", help="receiver + local site + example crawl, end to end")
    demo.add_argument(
        "--keep-open",
        action="store_true",
        help="keep the receiver and its dashboard running afterwards",
    )
    demo.add_argument(
        "--project",
        metavar="PATH",
        help="a copy of the demo project to crawl (default: the one in the package)",
    )
    demo.add_argument("--interval", type=float, default=INTERVAL, help="heartbeat interval, s")


def _send(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from scrapy_heartbeat.client import HeartbeatClient
    from scrapy_heartbeat.settings import container_id, crawler_token

    if not args.api_base_url:
        parser.error("set --api-base-url or the API_BASE_URL environment variable")
    if not args.execution_id:
        parser.error("set --execution-id or the EXECUTION_ID environment variable")
    problems: list[str] = []
    container = container_id(args.container_id, os.environ, problems, "--container-id")
    try:
        # From the environment only: a command line is visible to every
        # user of the host.
        token = crawler_token(None, os.environ, problems)
        client = HeartbeatClient(
            utf8_text(args.api_base_url),
            utf8_text(args.execution_id),
            container,
            timeout=args.timeout,
            headers=_headers(args.header, parser),
            verify=not args.insecure,
            token=token,
        )
    except ConfigError as exc:
        parser.error(printable(exc))
    if client.header_authorization_ignored:
        problems.append(
            "HEARTBEAT_TOKEN and --header 'Authorization: ...' are both set; "
            "the token is sent, the header is not"
        )
    for problem in problems:
        print(f"scrapy-heartbeat send: {problem}", file=sys.stderr)
    with client:
        result = client.send(args.status, _progress(args, parser) or None)
    if result.ok:
        print(f"heartbeat accepted ({args.status or 'no status'})")
        return EXIT_ACCEPTED
    print(f"heartbeat {result.outcome}: {printable(result.message)}", file=sys.stderr)
    return EXIT_REJECTED if result.outcome == "rejected" else EXIT_FAILED


def _token(args: argparse.Namespace) -> int:
    """Print an execution's token; one line and exit 2 when it cannot."""
    from scrapy_heartbeat.tokens import check_signing_key, execution_token

    name = "--signing-key" if args.signing_key is not None else "HEARTBEAT_SIGNING_KEY"
    key = args.signing_key if args.signing_key is not None else os.environ.get(name)
    try:
        if key is None:
            raise ConfigError(
                "set the HEARTBEAT_SIGNING_KEY environment variable (or --signing-key) to the "
                "receiver's signing key"
            )
        token = execution_token(check_signing_key(key, name), args.execution_id)
    except ConfigError as exc:
        print(f"scrapy-heartbeat token: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return EXIT_ACCEPTED


def _progress(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    progress: dict[str, Any] = {}
    if args.progress:
        try:
            progress = json.loads(
                utf8_text(args.progress), parse_constant=_refuse_constant, parse_float=_finite
            )
        except RecursionError:
            parser.error("--progress is nested too deeply; pass a flat object")
        except ValueError as exc:
            parser.error(
                f"--progress is not valid JSON ({str(exc).split(':')[0]}); "
                "pass an object like '{\"total_urls\": 3}'"
            )
        if not isinstance(progress, dict):
            parser.error("--progress must be a JSON object")
    for name in (*COUNTER_FIELDS, "current_url", "current_stage"):
        value = getattr(args, name)
        if value is not None:
            progress[name] = utf8_text(value) if isinstance(value, str) else value
    return progress


def _headers(given: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    headers = {}
    for header in given:
        name, sep, value = utf8_text(header).partition(":")
        if not sep:  # never echo it: it may be a token
            parser.error(
                "--header needs 'Name: value' (a colon after the name), e.g. "
                "--header 'Authorization: Bearer <token>'"
            )
        headers[name.strip()] = value.strip()
    return headers


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number the platform can store")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number the platform can store: {name}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
