"""A server that never finishes its reply, one way for each thing an HTTP
exchange waits on: a reply on a kept-alive connection, on one the server
closes, in HTTP/1.0, chunked, a TLS handshake, a proxy's CONNECT."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

#: What the server sends first; then one more byte of ``TRICKLE`` per period.
HEADS = {
    "keep-alive": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n",
    "head": b"HTTP/1.1 200 OK\r\nX-Slow: ",
    # A TLS handshake record header that announces more than ever comes.
    "tls": b"\x16\x03\x03\x40\x00",
    # A proxy whose CONNECT answer never ends.
    "connect": b"HTTP/1.1 200 Connection established\r\nX-Slow: ",
}


class TrickleServer:
    """Answers every connection with ``HEADS[kind]``, then a byte every
    ``period`` seconds for ``limit`` seconds at most (bounded, always)."""

    def __init__(self, kind: str, period: float = 0.2, limit: float = 30.0) -> None:
        self.kind, self.period, self.limit = kind, period, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.kind == "tls" else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.settimeout(1)
                if self.kind != "tls":
                    _read_head(connection)
                connection.sendall(HEADS[self.kind])
                deadline = time.monotonic() + self.limit
                while time.monotonic() < deadline and not self.stopped.wait(self.period):
                    connection.sendall(b"\x01" if self.kind == "tls" else b"x")
            except OSError:
                pass

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        self._thread.join(5)


def _read_head(connection: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk


def timed(call: Callable[[], object]) -> tuple[object, float]:
    began = time.monotonic()
    result = call()
    return result, time.monotonic() - began


class Blackhole:
    """A listening port that takes no more connections: its accept queue is
    full and never drained, so the kernel drops each new SYN and a
    ``connect`` waits (as for a host whose packets are dropped)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self._fill: list[socket.socket] = []
        for _ in range(4):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            self._fill.append(sock)
        time.sleep(0.1)  # their handshakes complete (the queue holds one)

    def close(self) -> None:
        for sock in self._fill:
            sock.close()
        self.listener.close()
