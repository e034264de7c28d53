"""Opening a connection within a request's deadline, and cancellable.

urllib3 opens a connection with a blocking ``getaddrinfo`` (no timeout of
its own: a stalled resolver holds it for as long as the system's resolver
retries) and then a blocking ``connect`` per address, each with the whole
connect timeout: a host with three unreachable addresses takes three
timeouts. Neither can be cut from another thread. Here the name is resolved
on a helper thread the caller stops waiting for, and each address is
connected without blocking, so the whole of it ends at the deadline, or as
soon as the request is cut off.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

#: How often a wait looks whether the request was cut off.
_POLL = 0.05
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY})

AddressInfo = tuple[Any, Any, int, str, Any]


class _CutOff(OSError):
    """The request was cut off while connecting."""


def connect_within(
    conn: Any, deadline: float, cutting: Callable[[], bool], resolver: Resolver
) -> socket.socket:
    """A connected socket for urllib3's connection ``conn`` (its host, port,
    socket options, source address and timeout), by ``deadline`` (a
    ``time.monotonic()`` value) at the latest. Raises what urllib3's own
    ``_new_conn`` raises: ``ConnectTimeoutError`` past the deadline,
    ``NewConnectionError`` for anything else."""
    host = str(conn._dns_host).strip("[]")
    try:
        infos = resolver.resolve(host, conn.port, deadline, cutting)
    except TimeoutError:
        raise ConnectTimeoutError(conn, f"name resolution of {conn.host} timed out") from None
    except OSError as exc:  # socket.gaierror: "Name or service not known" ...
        raise NewConnectionError(conn, f"Failed to resolve {conn.host!r}: {exc}") from None
    timeout = conn.timeout if isinstance(conn.timeout, (int, float)) else None
    error: OSError = OSError("no address to connect to")
    for index, info in enumerate(infos):
        # Each address gets an even share of what is left (urllib3 gives
        # the first the whole timeout: one that drops packets, an IPv6
        # route down, would leave none for the next), the connect timeout
        # at most, and all of them the deadline.
        now = time.monotonic()
        until = now + (deadline - now) / (len(infos) - index)
        if timeout is not None:
            until = min(until, now + timeout)
        try:
            sock = _connect(info, conn, until, cutting)
        except OSError as exc:
            error = exc
            if isinstance(exc, _CutOff) or time.monotonic() >= deadline:
                break
            continue
        sock.settimeout(timeout if timeout is not None else socket.getdefaulttimeout())
        return sock
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={timeout})"
        )
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


class Resolver:
    """Name lookups on helper threads, one at a time per name and port:
    while a stalled resolver holds one, later requests wait on that one
    rather than start a thread each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], _Lookup] = {}

    def resolve(
        self, host: str, port: int, deadline: float, cutting: Callable[[], bool]
    ) -> list[AddressInfo]:
        """``getaddrinfo`` by ``deadline``; an address needs no lookup."""
        family = allowed_gai_family()
        with contextlib.suppress(socket.gaierror):
            flags = socket.AI_NUMERICHOST
            return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, flags)
        key = (host, port)
        with self._lock:
            lookup = self._pending.get(key)
            if lookup is None:
                lookup = self._pending[key] = _Lookup(host, port, family)
                name = "scrapy-heartbeat-resolve"
                thread = threading.Thread(target=self._run, args=(key, lookup), name=name)
                thread.daemon = True
                thread.start()
        return lookup.wait(deadline, cutting)

    def _run(self, key: tuple[str, int], lookup: _Lookup) -> None:
        lookup.run()
        with self._lock:
            if self._pending.get(key) is lookup:
                del self._pending[key]


class _Lookup:
    """One ``getaddrinfo`` call, which any number of requests may wait on."""

    def __init__(self, host: str, port: int, family: int) -> None:
        self.query = (host, port, family)
        self.found: list[AddressInfo] = []
        self.failed: Exception | None = None
        self.done = threading.Event()

    def run(self) -> None:
        host, port, family = self.query
        try:
            self.found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except Exception as exc:  # gaierror, UnicodeError for a bad name
            self.failed = exc
        self.done.set()

    def wait(self, deadline: float, cutting: Callable[[], bool]) -> list[AddressInfo]:
        while not self.done.wait(min(_POLL, max(0.0, deadline - time.monotonic()))):
            if cutting():
                raise _CutOff("cut off while resolving the host name")
            if time.monotonic() >= deadline:
                raise TimeoutError("name resolution timed out")
        if self.failed is not None:
            error = self.failed
            raise error if isinstance(error, OSError) else OSError(str(error))
        return self.found


def _connect(
    info: AddressInfo, conn: Any, deadline: float, cutting: Callable[[], bool]
) -> socket.socket:
    """One address, connected without blocking."""
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        for option in conn.socket_options or ():
            sock.setsockopt(*option)
        if conn.source_address:
            sock.bind(conn.source_address)
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code in _IN_PROGRESS:
            code = _await_connect(sock, deadline, cutting)
        if code:
            raise OSError(code, os.strerror(code))
        return sock
    except BaseException:
        sock.close()
        raise


def _await_connect(sock: socket.socket, deadline: float, cutting: Callable[[], bool]) -> int:
    """The outcome (an errno, 0 for connected) of a connect under way."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("connect timed out")
            if selector.select(min(left, _POLL)):
                return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if cutting():
                raise _CutOff("cut off while connecting")
