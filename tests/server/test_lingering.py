"""Refusals a client sees: a body refused by its length (413) or type (415)
is answered while the client is still sending, and the connection lingers
until the client has sent it, so that real clients that write their whole
body before reading (urllib, requests) get the status and its JSON, not a
connection reset. A client that never stops sending is cut off after the
documented bound, without the receiver keeping what it sent."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from scrapy_heartbeat.server.transport import LINGER_BYTES, LINGER_SECONDS
from tests.server.beats import beat
from tests.server.serving import HEARTBEAT, Serve

BIG = 16 * 1024 * 1024
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
#: What each refusal answers: its status and the start of its message.
EXPECTED = {JSON: (413, "body larger than"), FORM: (415, "Content-Type must be")}


@pytest.fixture
def receiver(serve: Callable[..., Serve]) -> Serve:
    return serve()


def body(chunked: bool) -> bytes | Iterator[bytes]:
    """16 MiB, as one bytes (sent with a Content-Length) or as pieces (sent
    chunked, for a client that cannot know the length first)."""
    if not chunked:
        return b"x" * BIG
    return (b"x" * (1024 * 1024) for _ in range(BIG // (1024 * 1024)))


def with_urllib(url: str, content_type: str, chunked: bool) -> tuple[int, dict[str, str]]:
    data = body(chunked)
    headers = {"Content-Type": content_type}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"  # urllib encodes an iterable so
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # type: ignore[arg-type]
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, json.loads(refused.read())


def with_requests(url: str, content_type: str, chunked: bool) -> tuple[int, dict[str, str]]:
    reply = requests.post(
        url, data=body(chunked), headers={"Content-Type": content_type}, timeout=30
    )
    return reply.status_code, reply.json()


@pytest.mark.parametrize("client", [with_urllib, with_requests])
@pytest.mark.parametrize("content_type", [JSON, FORM])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_sending_a_large_body_sees_the_refusal(
    receiver: Serve,
    client: Callable[[str, str, bool], tuple[int, dict[str, str]]],
    content_type: str,
    chunked: bool,
) -> None:
    code, reply = client(receiver.url + HEARTBEAT, content_type, chunked)
    expected_code, message = EXPECTED[content_type]
    assert code == expected_code, reply
    assert reply["status"] == "error"
    assert reply["message"].startswith(message)
    assert receiver.post(beat()).status_code == 200  # and the receiver goes on
    assert receiver.rows() == 1


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_never_stops_sending_is_cut_off(receiver: Serve) -> None:
    """A body announced as 1 TiB and sent as fast as the socket takes it:
    the 413 comes at once, what follows is discarded, not kept, and the
    connection is closed after the documented bound of time or bytes."""
    host, port = receiver.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    before = rss_kib(receiver.process.pid)
    head = (
        f"POST {HEARTBEAT} HTTP/1.1\r\nHost: x\r\nContent-Type: {JSON}\r\n"
        f"Content-Length: {2**40}\r\n\r\n"
    )
    sock.sendall(head.encode())
    answer = sock.recv(65536)  # at once, before any of the body
    chunk = b"x" * 65536
    sent = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < 4 * LINGER_SECONDS:
            sent += sock.send(chunk)
    except OSError:  # reset or broken pipe: cut off
        pass
    elapsed = time.monotonic() - started
    grown = rss_kib(receiver.process.pid) - before
    sock.close()
    print(f"sent {sent} bytes in {elapsed:.2f} s; the receiver grew by {grown} KiB")
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert elapsed < 2 * LINGER_SECONDS  # cut off, not sending until the test gave up
    # What the kernel buffers on both sides is the only slack over the bound.
    assert sent <= LINGER_BYTES + 16 * 1024 * 1024
    assert grown < 16 * 1024, (grown, sent)  # KiB: what was discarded was not kept
    assert receiver.post(beat()).status_code == 200


def test_a_client_that_trickles_forever_is_cut_off_after_the_time_bound(
    receiver: Serve,
) -> None:
    """A byte every half second: never idle long enough to be closed as
    done, never near the byte bound; cut at LINGER_SECONDS."""
    host, port = receiver.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"POST {HEARTBEAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n".encode())
    answer = sock.recv(65536)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 4 * LINGER_SECONDS:
            sock.send(b"x")
            time.sleep(0.5)
    except OSError:
        pass
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 415 "), answer
    assert LINGER_SECONDS - 1 <= elapsed < LINGER_SECONDS + 2
