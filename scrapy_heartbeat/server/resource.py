"""The reference receiver's HTTP API, a Twisted resource: each handler
reads the request, calls the store once, and answers.

``POST /api/v1/monitoring/heartbeat`` validates (:mod:`.validation`) and
stores a heartbeat; ``GET /api/v1/monitoring/executions[?status=&limit=&cursor=]``
(a page, :mod:`.listing`), ``GET /api/v1/monitoring/summary`` (counts) and
``GET /api/v1/monitoring/executions/<execution_id>`` read them back, with the
receiver's own conclusions (:mod:`.liveness`), each on a thread of the
reactor's pool, so that no read delays a beat; ``GET /metrics`` exports them
to Prometheus (:mod:`.metrics`); ``GET /`` is a dashboard. Bad input gets a
4xx with the spec's error body; no input gets a 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias

from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.web import resource, server

from scrapy_heartbeat._compat import twisted_reactor
from scrapy_heartbeat.payload import HEARTBEAT_PATH, STATUSES, canonical_uuid
from scrapy_heartbeat.server import listing
from scrapy_heartbeat.server.batches import Batches, batches_for
from scrapy_heartbeat.server.credentials import (
    WRONG_BEAT_TOKEN,
    WRONG_READ_TOKEN,
    WRONG_TOKEN,
    Credentials,
)
from scrapy_heartbeat.server.liveness import CONCLUDED
from scrapy_heartbeat.server.outage import Outage
from scrapy_heartbeat.server.progress import Trimmed, kept_progress
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable
from scrapy_heartbeat.server.transport import MAX_BODY, is_json
from scrapy_heartbeat.server.validation import parse_body, validate_body

if TYPE_CHECKING:
    from twisted.web.server import Request

logger = logging.getLogger(__name__)

EXECUTIONS_PATH = "/api/v1/monitoring/executions"
SUMMARY_PATH = "/api/v1/monitoring/summary"
METRICS_PATH = "/metrics"
_BEAT_PATH = HEARTBEAT_PATH.encode()
#: What ``?status=`` takes besides the client statuses.
STATUS_FILTERS = (*STATUSES, *CONCLUDED, "stale", "active")
OnHeartbeat = Callable[[dict[str, Any], float], None]
Reply: TypeAlias = "bytes | defer.Deferred[bytes]"


class HeartbeatReceiver(resource.Resource):
    isLeaf = True

    def __init__(
        self,
        store: HeartbeatStore,
        credentials: Credentials | str | None = None,
        max_body: int = MAX_BODY,
        on_heartbeat: OnHeartbeat | None = None,
        metrics: Any = None,
    ) -> None:
        """``credentials``: who may write and read (a string is the simple
        mode's one token; None: anyone). ``metrics``: a
        :class:`.metrics.ReceiverMetrics`, or None when ``prometheus_client``
        is not installed (``/metrics`` answers 501)."""
        super().__init__()
        self.store = store
        if isinstance(credentials, str):
            credentials = Credentials(token=credentials.encode("utf-8"))
        self.credentials = credentials or Credentials()
        self.max_body = max_body
        self.on_heartbeat = on_heartbeat
        self.metrics = metrics
        self._writer: Batches | None = None
        self.outage = Outage()
        self._dashboard = (
            resources.files("scrapy_heartbeat.server").joinpath("dashboard.html").read_bytes()
        )

    def render(self, request: Request) -> bytes | int:
        started = time.perf_counter()
        try:
            reply = self._route(request)
        except Exception as exc:
            reply = self._failed(request, exc)
        if isinstance(reply, defer.Deferred):  # a beat, a read or /metrics
            reply.addErrback(self._failed_late, request)
            reply.addCallback(self._write_late, request, started)
            return server.NOT_DONE_YET
        self._answered(request, started)
        return reply

    def _write_late(self, reply: bytes, request: Request, started: float) -> None:
        self._answered(request, started)
        if not request.finished and not request._disconnected:
            # As render() would: a length, not chunks, whatever the store.
            request.setHeader(b"Content-Length", b"%d" % len(reply))
            request.write(reply)
            request.finish()

    def _answered(self, request: Request, started: float) -> None:
        if self.metrics is not None and (request.path or b"").rstrip(b"/") == _BEAT_PATH:
            self.metrics.beat_answered(request.code, time.perf_counter() - started)

    def drain(self) -> defer.Deferred[None]:
        """Fires once every beat received so far has its answer: a receiver
        stopping waits for it, so that a beat is never stored unanswered,
        nor dropped with the connection it came on."""
        if self._writer is None:
            return defer.succeed(None)
        return self._writer.drain()

    def _batches(self) -> Batches:
        if self._writer is None:
            self._writer = batches_for(self.store, twisted_reactor())
        return self._writer

    def _call(self, then: Callable[[Any], bytes], fn: Callable[..., Any], *args: Any) -> Reply:
        """``then(fn(*args))``, ``fn`` on a thread: a read may take long,
        and beats are answered meanwhile."""
        return threads.deferToThread(fn, *args).addCallback(then)

    def _route(self, request: Request) -> Reply:
        path = (request.path or b"/").decode("utf-8", "replace").rstrip("/") or "/"
        method = request.method.decode("ascii", "replace") if request.method else ""
        if path == "/":
            return self._only(request, method, "GET") or self._page(request)
        if not (
            path in (HEARTBEAT_PATH, METRICS_PATH, SUMMARY_PATH) or path.startswith(EXECUTIONS_PATH)
        ):
            return _error(request, 404, f"no such path: {path[:100]}")
        auth = request.getHeader(b"authorization")
        if path == HEARTBEAT_PATH:
            if not self.credentials.may_post(auth):
                return self._unauthorized(request, WRONG_TOKEN)
            return self._only(request, method, "POST") or self._heartbeat(request)
        if not self.credentials.may_read(auth):
            return self._unauthorized(request, WRONG_READ_TOKEN)
        denied = self._only(request, method, "GET")
        if denied:
            return denied
        if path == METRICS_PATH:
            return self._metrics(request)
        if path == EXECUTIONS_PATH:
            return self._executions(request)
        if path == SUMMARY_PATH:
            return self._call(
                lambda counts: _json(request, 200, counts), listing.summary, self.store
            )
        execution_id = path[len(EXECUTIONS_PATH) + 1 :]
        if "/" in execution_id or not path.startswith(EXECUTIONS_PATH + "/"):
            return _error(request, 404, f"no such path: {path[:100]}")
        return self._execution(request, execution_id)

    def _only(self, request: Request, method: str, allowed: str) -> bytes | None:
        if method == allowed or (allowed == "GET" and method == "HEAD"):
            return None
        request.setHeader(b"Allow", allowed.encode())
        return _error(request, 405, f"method {method[:10]} not allowed; use {allowed}")

    def _unauthorized(self, request: Request, message: str) -> bytes:
        if self.credentials.mode == "simple":
            message = WRONG_TOKEN  # one token: nothing more to say
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="heartbeat"')
        return _error(request, 401, message)

    def _heartbeat(self, request: Request) -> Reply:
        if not is_json(request):
            return _error(request, 415, "Content-Type must be application/json")
        assert request.content is not None
        raw = request.content.read(self.max_body + 1)
        if len(raw) > self.max_body:
            return _error(request, 413, f"body larger than {self.max_body} bytes")
        body, problem = parse_body(raw)
        # Whose beat it is decides which token it takes: checked before
        # anything else about the body is looked at.
        execution_id = canonical_uuid(body.get("execution_id")) if isinstance(body, dict) else None
        auth = request.getHeader(b"authorization")
        if execution_id is not None and not self.credentials.may_beat(auth, execution_id):
            return self._unauthorized(request, WRONG_BEAT_TOKEN)
        if problem is None:
            problem = validate_body(body)
        if problem is not None:
            return _error(request, 400, problem)
        body["execution_id"] = canonical_uuid(body["execution_id"])
        trimmed = Trimmed(0, ())
        if body.get("progress") is not None:
            body["progress"], trimmed = kept_progress(body["progress"])
        now = time.time()

        def stored(latency: float) -> bytes:
            self.outage.stored()
            _say_trimmed(request, trimmed)
            if self.on_heartbeat is not None:
                self.on_heartbeat(body, latency)
            return _json(
                request,
                200,
                {"status": "ok", "timestamp": int(now), "execution_id": body["execution_id"]},
            )

        # Batched with the beats arriving meanwhile.
        return self._batches().add(body, now).addCallback(stored)

    def _executions(self, request: Request) -> Reply:
        args = request.args or {}
        status = _query(args, b"status")
        if status is not None and status not in STATUS_FILTERS:
            allowed = ", ".join(STATUS_FILTERS)
            return _error(request, 400, f"query 'status' must be one of {allowed}")
        limit = _limit(_query(args, b"limit"))
        if limit is None:
            return _error(
                request, 400, f"query 'limit' must be a whole number from 1 to {listing.MAX_LIMIT}"
            )
        cursor = _query(args, b"cursor")
        try:
            after = None if cursor is None else listing.decode_cursor(cursor)
        except ValueError:
            return _error(
                request,
                400,
                "query 'cursor' must be a next_cursor this receiver returned; "
                "leave it out to start from the newest",
            )
        return self._call(
            lambda found: _json(
                request, 200, {"executions": found.executions, "next_cursor": found.next_cursor}
            ),
            listing.page,
            self.store,
            status,
            limit,
            after,
        )

    def _execution(self, request: Request, given: str) -> Reply:
        execution_id = canonical_uuid(given)
        if execution_id is None:
            return _error(request, 400, "Invalid execution_id format")

        def answer(found: dict[str, Any] | None) -> bytes:
            if found is None:
                return _error(request, 404, "no heartbeat for this execution_id")
            return _json(request, 200, found)

        return self._call(answer, self.store.detail, execution_id)

    def _metrics(self, request: Request) -> Reply:
        if self.metrics is None:
            return _error(
                request,
                501,
                "GET /metrics needs prometheus_client: pip install 'scrapy-heartbeat[server]'",
            )
        from scrapy_heartbeat.server.metrics import CONTENT_TYPE

        def text(rendered: bytes) -> bytes:
            request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
            return rendered

        # Read and written on a thread, whatever the store: 10,000
        # executions take a while.
        return threads.deferToThread(self.metrics.render).addCallback(text)

    def _failed(self, request: Request, exc: BaseException) -> bytes:
        if isinstance(exc, StoreUnavailable):  # a database another process holds, or down
            self.outage.refused_because(exc)
            request.setHeader(b"Retry-After", b"1")
            return _error(request, 503, f"{exc}; try again")
        logger.error("receiver: unexpected error", exc_info=exc)  # never a 500 with a traceback
        return _json(request, 503, {"status": "error", "message": "try again later"})

    def _failed_late(self, failure: Failure, request: Request) -> bytes:
        return self._failed(request, failure.value or Exception(failure.getErrorMessage()))

    def _page(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(
            b"Content-Security-Policy",
            b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        )
        return self._dashboard


def _say_trimmed(request: Request, trimmed: Trimmed) -> None:
    """Tell the client what of its progress was not stored; nothing when
    all of it was."""
    if trimmed.dropped:
        request.setHeader(b"Heartbeat-Progress-Dropped", b"%d" % trimmed.dropped)
    if trimmed.truncated:
        request.setHeader(b"Heartbeat-Progress-Truncated", ",".join(trimmed.truncated).encode())


def _query(args: dict[bytes, list[bytes]], name: bytes) -> str | None:
    """The first value of a query argument; None when absent or empty."""
    raw = args.get(name, [b""])[0]
    return raw.decode("utf-8", "replace") if raw else None


def _limit(given: str | None) -> int | None:
    """``?limit=``: the default when absent; None when not a whole number
    from 1 to :data:`.listing.MAX_LIMIT`."""
    if given is None:
        return listing.DEFAULT_LIMIT
    if not (given.isascii() and given.isdigit() and len(given) <= 6):
        return None
    value = int(given)
    return value if 1 <= value <= listing.MAX_LIMIT else None


def _json(request: Request, code: int, payload: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _error(request: Request, code: int, message: str) -> bytes:
    return _json(request, code, {"status": "error", "message": message})
