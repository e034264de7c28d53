"""The reference receiver: the platform side of the heartbeat spec, on
Twisted's web server.

``POST /api/v1/monitoring/heartbeat`` validates and stores a heartbeat;
``GET /api/v1/monitoring/executions[?status=]`` and
``GET /api/v1/monitoring/executions/<execution_id>`` read them back, with the
receiver's own conclusions (:mod:`liveness`); ``GET /metrics`` exports them to
Prometheus (:mod:`metrics`); ``GET /`` is a dashboard. Bad input gets a 4xx
with the spec's error body; no input gets a 500.
"""

from __future__ import annotations

import functools
import hmac
import io
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias

from twisted.internet import defer, threads
from twisted.internet.protocol import connectionDone
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web import resource, server

from scrapy_heartbeat._compat import twisted_reactor
from scrapy_heartbeat.liveness import CONCLUDED
from scrapy_heartbeat.payload import STATUSES, canonical_uuid, parse_body, validate_body
from scrapy_heartbeat.settings import HEARTBEAT_PATH
from scrapy_heartbeat.store import HeartbeatStore, StoreUnavailable

if TYPE_CHECKING:
    from twisted.web.server import Request

logger = logging.getLogger(__name__)

EXECUTIONS_PATH = "/api/v1/monitoring/executions"
METRICS_PATH = "/metrics"
_BEAT_PATH = HEARTBEAT_PATH.encode()
#: What ``?status=`` takes besides the client statuses.
STATUS_FILTERS = (*STATUSES, *CONCLUDED, "stale", "active")
MAX_BODY = 64 * 1024
#: A request must arrive whole within this many seconds of its first byte.
REQUEST_TIMEOUT = 10.0
#: A kept-alive connection without a request for this long is closed: more
#: than the spec's longest interval (60 s), so that a client beating at it
#: never sends on a connection we are closing.
IDLE_TIMEOUT = 90.0
MAX_CONNECTIONS = 512
OnHeartbeat = Callable[[dict[str, Any], float], None]
OnAnswered = Callable[[int, "float | None"], None]
Reply: TypeAlias = "bytes | defer.Deferred[bytes]"


class HeartbeatReceiver(resource.Resource):
    isLeaf = True

    def __init__(
        self,
        store: HeartbeatStore,
        token: str | None = None,
        max_body: int = MAX_BODY,
        on_heartbeat: OnHeartbeat | None = None,
        metrics: Any = None,
    ) -> None:
        """``metrics``: a :class:`metrics.ReceiverMetrics`, or None to
        serve ``/metrics`` only once ``prometheus_client`` is installed."""
        super().__init__()
        self.store = store
        self.token = token
        self.max_body = max_body
        self.on_heartbeat = on_heartbeat
        self.metrics = metrics
        self._writer: _BatchWriter | None = None
        self._dashboard = (
            resources.files("scrapy_heartbeat").joinpath("dashboard.html").read_bytes()
        )

    def render(self, request: Request) -> bytes | int:
        started = time.perf_counter()
        try:
            reply = self._route(request)
        except Exception as exc:
            reply = _failed(request, exc)
        if isinstance(reply, defer.Deferred):  # a store that blocks, or /metrics
            reply.addErrback(_failed_late, request)
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

    def _batches(self) -> _BatchWriter:
        if self._writer is None:
            self._writer = _BatchWriter(self.store, twisted_reactor())
        return self._writer

    def _call(self, then: Callable[[Any], bytes], fn: Callable[..., Any], *args: Any) -> Reply:
        """``then(fn(*args))``, on a thread when the store blocks."""
        if not self.store.blocking:
            return then(fn(*args))
        return threads.deferToThread(fn, *args).addCallback(then)

    def _route(self, request: Request) -> Reply:
        path = (request.path or b"/").decode("utf-8", "replace").rstrip("/") or "/"
        method = request.method.decode("ascii", "replace") if request.method else ""
        if path == "/":
            return self._only(request, method, "GET") or self._page(request)
        if not (path in (HEARTBEAT_PATH, METRICS_PATH) or path.startswith(EXECUTIONS_PATH)):
            return _error(request, 404, f"no such path: {path[:100]}")
        if self.token is not None and not self._authorized(request):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="heartbeat"')
            return _error(request, 401, "missing or wrong Authorization: Bearer token")
        if path == HEARTBEAT_PATH:
            return self._only(request, method, "POST") or self._heartbeat(request)
        denied = self._only(request, method, "GET")
        if denied:
            return denied
        if path == METRICS_PATH:
            return self._metrics(request)
        if path == EXECUTIONS_PATH:
            return self._executions(request)
        execution_id = path[len(EXECUTIONS_PATH) + 1 :]
        if "/" in execution_id or not path.startswith(EXECUTIONS_PATH + "/"):
            return _error(request, 404, f"no such path: {path[:100]}")
        return self._execution(request, execution_id)

    def _only(self, request: Request, method: str, allowed: str) -> bytes | None:
        if method == allowed or (allowed == "GET" and method == "HEAD"):
            return None
        request.setHeader(b"Allow", allowed.encode())
        return _error(request, 405, f"method {method[:10]} not allowed; use {allowed}")

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = (request.getHeader(b"authorization") or b"").strip().partition(b" ")
        expected = (self.token or "").encode()
        # The scheme is case-insensitive (RFC 7235); the token is not.
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected)

    def _heartbeat(self, request: Request) -> Reply:
        if not _is_json(request):
            return _error(request, 415, "Content-Type must be application/json")
        assert request.content is not None
        raw = request.content.read(self.max_body + 1)
        if len(raw) > self.max_body:
            return _error(request, 413, f"body larger than {self.max_body} bytes")
        body, problem = parse_body(raw)
        if problem is None:
            problem = validate_body(body)
        if problem is not None:
            return _error(request, 400, problem)
        body["execution_id"] = canonical_uuid(body["execution_id"])
        now = time.time()

        def stored(latency: float) -> bytes:
            if self.on_heartbeat is not None:
                self.on_heartbeat(body, latency)
            return _json(
                request,
                200,
                {"status": "ok", "timestamp": int(now), "execution_id": body["execution_id"]},
            )

        if self.store.blocking:  # batched with the beats arriving meanwhile
            return self._batches().add(body, now).addCallback(stored)
        return stored(self.store.add(body, now))

    def _executions(self, request: Request) -> Reply:
        raw = (request.args or {}).get(b"status", [None])[0]
        status = raw.decode("utf-8", "replace") if raw else None
        if status is not None and status not in STATUS_FILTERS:
            allowed = ", ".join(STATUS_FILTERS)
            return _error(request, 400, f"query 'status' must be one of {allowed}")
        return self._call(
            lambda found: _json(request, 200, {"executions": found}),
            self.store.executions,
            status,
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
        from scrapy_heartbeat.metrics import CONTENT_TYPE

        def text(rendered: bytes) -> bytes:
            request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
            return rendered

        # Read and written on a thread, whatever the store: 10,000
        # executions take a while.
        return threads.deferToThread(self.metrics.render).addCallback(text)

    def _page(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(
            b"Content-Security-Policy",
            b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        )
        return self._dashboard


def _json(request: Request, code: int, payload: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _error(request: Request, code: int, message: str) -> bytes:
    return _json(request, code, {"status": "error", "message": message})


def _failed(request: Request, exc: BaseException) -> bytes:
    if isinstance(exc, StoreUnavailable):  # a database another process holds, or down
        return _busy(request, exc)
    logger.error("receiver: unexpected error", exc_info=exc)  # never a 500 with a traceback
    return _json(request, 503, {"status": "error", "message": "try again later"})


def _failed_late(failure: Failure, request: Request) -> bytes:
    return _failed(request, failure.value or Exception(failure.getErrorMessage()))


def _busy(request: Request, exc: StoreUnavailable) -> bytes:
    logger.warning("receiver: %s", exc)
    request.setHeader(b"Retry-After", b"1")
    return _error(request, 503, f"{exc}; try again")


def _is_json(request: Any) -> bool:
    content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


#: A beat waiting to be stored: its body, when it arrived, and its answer.
_Waiting = tuple[dict[str, Any], float, "defer.Deferred[float]"]


class _BatchWriter:
    """Stores beats for a store that waits on the network (PostgreSQL): one
    thread takes every beat waiting, up to :attr:`BATCH`, and stores them in
    one transaction, then answers them all. A beat is answered only once it
    is committed; under load the batches grow, and a beat costs the
    receiver a fraction of a round trip and of a thread hand-off."""

    BATCH = 200

    def __init__(self, store: HeartbeatStore, reactor: Any) -> None:
        self.store = store
        self.reactor = reactor
        self.waiting: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="heartbeat-writer", daemon=True)
        self.thread.start()

    def add(self, body: dict[str, Any], now: float) -> defer.Deferred[float]:
        done: defer.Deferred[float] = defer.Deferred()
        self.waiting.put((body, now, done))
        return done

    def _run(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while len(batch) < self.BATCH:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            self._store(batch)

    def _store(self, batch: list[_Waiting]) -> None:
        try:
            latencies = self.store.add_many([(body, now) for body, now, _ in batch])
        except StoreUnavailable as exc:  # a 503 for each
            self.reactor.callFromThread(_fail_all, batch, exc)
        except Exception as exc:
            if len(batch) == 1:
                self.reactor.callFromThread(_fail_all, batch, exc)
            else:  # one beat the database refuses must not cost the others theirs
                for one in batch:
                    self._store([one])
        else:
            self.reactor.callFromThread(_answer_all, batch, latencies)


def _answer_all(batch: list[_Waiting], latencies: list[float]) -> None:
    for (_, _, done), latency in zip(batch, latencies, strict=True):
        done.callback(latency)


def _fail_all(batch: list[_Waiting], exc: Exception) -> None:
    for _, _, done in batch:
        done.errback(exc)


class _GuardedRequest(server.Request):
    """A request that refuses a body by its ``Content-Length`` and type
    before reading it, and stops reading one that grows past ``max_body``.
    Twisted's own Request spools a body whole, and parses a form body, before
    ``render()`` could refuse it: 64 MiB of form froze the receiver for 26 s."""

    _parsePOSTFormSubmission = False  # Twisted >= 24.7; older ones get no form bodies

    def __init__(
        self, *args: Any, max_body: int, on_refused: OnAnswered | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._max_body = max_body
        self._on_refused = on_refused
        self._refused = False

    def gotLength(self, length: int | None) -> None:
        if (length is None or length > 0) and not _is_json(self):
            self._refuse(415, "Content-Type must be application/json")
        elif length is not None and length > self._max_body:
            self._refuse(413, f"body larger than {self._max_body} bytes")
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        assert self.content is not None
        if self.content.tell() + len(data) > self._max_body:  # chunked, or longer than said
            self._refuse(413, f"body larger than {self._max_body} bytes")
        else:
            super().handleContentChunk(data)

    def process(self) -> None:
        if not self._refused:  # answered already, and the connection is closing
            super().process()

    def _refuse(self, code: int, message: str) -> None:
        self._refused = True
        if self._on_refused is not None:  # the channel has the path; we have it later
            path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
            if path.rstrip(b"/") == _BEAT_PATH:
                self._on_refused(code, None)
        self.content = io.BytesIO()
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        body = json.dumps({"status": "error", "message": message}).encode()
        reason = {413: b"Content Too Large", 415: b"Unsupported Media Type"}[code]
        transport: Any = self.channel.transport
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (code, reason, len(body), body)
        )
        transport.loseConnection()


class _Deadline(policies.ProtocolWrapper):
    """Closes a connection whose request has not arrived whole (headers and
    body) ``request_timeout`` seconds after it began, or after it opened:
    a client trickling a byte at a time (slowloris) holds it no longer."""

    factory: _Guard
    _timer: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self._timer is None:  # a new request begins
            self._arm()
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self._disarm()  # the request is in: we are answering it
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self._disarm()
        super().writeSequence(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._timer = self.factory.clock.callLater(self.factory.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport: Any = self.transport
        transport.abortConnection()


class _Guard(policies.WrappingFactory):
    """The site behind a cap on open connections and :class:`_Deadline`."""

    protocol = _Deadline

    def __init__(
        self, site: server.Site, clock: Any, request_timeout: float, max_connections: int
    ) -> None:
        super().__init__(site)
        self.clock = clock
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.refused = 0  # connections refused at the cap, since it was last reached

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= self.max_connections:
            self.refused += 1
            if self.refused == 1:
                logger.warning(
                    "receiver: %d connections open (--max-connections); refusing more",
                    self.max_connections,
                )
            return None  # Twisted closes it at once
        self.refused = 0
        return super().buildProtocol(addr)


def listen(
    receiver: HeartbeatReceiver,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> Any:
    """Start serving on the installed reactor; returns the listening port."""
    reactor = twisted_reactor()
    site = server.Site(receiver, timeout=idle_timeout)
    # A factory, not a class: Twisted only calls it (channel, queued).
    metrics = receiver.metrics
    site.requestFactory = functools.partial(  # type: ignore[assignment]
        _GuardedRequest,
        max_body=receiver.max_body,
        on_refused=None if metrics is None else metrics.beat_answered,
    )
    site.noisy = False
    site.displayTracebacks = False
    guard = _Guard(site, reactor, request_timeout, max_connections)
    guard.noisy = False
    return reactor.listenTCP(port, guard, interface=host)
