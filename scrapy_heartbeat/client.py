"""The synchronous heartbeat client: the spec's ``HeartbeatClient``.

Used as is from scripts and the CLI, and from the extension's worker thread,
so there is one HTTP code path. :meth:`HeartbeatClient.send` never raises for
anything the network or the server does; it returns a :class:`HeartbeatResult`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from scrapy_heartbeat.connect import Resolver, connect_within
from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.ids import check_execution_id
from scrapy_heartbeat.payload import HEARTBEAT_PATH, heartbeat_body
from scrapy_heartbeat.redact import redact_url, split_credentials
from scrapy_heartbeat.settings import MAX_TIMEOUT, check_base_url, check_headers
from scrapy_heartbeat.tokens import check_token

if TYPE_CHECKING:
    from scrapy_heartbeat.payload import Progress
    from scrapy_heartbeat.settings import HeartbeatConfig

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "rejected", "failed"]

USER_AGENT = "scrapy-heartbeat"
_MAX_MESSAGE = 300
#: The most of a reply we read: ours are ~100 bytes; anything above is not a
#: heartbeat reply, and reading it would cost the crawl memory and CPU.
MAX_REPLY = 64 * 1024


@dataclass(frozen=True)
class HeartbeatResult:
    """What became of one heartbeat.

    ``ok``: the server answered ``{"status": "ok"}``. ``rejected``: the server
    refused our request (4xx or ``{"status": "error"}``); ``message`` is its
    reason; sending it again will not help. ``failed``: the network, a timeout,
    a 5xx or an unreadable reply; ``retryable`` tells whether sending again
    soon may help (a read timeout is not retried, as the spec asks).
    """

    outcome: Outcome
    message: str = ""
    status_code: int | None = None
    retryable: bool = False
    attempts: int = 1
    retry_after: float | None = None  # seconds, from a 429's or 503's Retry-After
    #: The status the beat carried, as sent (with shared counters, the
    #: execution's: it may differ from the status asked for).
    beat_status: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class HeartbeatClient:
    """Posts heartbeats to ``{api_base_url}/api/v1/monitoring/heartbeat``.

    ``token`` is sent as ``Authorization: Bearer <token>``; an
    ``Authorization`` in ``headers`` is then not sent
    (``header_authorization_ignored``). Credentials in the URL
    (``https://user:pass@host``) become an ``Authorization: Basic`` header,
    unless ``token`` or ``headers`` give one, which then wins
    (``url_credentials_ignored``).
    ``proxy``: None (the default) goes direct, whatever ``HTTP(S)_PROXY`` says;
    a proxy URL; or ``"env"`` for the environment's ``HTTP(S)_PROXY`` and
    ``NO_PROXY``. Raises :class:`ConfigError` for settings that cannot work.
    """

    @classmethod
    def from_config(cls, config: HeartbeatConfig, execution_id: str) -> HeartbeatClient:
        """The client the extension sends with (settings already checked)."""
        client = cls(
            config.api_base_url,
            execution_id,
            config.container_id,
            timeout=config.timeout,
            headers=config.headers,
            verify=config.tls_verify,
            proxy=config.proxy,
            token=config.token,
        )
        if client.header_authorization_ignored:
            logger.warning(
                "scrapy-heartbeat: HEARTBEAT_TOKEN and an Authorization header in "
                "HEARTBEAT_HEADERS are both set; the token is sent, the header is not"
            )
        if client.url_credentials_ignored:
            given = "HEARTBEAT_TOKEN" if config.token else "HEARTBEAT_HEADERS' Authorization"
            logger.warning(
                "scrapy-heartbeat: HEARTBEAT_API_BASE_URL has credentials, and %s wins; "
                "the URL's credentials are not sent",
                given,
            )
        return client

    def __init__(
        self,
        api_base_url: str,
        execution_id: str,
        container_id: str,
        *,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        verify: bool | str = True,
        session: requests.Session | None = None,
        proxy: str | None = None,
        token: str | None = None,
    ) -> None:
        base, user, password = split_credentials(check_base_url(api_base_url, "api_base_url"))
        self.api_base_url = base
        self.execution_id = check_execution_id(execution_id, "execution_id")
        self.container_id = container_id
        self.heartbeat_url = f"{self.api_base_url}{HEARTBEAT_PATH}"
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
            raise ConfigError(
                f"timeout={timeout!r} is not a number of seconds in (0, {MAX_TIMEOUT:g}]; "
                "set it to e.g. 10"
            )
        self.timeout = float(timeout)
        self.verify = verify
        own = check_headers(headers or {}, "headers")
        self._authorize(own, token, user, password)
        self.proxy = proxy
        self._adapter: _CuttableAdapter | None = None
        if session is None:
            session = requests.Session()
            self._adapter = _CuttableAdapter()
            session.mount("http://", self._adapter)
            session.mount("https://", self._adapter)
        self.session = session
        self._lock = threading.Lock()
        self._attempt = 0  # which send() is in progress; its cut-off reason
        self._cut: str | None = None
        self.session.headers.update({"User-Agent": USER_AGENT, **own})
        self.session.trust_env = proxy == "env"  # no HTTP(S)_PROXY, no .netrc unless asked
        if proxy and proxy != "env":
            self.session.proxies = {"http": proxy, "https": proxy}

    def _authorize(
        self, own: dict[str, str], token: str | None, user: str | None, password: str | None
    ) -> None:
        """Leave one ``Authorization`` in ``own``: ``token``'s, else the
        headers' own, else the URL's credentials; note every secret seen,
        sent or not, so that no message ever shows one."""
        self.url_credentials_ignored = False
        self.header_authorization_ignored = False
        secrets = [v for v in own.values() if v]  # a header not sent is a secret still
        if token is not None:
            overridden = [k for k in own if k.lower() == "authorization"]
            self.header_authorization_ignored = bool(overridden)
            for name in overridden:
                del own[name]
            own["Authorization"] = f"Bearer {check_token(token, 'token')}"
            secrets.append(own["Authorization"])
        if user is not None:
            pair = f"{user}:{password or ''}"
            basic = base64.b64encode(pair.encode("utf-8")).decode("ascii")
            secrets += [pair, basic, password or ""]
            if any(k.lower() == "authorization" for k in own):
                self.url_credentials_ignored = True
            else:
                own["Authorization"] = f"Basic {basic}"
        # A token alone ("Bearer T", "Basic B64") is a secret too; longest first.
        secrets += [v.split(None, 1)[1] for v in list(secrets) if len(v.split(None, 1)) == 2]
        self._secrets = sorted({x for x in secrets if len(x) >= 4}, key=len, reverse=True)

    def send(
        self,
        status: str | None = "running",
        progress: Progress | dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        timestamp: int | None = None,
        cancelled: Callable[[], str | None] | None = None,
        watchdog: bool = True,
    ) -> HeartbeatResult:
        """Send one heartbeat; ``timestamp`` defaults to now, taken just before
        sending so the server's latency figure is true. ``timeout`` bounds the
        whole request. ``cancelled`` is asked as the request starts: a reason
        there means do not send (see :meth:`cut_off` for one in progress).
        ``watchdog=False``: the caller promises to call :meth:`cut_off` at the
        deadline itself (the extension does, from its event loop's timers),
        so no thread is started for the request."""
        body = heartbeat_body(self.execution_id, self.container_id, status, progress, timestamp)
        wait = self.timeout if timeout is None else min(max(timeout, 0.001), self.timeout)
        with self._lock:
            self._attempt += 1
            self._cut = None
            attempt = self._attempt
            reason = cancelled() if cancelled is not None else None
        if reason is not None:
            return HeartbeatResult("failed", reason, attempts=0)
        # requests' timeout bounds each read, not the request: a reply that
        # trickles one byte at a time would hold us for ever. The watchdog
        # cuts the connection at the deadline.
        if self._adapter is not None:
            self._adapter.start_attempt(time.monotonic() + wait)
        timer = None
        if watchdog:
            timer = threading.Timer(wait, self._cut_off, (attempt, timed_out(wait)))
            timer.daemon = True
            timer.start()
        try:
            return self._post(body, wait)
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._attempt += 1  # a late cut_off() now finds another attempt
            if self._adapter is not None:
                self._adapter.end_attempt()

    def cut_off(self, reason: str) -> None:
        """Cut the request in progress short, from any thread: it returns
        ``failed`` with ``reason`` (the final beat must not wait behind it)."""
        with self._lock:
            attempt = self._attempt
        self._cut_off(attempt, reason)

    def _cut_off(self, attempt: int, reason: str) -> None:
        with self._lock:
            if attempt != self._attempt or self._cut is not None:
                return
            self._cut = reason
            if self._adapter is not None:
                self._adapter.shut_down_connections()

    def _post(self, body: dict[str, Any], wait: float) -> HeartbeatResult:
        try:
            response = self.session.post(
                self.heartbeat_url,
                # Text that is not valid UTF-8 (a lone surrogate) is replaced,
                # never a reason for a beat to fail.
                data=json.dumps(body, ensure_ascii=False).encode("utf-8", "replace"),
                headers={"Content-Type": "application/json"},
                timeout=wait,
                verify=self.verify,
                allow_redirects=False,
                stream=True,  # the reply is read below, at most MAX_REPLY bytes of it
            )
        except requests.exceptions.RequestException as exc:
            if self._cut is not None:
                return HeartbeatResult("failed", self._through_proxy(self._cut, exc))
            return HeartbeatResult(
                "failed",
                self._scrub(self._through_proxy(describe_exception(exc, wait), exc)),
                retryable=not isinstance(exc, requests.exceptions.ReadTimeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            # requests reads a redirect's body itself, even with redirects
            # off, and older releases let urllib3's errors out unwrapped.
            reason = self._cut or f"reply unreadable ({type(exc).__name__})"
            return HeartbeatResult("failed", reason, retryable=self._cut is None)
        with response:
            try:
                raw = response.raw.read(MAX_REPLY + 1, decode_content=True) or b""
            except Exception as exc:  # urllib3's ReadTimeoutError, ProtocolError, ...
                raw = None
                reason = f"reply cut off ({type(exc).__name__})"
            if self._cut is not None:  # a cut-off can also end the read early and quietly
                raw, reason = None, self._cut
            if raw is None:
                # Not retried when the watchdog cut it: like a read timeout,
                # the spec says wait for the next beat.
                return HeartbeatResult(
                    "failed",
                    f"HTTP {response.status_code}, {reason}",
                    response.status_code,
                    retryable=self._cut is None,
                )
            if len(raw) > MAX_REPLY:
                return HeartbeatResult(
                    "failed",
                    f"HTTP {response.status_code} with a reply larger than {MAX_REPLY // 1024} KiB "
                    "(not read; a heartbeat reply is ~100 bytes)",
                    response.status_code,
                )
            return self._interpret(response, raw)

    def _interpret(self, response: requests.Response, raw: bytes) -> HeartbeatResult:
        code = response.status_code
        try:
            reply = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            reply = None
        message = ""
        if isinstance(reply, dict) and isinstance(reply.get("message"), str):
            message = reply["message"]
        if code == 429 or (code == 503 and "Retry-After" in response.headers):
            after = retry_after(response.headers.get("Retry-After"))
            detail = message or f"HTTP {code} from the server"
            if after is not None:
                detail += f" (Retry-After {after:g}s)"
            return HeartbeatResult(
                "failed", self._scrub(detail), code, retryable=True, retry_after=after
            )
        if code >= 500:
            detail = message or f"HTTP {code} from the server"
            return HeartbeatResult("failed", self._scrub(detail), code, retryable=True)
        if code >= 400:
            detail = message or f"HTTP {code}"
            return HeartbeatResult("rejected", self._scrub(detail), code)
        if 300 <= code < 400:
            location = response.headers.get("Location", "")
            where = redact_url(location)[:200] if location else "nowhere"
            return HeartbeatResult(
                "rejected",
                self._scrub(
                    f"HTTP {code}: redirected to {where} (not followed; "
                    "point HEARTBEAT_API_BASE_URL at the final address)"
                ),
                code,
            )
        if not raw:
            return HeartbeatResult("ok", "", code)  # 2xx without a body (204): delivered
        if not isinstance(reply, dict):
            return HeartbeatResult(
                "failed", f"HTTP {code} with a reply that is not JSON", code, retryable=True
            )
        if reply.get("status") == "ok":
            return HeartbeatResult("ok", "", code)
        if reply.get("status") == "error":
            return HeartbeatResult("rejected", self._scrub(message or "status: error"), code)
        return HeartbeatResult(
            "failed", f"HTTP {code} with an unexpected reply status", code, retryable=True
        )

    def _through_proxy(self, reason: str, exc: BaseException) -> str:
        if self.proxy and self.proxy != "env":
            return f"{reason} (through proxy {redact_url(self.proxy)})"
        if isinstance(exc, requests.exceptions.ProxyError):
            return f"{reason} (through the environment's proxy)"
        return reason

    def _scrub(self, text: str) -> str:
        """``text`` as one short line holding none of our secrets."""
        line = " ".join(text.split())
        for secret in self._secrets:
            line = line.replace(secret, "***")
        line = line[:_MAX_MESSAGE]
        return redact_url(line) if "@" in line else line

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HeartbeatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _CuttableAdapter(HTTPAdapter):
    """An adapter whose request in progress another thread can end
    (``requests`` has no way to abort one).

    Every socket a request opens is duplicated as it is made, before
    anything is sent or awaited on it: shutting the duplicate down ends
    whatever waits on that socket (a reply, a TLS handshake, a proxy's
    ``CONNECT`` answer), whichever object holds the socket by then
    (http.client hands the socket of a connection the server closes to its
    response). A kept-alive connection reused from an earlier request is cut
    through the socket it holds. The duplicates live for one request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_use: weakref.WeakSet[Any] = weakref.WeakSet()
        self._handles: list[socket.socket] = []  # duplicates of the sockets this request made
        self._cut: list[socket.socket] = []  # sockets of reused connections, shut down
        self._cutting = False  # the request in progress is being cut
        self._deadline: float | None = None  # of the request in progress (time.monotonic())
        self._pools = _tracking_pools(
            self._in_use, self._opened, lambda: self._cutting, lambda: self._deadline
        )
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are classes of their own
            manager.pool_classes_by_scheme = self._pools
        return manager

    def start_attempt(self, deadline: float) -> None:
        """The requesting thread: a request starts, to end by ``deadline``
        (connecting included)."""
        self._deadline = deadline

    def _opened(self, sock: socket.socket) -> None:
        """The requesting thread, as a connection opens ``sock``."""
        handle = sock.dup()
        with self._lock:
            self._handles.append(handle)
            if self._cutting:  # cut while the socket was connecting
                _shut(handle)

    def shut_down_connections(self) -> None:
        """Any thread: end the request in progress."""
        with self._lock:
            self._cutting = True
            for handle in self._handles:
                _shut(handle)
        for connection in list(self._in_use):
            sock = getattr(connection, "sock", None)
            if isinstance(sock, socket.socket) and not (
                # A TLS handshake under way on a plain socket (urllib3 1.26):
                # its duplicate above cuts it; cutting this object would leak
                # the SSLSocket being made.
                isinstance(connection, HTTPSConnection) and not isinstance(sock, ssl.SSLSocket)
            ):
                _shut(sock)
                with self._lock:
                    self._cut.append(sock)

    def end_attempt(self) -> None:
        """The requesting thread, once the request unwound: close the
        duplicates and the cut sockets; after a cut, drop every pooled
        connection (one may have been cut while idle in the pool)."""
        with self._lock:
            handles, self._handles = self._handles, []
            shut, self._cut = self._cut, []
            cut, self._cutting = self._cutting, False
            self._deadline = None
        for handle in handles:
            handle.close()
        # Left to urllib3, a socket cut mid-request may stay open until the
        # garbage collector breaks a reference cycle of its exception.
        for sock in shut:
            with contextlib.suppress(OSError):
                if sock.fileno() != -1:
                    os.close(sock.detach())
        if cut:
            self.poolmanager.clear()
            for manager in self.proxy_manager.values():
                manager.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed, or never connected
        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read or write at once


def _tracking_pools(
    in_use: weakref.WeakSet[Any],
    opened: Callable[[socket.socket], None],
    cutting: Callable[[], bool],
    deadline: Callable[[], float | None],
) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pool classes that add each connection they lend to
    ``in_use``, and whose connections open their socket within the
    request's deadline and report it (one adapter's own: nothing is shared
    between clients)."""

    resolver = Resolver()

    def new_conn(conn: Any, connect: Callable[[], socket.socket]) -> socket.socket:
        until = deadline()
        sock = connect() if until is None else connect_within(conn, until, cutting, resolver)
        opened(sock)
        return sock

    class Reporting(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self, super()._new_conn)

    class ReportingHTTPS(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self, super()._new_conn)

        def connect(self) -> None:
            try:
                super().connect()
            except BaseException as exc:
                _close_orphan_tls_socket(exc)
                raise

        def _tunnel(self) -> None:
            super()._tunnel()
            # A proxy's CONNECT answer cut short reads as a complete one
            # (http.client takes the end of the stream for the end of the
            # headers): go no further, to a TLS handshake on a dead socket.
            if cutting():
                raise ConnectionError("cut off during the proxy's CONNECT")

    class Tracking(HTTPConnectionPool):
        ConnectionCls: type[HTTPConnection] = Reporting

        def _get_conn(self, timeout: float | None = None) -> Any:
            connection = super()._get_conn(timeout)
            in_use.add(connection)
            return connection

        def _put_conn(self, conn: Any) -> None:
            if conn is not None:  # None: a connection that failed was dropped
                in_use.discard(conn)
            super()._put_conn(conn)

    class TrackingHTTPS(Tracking, HTTPSConnectionPool):
        ConnectionCls = ReportingHTTPS

    return {"http": Tracking, "https": TrackingHTTPS}


def _close_orphan_tls_socket(exc: BaseException) -> None:
    """Close the TLS socket CPython's ``SSLSocket._create`` made and then
    left open as it raised: it finds a connection cut just before the
    handshake (our cut) gone, and raises from ``getpeername`` or ``recv``
    without closing the socket that now owns the descriptor. Left to the
    garbage collector, it is closed whenever that runs, with a
    ResourceWarning."""
    trace = exc.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        if frame.f_code.co_name == "_create":
            orphan = frame.f_locals.get("self")
            if isinstance(orphan, ssl.SSLSocket):
                with contextlib.suppress(OSError):
                    orphan.close()
        trace = trace.tb_next


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def timed_out(timeout: float) -> str:
    """The reason given for a request that outlived its ``timeout``."""
    return f"no complete reply within {timeout:.3g}s"


def describe_exception(exc: requests.exceptions.RequestException, timeout: float) -> str:
    """A short, stable reason: no traceback, no URL (it may hold credentials)."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return (
                "TLS certificate verify failed (trust the server's CA with "
                "HEARTBEAT_TLS_VERIFY='/path/to/ca.pem')"
            )
        return "TLS error"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        if "name resolution" in text:
            return f"host name not resolved within {timeout:g}s"
        return f"connect timeout after {timeout:g}s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return timed_out(timeout)
    if isinstance(exc, requests.exceptions.ConnectionError):
        lowered = text.lower()
        for needle, reason in (
            ("refused", "connection refused"),
            ("reset", "connection reset"),
            ("aborted", "connection aborted"),
            ("remotedisconnected", "connection closed without a reply"),
            ("name or service not known", "host name not found"),
            ("nodename nor servname", "host name not found"),
            ("temporary failure in name resolution", "host name not found"),
            ("timed out", f"timed out after {timeout:g}s"),
        ):
            if needle in lowered:
                return reason
        return "connection failed"
    return type(exc).__name__
