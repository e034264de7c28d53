"""Real HTTP servers on 127.0.0.1, port 0, each in a thread of its own.

:class:`HeartbeatServer` records every heartbeat it receives and behaves as a
test tells it (healthy, down, hanging, 5xx, 4xx, invalid JSON, ...).
:class:`SiteServer` serves the small site the counting tests crawl.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up on a slow reply are part of the tests


class _Running:
    server: _QuietServer

    def start(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.server = _QuietServer(("127.0.0.1", port), handler)
        self.server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Received:
    body: Any
    raw: bytes
    headers: dict[str, str]
    path: str
    at: float


@dataclass
class HeartbeatServer(_Running):
    """``behaviour`` is one of: ``ok``, ``status_error``, ``http:<code>``,
    ``hang``, ``slow:<seconds>``, ``invalid_json``, ``reset``, ``alternate``
    (ok, then 500, then ok, ...), ``huge:<bytes>``, ``endless[:<code>]`` (a
    chunked reply without end, 200 or that code), ``endless_head`` (headers
    without end), ``moved:<code>:<location>`` (a redirect),
    ``retry_after:<code>:<value>`` (that code with Retry-After once, then
    ok), ``first_final:<code>[:<retry-after>]`` (the
    final beat's first attempt gets that code), ``redirect:<location>``, ``no_content`` (204),
    ``echo_secret`` (a 401 quoting our Authorization), ``trickle_head:<s>``
    and ``trickle_body:<s>`` (a reply whose headers, or body, come one byte
    every <s> seconds), ``trickle_running:<s>`` (running beats trickle, the
    others are answered); each trickle with ``-close`` or ``-http10`` after its
    name answers ``Connection: close`` or HTTP/1.0. Change it at any time."""

    behaviour: str = "ok"
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    port_to_use: int = 0
    certificate: Path | None = None  # serve HTTPS with this PEM (cert + key)

    def __post_init__(self) -> None:
        self.start(_HeartbeatHandler, self.port_to_use)
        if self.certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certificate)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.certificate is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.body for r in self.received]

    def stop(self) -> None:
        self.release.set()
        super().stop()


@dataclass
class _Beat:
    """One request, as a behaviour sees it."""

    owner: HeartbeatServer
    body: Any  # the posted JSON, None when it is not JSON
    count: int  # requests received so far, this one included
    arg: str  # what follows the behaviour's name and ":" ("" when nothing does)
    style: str  # a trickle's "close" or "http10" (after "-" in its name), else ""


class _HeartbeatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner: HeartbeatServer = self.server.owner  # type: ignore[attr-defined]
        body, count = self._record(owner)
        behaviour = owner.behaviour
        name, _, arg = behaviour.partition(":")
        name, _, style = name.partition("-")
        answer = _BEHAVIOURS.get(name)
        if answer is None:  # pragma: no cover
            raise ValueError(behaviour)
        answer(self, _Beat(owner, body, count, arg, style))

    def _record(self, owner: HeartbeatServer) -> tuple[Any, int]:
        """Reads the request into ``owner.received``: its JSON body (None if
        not JSON) and how many requests have arrived, this one included."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with owner.lock:
            owner.received.append(
                Received(body, raw, dict(self.headers.items()), self.path, time.time())
            )
            return body, len(owner.received)

    def _ok(self, beat: _Beat) -> None:
        ok = {"status": "ok", "timestamp": int(time.time())}
        if isinstance(beat.body, dict):
            ok["execution_id"] = beat.body.get("execution_id")
        self._reply(200, json.dumps(ok).encode())

    def _status_error(self, beat: _Beat) -> None:
        self._reply(200, b'{"status": "error", "message": "Invalid execution_id format"}')

    def _invalid_json(self, beat: _Beat) -> None:
        self._reply(200, b"<html>not json</html>")

    def _http(self, beat: _Beat) -> None:
        self._error(int(beat.arg))

    def _error(self, code: int) -> None:
        self._reply(code, json.dumps({"status": "error", "message": f"test {code}"}).encode())

    def _alternate(self, beat: _Beat) -> None:  # fails every other request
        if beat.count % 2:
            self._ok(beat)
        else:
            self._error(500)

    def _hang(self, beat: _Beat) -> None:
        beat.owner.release.wait(120)

    def _slow(self, beat: _Beat) -> None:
        time.sleep(float(beat.arg))
        self._ok(beat)

    def _trickle_head(self, beat: _Beat) -> None:
        self._trickle(beat, body=False)

    def _trickle_body(self, beat: _Beat) -> None:
        self._trickle(beat, body=True)

    def _trickle_running(self, beat: _Beat) -> None:  # running beats trickle, others are ok
        if isinstance(beat.body, dict) and beat.body.get("status") == "running":
            self._trickle(beat, body=True)
        else:
            self._ok(beat)

    def _trickle(self, beat: _Beat, body: bool) -> None:
        """A reply whose headers (or, with ``body``, body) come one byte every
        ``beat.arg`` seconds, for a minute at most (or until stop()): each read
        is quick, the reply never completes."""
        http10 = beat.style == "http10"
        try:
            self.wfile.write(b"HTTP/1.0 200 OK\r\n" if http10 else b"HTTP/1.1 200 OK\r\n")
            if beat.style == "close":
                self.wfile.write(b"Connection: close\r\n")
            if body:
                self.wfile.write(b"Content-Type: application/json\r\n")
                # HTTP/1.0: a body that ends when the server closes
                self.wfile.write(b"\r\n" if http10 else b"Content-Length: 1000\r\n\r\n")
            else:
                self.wfile.write(b"X-Slow: ")
            self.wfile.flush()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not beat.owner.release.wait(float(beat.arg)):
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _reset(self, beat: _Beat) -> None:
        # SO_LINGER on with a 0 s timeout: closing the socket sends RST, not FIN.
        self.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        self.close_connection = True

    def _huge(self, beat: _Beat) -> None:  # a body of this many bytes
        self._reply(200, b"x" * int(beat.arg))

    def _endless(self, beat: _Beat) -> None:  # a chunked reply that never ends
        self.send_response(int(beat.arg or 200))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(10_000):  # bounded: ~650 MB at most, never read that far
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass

    def _endless_head(self, beat: _Beat) -> None:  # a status line, then headers without end
        line = b"X-More: " + b"x" * 1000 + b"\r\n"
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(1_000_000):  # bounded: ~1 GB at most, never read that far
                self.wfile.write(line)
        except OSError:
            pass
        self.close_connection = True

    def _retry_after(self, beat: _Beat) -> None:  # that code with Retry-After, then ok
        code, after = beat.arg.split(":")
        if beat.count == 1:
            self._reply(
                int(code), b'{"status": "error", "message": "slow down"}', {"Retry-After": after}
            )
        else:
            self._ok(beat)

    def _first_final(self, beat: _Beat) -> None:  # the final beat's 1st attempt fails
        code, _, after = beat.arg.partition(":")
        finals = [
            r
            for r in beat.owner.received
            if isinstance(r.body, dict) and r.body.get("status") in ("completed", "failed")
        ]
        if len(finals) == 1 and finals[0].body is beat.body:
            self._reply(
                int(code),
                b'{"status": "error", "message": "busy"}',
                {"Retry-After": after} if after else None,
            )
        else:
            self._ok(beat)

    def _redirect(self, beat: _Beat) -> None:
        self._reply(301, b"", {"Location": beat.arg})

    def _moved(self, beat: _Beat) -> None:  # moved:<code>:<location>
        code, _, location = beat.arg.partition(":")
        self._reply(int(code), b"", {"Location": location})

    def _no_content(self, beat: _Beat) -> None:
        self.send_response(204)
        self.end_headers()

    def _echo_secret(self, beat: _Beat) -> None:  # quotes our Authorization header back
        given = self.headers.get("Authorization", "")
        token = given.split(None, 1)[-1]
        message = f"token '{token}' has expired (you sent {given!r})"
        self._reply(401, json.dumps({"status": "error", "message": message}).encode())

    def _reply(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


#: HeartbeatServer's behaviours by name: a behaviour's text up to its first
#: ":" (and, for the trickles, up to "-close" or "-http10").
_BEHAVIOURS: dict[str, Callable[[_HeartbeatHandler, _Beat], None]] = {
    "ok": _HeartbeatHandler._ok,
    "status_error": _HeartbeatHandler._status_error,
    "invalid_json": _HeartbeatHandler._invalid_json,
    "http": _HeartbeatHandler._http,
    "alternate": _HeartbeatHandler._alternate,
    "hang": _HeartbeatHandler._hang,
    "slow": _HeartbeatHandler._slow,
    "trickle_head": _HeartbeatHandler._trickle_head,
    "trickle_body": _HeartbeatHandler._trickle_body,
    "trickle_running": _HeartbeatHandler._trickle_running,
    "reset": _HeartbeatHandler._reset,
    "huge": _HeartbeatHandler._huge,
    "endless": _HeartbeatHandler._endless,
    "endless_head": _HeartbeatHandler._endless_head,
    "moved": _HeartbeatHandler._moved,
    "retry_after": _HeartbeatHandler._retry_after,
    "first_final": _HeartbeatHandler._first_final,
    "redirect": _HeartbeatHandler._redirect,
    "no_content": _HeartbeatHandler._no_content,
    "echo_secret": _HeartbeatHandler._echo_secret,
}


Page = Callable[["_SiteHandler", int], None]


@dataclass
class SiteServer(_Running):
    """Serves ``pages``: path -> handler(request_handler, hit_number)."""

    pages: dict[str, Page] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.start(_SiteHandler)


class _SiteHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner: SiteServer = self.server.owner  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.hits[path] = owner.hits.get(path, 0) + 1
            hit = owner.hits[path]
        page = owner.pages.get(path)
        if page is None:
            self.respond(404, "not found")
        else:
            page(self, hit)

    def respond(self, code: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        payload = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def html(*links: str) -> Page:
    body = "".join(f'<a href="{link}">{link}</a>\n' for link in links)
    return lambda h, hit: h.respond(200, f"<html><body>{body}</body></html>")


def redirect(code: int, location: str) -> Page:
    return lambda h, hit: h.respond(code, "", {"Location": location})


def status(code: int) -> Page:
    return lambda h, hit: h.respond(code, f"status {code}")


def free_port() -> int:
    """A port nothing listens on (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1: (the server's PEM with
    certificate and key, the certificate alone to use as a CA bundle)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca = directory / "ca.pem"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server = directory / "server.pem"
    server.write_bytes(
        ca.read_bytes()
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return server, ca
