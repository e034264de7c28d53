"""A receiver stopped (SIGTERM) while beats are in flight: every beat it
stored was answered, and every beat answered 200 was stored, on SQLite
and on PostgreSQL, whose beats are stored by a thread of their own."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from scrapy_heartbeat.server import open_store
from tests.server.serving import HEARTBEAT, Serve

IN_FLIGHT = 100


def _send(url: str, body: dict[str, Any]) -> socket.socket:
    """A beat written whole on a connection of its own, its answer unread."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (HEARTBEAT.encode(), len(data), data)
    )
    return sock


def _answered(sock: socket.socket) -> bool:
    """Whether the connection got a 200 before it closed."""
    with sock:
        try:
            return b" 200 " in sock.recv(4096).split(b"\r\n", 1)[0]
        except OSError:  # a reset: the receiver dropped it unanswered
            return False


def test_beats_in_flight_at_sigterm_are_answered_as_stored(
    serve: Callable[..., Serve], db: str
) -> None:
    s = serve(db=db)
    eid = str(uuid.uuid4())
    beat = {"execution_id": eid, "timestamp": int(time.time()), "status": "running"}
    assert s.post({**beat, "container_id": "first"}).status_code == 200
    socks = [_send(s.url, {**beat, "container_id": f"w{n}"}) for n in range(IN_FLIGHT)]
    s.process.terminate()
    answered = {f"w{n}" for n, sock in enumerate(socks) if _answered(sock)}
    assert s.process.wait(30) == 0
    store = open_store(db)
    try:
        stored = {c["container_id"] for c in store.containers(eid)} - {"first"}
    finally:
        store.close()
    assert answered, "no beat was answered: none was in flight"
    assert stored == answered
    assert "Traceback" not in s.stderr()
