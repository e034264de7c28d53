"""A request's deadline holds whatever the server does: each way an HTTP
exchange can wait, trickled a byte at a time, is cut at the client's
timeout, through the one HTTP path the extension and ``send`` share."""

from __future__ import annotations

import gc
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scrapy_heartbeat import HeartbeatClient, HeartbeatResult
from tests.conftest import EXECUTION_ID
from tests.servers import HeartbeatServer, self_signed_certificate
from tests.trickle import HEADS, Blackhole, TrickleServer, timed

TIMEOUT = 1.0


@pytest.fixture(params=sorted(HEADS))
def trickle(request: pytest.FixtureRequest) -> Iterator[TrickleServer]:
    server = TrickleServer(request.param, period=0.2)
    yield server
    server.stop()


def test_the_whole_request_is_cut_at_its_timeout(trickle: TrickleServer) -> None:
    url, proxy = trickle.url, None
    if trickle.kind == "connect":  # the trickling server is the proxy
        url, proxy = "https://127.0.0.1:9", trickle.url
    with HeartbeatClient(
        url, EXECUTION_ID, "box", timeout=TIMEOUT, verify=False, proxy=proxy
    ) as client:
        for _ in range(2):  # and again, on whatever the first cut left behind
            began = time.monotonic()
            result = client.send("running", {})
            took = time.monotonic() - began
            assert result.outcome == "failed", result
            assert "no complete reply within 1s" in result.message
            assert took < TIMEOUT + 0.5, (trickle.kind, took)
    assert trickle.connections >= 1


class _Resolver:
    """The system's resolver for two made-up names, as a stalled or a
    many-address DNS answer would leave it; every other name as it is.
    getaddrinfo is the one thing a test on 127.0.0.1 cannot make slow."""

    def __init__(self, addresses: list[int], stall: float) -> None:
        self.real = socket.getaddrinfo
        self.addresses, self.stall = addresses, stall

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        numeric = len(args) >= 4 and args[3] & socket.AI_NUMERICHOST
        if host == "stalled.test" and not numeric:
            time.sleep(self.stall)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "many.test" and not numeric:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))
                for p in self.addresses
            ]
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def blackholes() -> Iterator[list[Blackhole]]:
    holes = [Blackhole() for _ in range(3)]
    yield holes
    for hole in holes:
        hole.close()


@pytest.mark.parametrize("host", ["stalled.test", "many.test"])
def test_resolving_and_connecting_end_at_the_timeout(
    monkeypatch: pytest.MonkeyPatch, blackholes: list[Blackhole], host: str
) -> None:
    """A resolver that does not answer, and a name with three addresses
    that drop every packet (urllib3 gives each the whole timeout): the
    request still ends at its timeout."""
    monkeypatch.setattr(socket, "getaddrinfo", _Resolver([h.port for h in blackholes], 4.0))
    port = blackholes[0].port
    with HeartbeatClient(f"http://{host}:{port}", EXECUTION_ID, "box", timeout=TIMEOUT) as client:
        result, took = timed(lambda: client.send("running", {}))
    assert isinstance(result, HeartbeatResult)
    assert result.outcome == "failed", result
    # Whichever ends it first: the connect's own deadline or the watchdog.
    own = "host name not resolved within" if host == "stalled.test" else "connect timeout after"
    assert result.message in (f"{own} 1s", "no complete reply within 1s"), result
    assert took < TIMEOUT + 0.5, took


def test_a_cut_ends_a_connect_under_way(blackholes: list[Blackhole]) -> None:
    """The final beat supersedes a periodic beat still connecting."""
    url = f"http://127.0.0.1:{blackholes[0].port}"
    with HeartbeatClient(url, EXECUTION_ID, "box", timeout=8) as client:
        threading.Timer(0.3, client.cut_off, ("superseded",)).start()
        result, took = timed(lambda: client.send("running", {}))
    assert isinstance(result, HeartbeatResult)
    assert (result.outcome, result.message) == ("failed", "superseded"), result
    assert took < 2, took


def test_a_name_that_does_not_resolve_says_so() -> None:
    with HeartbeatClient("http://no-such-host.invalid", EXECUTION_ID, "box", timeout=3) as client:
        result = client.send("running", {})
    assert result.outcome == "failed"
    assert result.message in ("host name not found", "connection failed"), result


def test_an_address_that_drops_packets_leaves_time_for_the_next(
    monkeypatch: pytest.MonkeyPatch, blackholes: list[Blackhole], heartbeat_server: HeartbeatServer
) -> None:
    """A dual-stack receiver whose first address drops every packet."""
    ports = [blackholes[0].port, heartbeat_server.port]
    monkeypatch.setattr(socket, "getaddrinfo", _Resolver(ports, 4.0))
    url = f"http://many.test:{heartbeat_server.port}"
    with HeartbeatClient(url, EXECUTION_ID, "box", timeout=3) as client:
        result = client.send("running", {})
    assert result.outcome == "ok", result
    assert len(heartbeat_server.bodies()) == 1


def test_a_stalled_resolver_holds_one_thread_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beats every few seconds against a resolver that never answers: the
    lookups wait on the one under way, not on a thread each."""
    monkeypatch.setattr(socket, "getaddrinfo", _Resolver([], 3.0))
    with HeartbeatClient("http://stalled.test:9", EXECUTION_ID, "box", timeout=0.3) as client:
        for _ in range(5):
            assert client.send("running", {}).outcome == "failed"
        names = [t.name for t in threading.enumerate()]
    assert names.count("scrapy-heartbeat-resolve") == 1, names


def test_a_cut_before_the_tls_handshake_leaves_no_socket_open(tmp_path: Path) -> None:
    """Cut at every moment of a TLS connection's making: no socket is left
    for the garbage collector to close (CPython's SSLSocket leaves one open
    when it finds the connection gone before its handshake)."""
    server = HeartbeatServer(certificate=self_signed_certificate(tmp_path)[0])
    timeouts = [0.002, 0.005, 0.01, 0.02, 0.05] * 40
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            for timeout in timeouts:
                with HeartbeatClient(server.url, EXECUTION_ID, "box", timeout=timeout) as client:
                    assert client.send("running", {}).outcome == "failed"
                gc.collect()
    finally:
        server.stop()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
