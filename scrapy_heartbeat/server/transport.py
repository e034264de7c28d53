"""The receiver's connections: :func:`listen` serves a resource behind
guards that keep hostile and careless clients from holding the reactor. A
body is refused by its headers before it is read (:class:`_GuardedRequest`),
a request must arrive whole within a deadline (:class:`_Deadline`), and
open connections are capped (:class:`_Guard`).

A refused body is answered at once, but the connection is not closed
while the client may still be sending: closing a socket with unread data
makes the kernel send a reset, and a client that writes its whole body
before reading (urllib, requests) would see that reset, never the 413 or
415. So the connection lingers, as nginx's ``lingering_close`` does: our
side is shut for writing after the answer, and what the client still
sends is read and discarded, never kept, until it stops, or for at most
:data:`LINGER_SECONDS` or :data:`LINGER_BYTES`.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web import resource, server

from scrapy_heartbeat._compat import twisted_reactor
from scrapy_heartbeat.payload import HEARTBEAT_PATH

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: The largest body taken, bytes.
MAX_BODY = 64 * 1024
#: A request must arrive whole within this many seconds of its first byte.
REQUEST_TIMEOUT = 10.0
#: A kept-alive connection without a request for this long is closed: more
#: than the spec's longest interval (60 s), so that a client beating at it
#: never sends on a connection we are closing.
IDLE_TIMEOUT = 90.0
MAX_CONNECTIONS = 512
#: After a refusal, what the client still sends is discarded for at most
#: this many seconds, and this many bytes, then the connection is closed.
LINGER_SECONDS = 5.0
LINGER_BYTES = 32 * 1024 * 1024
#: ... or as soon as the client has sent nothing for this long: it has sent
#: its body and is reading the answer.
LINGER_IDLE = 1.0
_BEAT_PATH = HEARTBEAT_PATH.encode()

#: Told the reply code of a beat refused, and the seconds it took (None:
#: refused before it was timed).
OnAnswered = Callable[[int, "float | None"], None]


def is_json(request: Any) -> bool:
    """Whether the request says its body is JSON."""
    content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class _GuardedRequest(server.Request):
    """A request that refuses a body by its ``Content-Length`` and type
    before reading it, and stops reading one that grows past ``max_body``.
    Twisted's own Request spools a body whole, and parses a form body,
    before ``render()`` could refuse it: a large form would hold the
    reactor for as long as it takes to arrive and be parsed."""

    def __init__(
        self, *args: Any, max_body: int, on_refused: OnAnswered | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # Only JSON bodies get this far (gotLength), so no form is parsed; but
        # Twisted >= 24.7 would still parse every request's Content-Type with
        # the email package to find out: a sixth of a beat's cost.
        self._parsePOSTFormSubmission = False
        self._max_body = max_body
        self._on_refused = on_refused
        self._refused = False

    def gotLength(self, length: int | None) -> None:
        if (length is None or length > 0) and not is_json(self):
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
        transport: Any = self.channel.transport  # the connection's _Deadline
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (code, reason, len(body), body)
        )
        transport.linger()


class _Deadline(policies.ProtocolWrapper):
    """Closes a connection whose request has not arrived whole (headers and
    body) ``request_timeout`` seconds after it began, or after it opened:
    a client trickling a byte at a time (slowloris) holds it no longer.
    After a refusal it lingers (:meth:`linger`)."""

    factory: _Guard

    def __init__(self, factory: Any, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._timer: Any = None
        self._lingering: Any = None  # the timer that ends lingering
        self._linger_until = 0.0
        self._discarded = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self._lingering is not None:
            self._discard(len(data))
            return
        if self._timer is None:  # a new request begins
            self._arm()
        super().dataReceived(data)

    def linger(self) -> None:
        """The answer is written: shut our side once it is sent, pass
        nothing more to the request, and discard what still comes."""
        self._disarm()
        clock = self.factory.clock
        self._linger_until = clock.seconds() + LINGER_SECONDS
        self._lingering = clock.callLater(LINGER_IDLE, self._stop_lingering)
        transport: Any = self.transport
        transport.loseWriteConnection()

    def _discard(self, size: int) -> None:
        self._discarded += size
        left = self._linger_until - self.factory.clock.seconds()
        if self._discarded > LINGER_BYTES or left <= 0:
            self._stop_lingering()
        else:
            self._lingering.reset(min(LINGER_IDLE, left))

    def _stop_lingering(self) -> None:
        if self._lingering.active():
            self._lingering.cancel()
        # Data the client sends from now on is unread: the kernel answers it
        # with a reset, which a client still sending has earned.
        transport: Any = self.transport
        transport.loseConnection()

    def write(self, data: bytes) -> None:
        self._disarm()  # the request is in: we are answering it
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self._disarm()
        super().writeSequence(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
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


class _Site(server.Site):
    """A site without an access log. Twisted's writes a line per request
    into its own log, which nothing here reads: at a fleet's thousand beats
    a second it costs a tenth of the receiver's time, and the lines are
    buffered, never shown. ``/metrics`` counts the requests instead."""

    def log(self, request: Any) -> None:
        pass


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
    root: resource.Resource,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    max_body: int = MAX_BODY,
    on_refused: OnAnswered | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> Any:
    """Serve ``root`` on the installed reactor; returns the listening port.
    ``on_refused`` is told of each beat refused before it was read."""
    reactor = twisted_reactor()
    site = _Site(root, timeout=idle_timeout)
    # A factory, not a class: Twisted only calls it (channel, queued).
    site.requestFactory = functools.partial(  # type: ignore[assignment]
        _GuardedRequest, max_body=max_body, on_refused=on_refused
    )
    site.noisy = False
    site.displayTracebacks = False
    guard = _Guard(site, reactor, request_timeout, max_connections)
    guard.noisy = False
    return reactor.listenTCP(port, guard, interface=host)
