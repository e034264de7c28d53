"""One attempt to POST an alert to a webhook, bounded whole, on the
receiver's reactor (Twisted's ``Agent``, no thread):

* a total deadline, whatever the server does: connecting, sending, a
  status line or headers that come a byte at a time;
* at most :data:`MAX_REPLY` bytes read of the reply, headers included, then
  the connection dropped; the status line is all that is needed, so the
  body of a reply is never read;
* redirects never followed: a 3xx is a failed attempt that says where it
  pointed (only the origin of its ``Location``);
* the URL's ``user:password@`` sent as a Basic ``Authorization`` header.

What it returns is an :class:`Outcome`; its ``problem`` never quotes the
webhook's path, query or credentials, nor anything of the reply's body.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import TimeoutError as DeadlineError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from scrapy_heartbeat.redact import describe, split_credentials, url_origin

#: The most bytes of a webhook's reply read (status line, headers, body).
MAX_REPLY = 64 * 1024
USER_AGENT = b"scrapy-heartbeat-receiver"


@dataclass(frozen=True)
class Outcome:
    """``delivered``: a 2xx. Otherwise ``retry``: whether sending it again
    later may help (a network error, the deadline, 5xx, 408, 429), and
    ``problem``: one line that is safe to log."""

    delivered: bool
    retry: bool
    problem: str = ""


DELIVERED = Outcome(True, False)


def post(
    reactor: Any, url: str, payload: dict[str, Any], deadline: float
) -> defer.Deferred[Outcome]:
    """POST ``payload`` as JSON to ``url``; never fails, and fires within
    ``deadline`` seconds (and the reactor's turn) whatever the server does."""
    plain, user, password = split_credentials(url)
    headers = Headers({b"Content-Type": [b"application/json"], b"User-Agent": [USER_AGENT]})
    if user is not None:
        secret = f"{user}:{password or ''}".encode()
        headers.addRawHeader(b"Authorization", b"Basic " + base64.b64encode(secret))
    endpoints = _CappedEndpoints(reactor, deadline)
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
    body = FileBodyProducer(io.BytesIO(json.dumps(payload).encode()))
    sent: defer.Deferred[Any] = agent.request(
        b"POST", plain.encode("ascii", "replace"), headers, body
    )
    sent.addCallback(_judged)
    sent.addTimeout(deadline, reactor)
    sent.addErrback(_failed, deadline, endpoints)
    return sent  # type: ignore[return-value] # turned to an Outcome by both branches


def _judged(response: Any) -> Outcome:
    response.deliverBody(_Dropped())
    code = response.code
    if 200 <= code < 300:
        return DELIVERED
    if 300 <= code < 400:
        location = response.headers.getRawHeaders(b"location") or [b""]
        where = url_origin(location[0].decode("latin-1"))
        return Outcome(False, False, f"HTTP {code} redirect to {where} (not followed)")
    return Outcome(False, code >= 500 or code in (408, 429), f"HTTP {code}")


def _failed(failure: Failure, deadline: float, endpoints: _CappedEndpoints) -> Outcome:
    if endpoints.overflowed:
        return Outcome(False, True, f"a reply past {MAX_REPLY // 1024} KiB before its status")
    # Cut by the deadline: while connecting, or (wrapped) while waiting.
    reasons = getattr(failure.value, "reasons", None) or [failure]
    if any(isinstance(r.value, (DeadlineError, defer.CancelledError)) for r in [failure, *reasons]):
        return Outcome(False, True, f"no complete reply within {deadline:g} s")
    if isinstance(failure.value, ResponseFailed):
        return Outcome(False, True, f"the reply failed: {describe(reasons[0].value)}")
    return Outcome(False, True, describe(failure.value or Exception("unknown")))


class _Dropped(protocol.Protocol):
    """A reply's body: not read; the connection is closed at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        pass


class _Capped(policies.ProtocolWrapper):
    """Aborts the connection once it has received more than ``MAX_REPLY``
    bytes: headers without end are bounded as a body is."""

    def __init__(self, factory: _CappedFactory, wrapped: IProtocol) -> None:
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self.received = 0
        self.endpoints = factory.endpoints

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > MAX_REPLY:
            self.endpoints.overflowed = True
            assert self.transport is not None
            self.transport.abortConnection()
            return
        super().dataReceived(data)  # type: ignore[no-untyped-call]


class _CappedFactory(policies.WrappingFactory):
    protocol = _Capped

    def __init__(self, wrapped: IProtocolFactory, endpoints: _CappedEndpoints) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.endpoints = endpoints


@implementer(IStreamClientEndpoint)
class _CappedEndpoint:
    def __init__(self, inner: Any, endpoints: _CappedEndpoints) -> None:
        self.inner = inner
        self.endpoints = endpoints

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[Any]:
        connected: defer.Deferred[Any] = self.inner.connect(_CappedFactory(factory, self.endpoints))
        # The agent speaks to its own protocol; the wrapper sits below it.
        return connected.addCallback(lambda wrapper: wrapper.wrappedProtocol)


@implementer(IAgentEndpointFactory)
class _CappedEndpoints:
    """Connections for one attempt: TCP, or TLS checked as a browser does,
    each reading at most :data:`MAX_REPLY` bytes."""

    def __init__(self, reactor: Any, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.overflowed = False

    def endpointForURI(self, uri: Any) -> _CappedEndpoint:
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else uri.host
        endpoint: Any = HostnameEndpoint(self.reactor, host, uri.port, timeout=self.timeout)
        if uri.scheme == b"https":
            tls = BrowserLikePolicyForHTTPS().creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(tls, endpoint)
        return _CappedEndpoint(endpoint, self)
