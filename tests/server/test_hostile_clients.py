"""The reference receiver against hostile and careless clients: bodies it
must refuse before reading them, values JSON or a database cannot hold,
execution ids in two spellings, slow connections, a locked database, and
text that must not reach a terminal raw. Over real sockets, to ``serve`` in
a process of its own."""

from __future__ import annotations

import json
import select
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.conftest import EXECUTION_ID
from tests.crawl import wait_for
from tests.server.beats import beat
from tests.server.serving import EXECUTIONS, HEARTBEAT, Serve


@pytest.fixture
def receiver(serve: Callable[..., Serve]) -> Serve:
    return serve("--token", "T0ken-value", "--request-timeout", "2")


AUTH = {"Authorization": "Bearer T0ken-value"}


def connect(receiver: Serve) -> socket.socket:
    host, port = receiver.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_reply(sock: socket.socket, timeout: float = 5) -> bytes:
    """What the server sends until it closes the connection or goes quiet."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def head(content_type: str, length: int | None, token: bool = True) -> bytes:
    lines = [f"POST {HEARTBEAT} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    if token:
        lines.append(f"Authorization: {AUTH['Authorization']}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- bodies refused before they are read ------------------------------------


@pytest.mark.parametrize("token", [True, False])
def test_a_form_body_is_refused_by_its_headers_before_it_is_sent(
    receiver: Serve, token: bool
) -> None:
    """64 MiB of form announced, none of it sent: the 415 comes at once
    (Twisted's own request would wait for all of it, then parse it, before
    any check)."""
    sock = connect(receiver)
    sock.sendall(head("application/x-www-form-urlencoded", 64 * 1024 * 1024, token))
    reply = read_reply(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 415 "), reply[:200]
    assert b'"status": "error"' in reply
    assert b"Content-Type must be application/json" in reply


def test_a_large_content_length_is_refused_before_the_body_is_sent(receiver: Serve) -> None:
    sock = connect(receiver)
    sock.sendall(head("application/json", 300 * 1024 * 1024))
    reply = read_reply(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"body larger than 65536 bytes" in reply


def test_a_chunked_body_is_cut_off_at_max_body_while_it_is_read(receiver: Serve) -> None:
    sock = connect(receiver)
    sock.sendall(head("application/json", None))
    chunk = b"x" * 16384
    sent = 0
    reply = b""
    for _ in range(64):  # up to 1 MiB; the server stops at 64 KiB
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            break
        sent += len(chunk)
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            reply = read_reply(sock)
            break
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert sent <= 256 * 1024  # refused soon after 64 KiB, not after the whole body


def test_a_large_form_upload_does_not_stall_other_clients(receiver: Serve) -> None:
    """16 MiB of form sent for real, unauthenticated: refused, and a beat
    sent meanwhile is stored."""
    outcome: list[Any] = []

    def upload() -> None:
        try:
            response = requests.post(
                receiver.url + HEARTBEAT,
                data=b"a=" + b"x" * (16 * 1024 * 1024),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=30,
            )
            outcome.append(response.status_code)
        except requests.ConnectionError as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=upload)
    thread.start()
    assert receiver.post(beat(), headers=AUTH).status_code == 200
    thread.join(30)
    assert outcome == [415]  # seen by the client: the connection lingers
    assert receiver.rows() == 1


# -- values that JSON or a database cannot hold --------------------------------


def raw_beat(**progress: str) -> bytes:
    """A beat whose progress values are raw JSON text."""
    body = json.dumps(beat(progress={}))
    inner = ", ".join(f'"{name}": {value}' for name, value in progress.items())
    return body.replace('"progress": {}', '"progress": {' + inner + "}").encode()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (raw_beat(percentage="NaN"), "progress.percentage"),
        (raw_beat(runtime_seconds="Infinity"), "progress.runtime_seconds"),
        (raw_beat(percentage="-Infinity"), "progress.percentage"),
        (raw_beat(anything_else="NaN"), "progress.anything_else"),
        (raw_beat(runtime_seconds="1e400"), "progress.runtime_seconds"),
        (raw_beat(crawled_urls=str(10**400)), "progress.crawled_urls"),
        (raw_beat(current_stage='"\\ud800"'), "progress.current_stage"),
        (json.dumps(beat(container_id="\ud800")).encode(), "container_id"),
        (json.dumps(beat(timestamp=2**63)).encode(), "timestamp"),
        (json.dumps(beat(timestamp=10**400)).encode(), "timestamp"),
        (json.dumps(beat(timestamp=10**15)).encode(), "timestamp"),
    ],
)
def test_values_that_cannot_be_stored_are_400_naming_the_field(
    receiver: Serve, raw: bytes, field: str
) -> None:
    response = receiver.post(raw, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "error"
    assert f"'{field}'" in response.json()["message"]
    assert receiver.rows() == 0
    listing = receiver.get(EXECUTIONS, headers=AUTH)
    # Still JSON for every reader.
    assert strict_json(listing.text) == {"executions": [], "next_cursor": None}


# -- execution ids ---------------------------------------------------------------


def test_an_execution_id_in_upper_case_is_the_same_execution(receiver: Serve) -> None:
    reply = receiver.post(beat(execution_id=EXECUTION_ID.upper()), headers=AUTH).json()
    assert reply["execution_id"] == EXECUTION_ID
    assert receiver.post(beat(), headers=AUTH).status_code == 200
    executions = receiver.get(EXECUTIONS, headers=AUTH).json()["executions"]
    assert [(e["execution_id"], e["beats"]) for e in executions] == [(EXECUTION_ID, 2)]
    detail = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID.upper()}", headers=AUTH)
    assert detail.json()["execution_id"] == EXECUTION_ID


@pytest.mark.parametrize(
    "given",
    [
        EXECUTION_ID + "\n",
        EXECUTION_ID.replace("-", ""),
        "{" + EXECUTION_ID + "}",
        "urn:uuid:" + EXECUTION_ID,
        " " + EXECUTION_ID,
    ],
)
def test_only_the_8_4_4_4_12_form_is_an_execution_id(receiver: Serve, given: str) -> None:
    response = receiver.post(beat(execution_id=given), headers=AUTH)
    assert (response.status_code, response.json()["message"]) == (
        400,
        "Invalid execution_id format",
    )


# -- slow and many connections ----------------------------------------------------


def test_slow_clients_are_cut_off_and_never_starve_the_others(
    serve: Callable[..., Serve],
) -> None:
    """Slowloris: 60 connections trickling a request a byte every 0.5 s
    (each read inside any idle timeout). Beats from a real client are
    stored meanwhile, and every slow connection is closed after
    --request-timeout."""
    receiver = serve("--request-timeout", "2", "--max-connections", "100")
    slow = [connect(receiver) for _ in range(60)]
    try:
        started = time.monotonic()
        closed: set[int] = set()
        while len(closed) < len(slow) and time.monotonic() - started < 20:
            for index, sock in enumerate(slow):
                if index in closed:
                    continue
                try:
                    sock.send(b"P")
                    readable, _, _ = select.select([sock], [], [], 0)
                    if readable and sock.recv(1024) == b"":
                        closed.add(index)
                except OSError:
                    closed.add(index)
            assert receiver.post(beat()).status_code == 200
            time.sleep(0.5)
        elapsed = time.monotonic() - started
    finally:
        for sock in slow:
            sock.close()
    assert len(closed) == len(slow)  # each was closed by the server
    assert elapsed < 15  # at --request-timeout 2 s, not after minutes
    assert receiver.rows() >= 3


def test_connections_beyond_the_cap_are_refused_until_slots_free(
    serve: Callable[..., Serve],
) -> None:
    receiver = serve("--request-timeout", "1", "--max-connections", "20")
    held = [connect(receiver) for _ in range(20)]
    extra = [connect(receiver) for _ in range(10)]
    try:
        refused = [closed_by_server(sock, within=0.5) for sock in extra]
        # Slots free when the deadline closes the idle ones: a beat gets in.
        wait_for(lambda: _posts(receiver), timeout=10, what="a free connection slot")
        expired = [closed_by_server(sock, within=5) for sock in held]
    finally:
        for sock in held + extra:
            sock.close()
    assert refused == [True] * 10  # over the cap: closed at once
    assert expired == [True] * 20  # under it: closed at the request deadline
    assert receiver.rows() == 1


def closed_by_server(sock: socket.socket, within: float) -> bool:
    readable, _, _ = select.select([sock], [], [], within)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:  # aborted
        return True


def _posts(receiver: Serve) -> bool:
    try:
        return receiver.post(beat()).status_code == 200
    except requests.ConnectionError:
        return False


# -- a locked database -------------------------------------------------------------


def test_a_locked_database_is_a_503_with_the_spec_body_and_the_reactor_stays_free(
    receiver: Serve,
) -> None:
    holder = sqlite3.connect(receiver.db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        response = receiver.post(beat(), headers=AUTH)
        blocked = time.monotonic() - started
        page = receiver.get("/")  # served meanwhile
        listing = receiver.get(EXECUTIONS, headers=AUTH)  # WAL: readers go on
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503
    reply = response.json()
    assert reply["status"] == "error"
    assert "database is locked" in reply["message"]
    assert response.headers["Retry-After"] == "1"
    assert blocked < 2  # not SQLite's default busy timeout of 5 s per request
    assert page.status_code == 200
    assert listing.status_code == 200
    assert receiver.post(beat(), headers=AUTH).status_code == 200  # and it recovers
    assert receiver.rows() == 1


# -- auth and the printed lines ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("Bearer T0ken-value", 200),
        ("bearer T0ken-value", 200),
        ("BEARER  T0ken-value", 200),
        ("Bearer t0ken-value", 401),
        ("Basic T0ken-value", 401),
        ("T0ken-value", 401),
    ],
)
def test_the_bearer_scheme_is_case_insensitive_and_the_token_is_not(
    receiver: Serve, value: str, code: int
) -> None:
    assert receiver.post(beat(), headers={"Authorization": value}).status_code == code


def test_print_escapes_what_a_client_sent(serve: Callable[..., Serve]) -> None:
    receiver = serve("--print")
    hostile = beat(execution_id=str(uuid.uuid4()))
    hostile["progress"]["current_stage"] = "ok\nheartbeat forged 1/1 URLs\x1b[2J\x07"
    assert receiver.post(hostile).status_code == 200
    assert receiver.process.stdout is not None
    lines = [receiver.process.stdout.readline() for _ in range(3)]  # its two-line banner first
    printed = lines[-1]
    assert printed.startswith("heartbeat "), lines
    assert printed.endswith("ok\\nheartbeat forged 1/1 URLs\\x1b[2J\\x07\n")
    assert "\x1b" not in printed


def test_print_words_a_beat_as_the_dashboard_does(serve: Callable[..., Serve]) -> None:
    """Dashes for counts the beat did not carry, a percentage to two places,
    whole-second latency (the timestamp has no finer ones), and a
    time-ordered id by its last digits."""
    receiver = serve("--print")
    body = beat(execution_id="01936b2e-1f00-7000-8000-00000000a1b2")
    body["progress"] = {"crawled_urls": 7, "percentage": 100 / 3, "current_stage": "crawling"}
    body["timestamp"] = int(time.time())
    assert receiver.post(body).status_code == 200
    assert receiver.process.stdout is not None
    printed = [receiver.process.stdout.readline() for _ in range(3)][-1]
    assert printed == (
        "heartbeat …0000a1b2 running   7/– URLs (33.33%), ok –, failed –, items –, errors –, "
        "latency < 1 s | crawling\n"
    )
