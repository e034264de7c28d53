"""The reference receiver: the platform side of the heartbeat spec, on
Twisted's web server.

``POST /api/v1/monitoring/heartbeat`` validates and stores a heartbeat;
``GET /api/v1/monitoring/executions[?status=]`` and
``GET /api/v1/monitoring/executions/<execution_id>`` read them back; ``GET /``
is a dashboard. Bad input gets a 4xx with the spec's error body; no input gets
a 500.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from twisted.web import resource, server

from scrapy_heartbeat._compat import twisted_reactor
from scrapy_heartbeat.payload import STATUSES, is_uuid, validate_body
from scrapy_heartbeat.settings import HEARTBEAT_PATH
from scrapy_heartbeat.store import HeartbeatStore

if TYPE_CHECKING:
    from twisted.web.server import Request

logger = logging.getLogger(__name__)

EXECUTIONS_PATH = "/api/v1/monitoring/executions"
MAX_BODY = 64 * 1024
OnHeartbeat = Callable[[dict[str, Any], float], None]


class HeartbeatReceiver(resource.Resource):
    isLeaf = True

    def __init__(
        self,
        store: HeartbeatStore,
        token: str | None = None,
        max_body: int = MAX_BODY,
        on_heartbeat: OnHeartbeat | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.token = token
        self.max_body = max_body
        self.on_heartbeat = on_heartbeat
        self._dashboard = (
            resources.files("scrapy_heartbeat").joinpath("dashboard.html").read_bytes()
        )

    def render(self, request: Request) -> bytes:
        try:
            return self._route(request)
        except Exception:  # never a 500 page with a traceback
            logger.exception("receiver: unexpected error")
            return _json(request, 503, {"status": "error", "message": "try again later"})

    def _route(self, request: Request) -> bytes:
        path = (request.path or b"/").decode("utf-8", "replace").rstrip("/") or "/"
        method = request.method.decode("ascii", "replace") if request.method else ""
        if path == "/":
            return self._only(request, method, "GET") or self._page(request)
        if not (path == HEARTBEAT_PATH or path.startswith(EXECUTIONS_PATH)):
            return _error(request, 404, f"no such path: {path[:100]}")
        if self.token is not None and not self._authorized(request):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="heartbeat"')
            return _error(request, 401, "missing or wrong Authorization: Bearer token")
        if path == HEARTBEAT_PATH:
            return self._only(request, method, "POST") or self._heartbeat(request)
        denied = self._only(request, method, "GET")
        if denied:
            return denied
        if path == EXECUTIONS_PATH:
            return self._executions(request)
        execution_id = path[len(EXECUTIONS_PATH) + 1 :]
        if "/" in execution_id or not path.startswith(EXECUTIONS_PATH + "/"):
            return _error(request, 404, f"no such path: {path[:100]}")
        return self._execution(request, execution_id)

    def _only(self, request: Request, method: str, allowed: str) -> bytes | None:
        if method == allowed or (allowed == "GET" and method == "HEAD"):
            return None
        request.setHeader(b"Allow", allowed.encode())
        return _error(request, 405, f"method {method[:10]} not allowed; use {allowed}")

    def _authorized(self, request: Request) -> bool:
        given = request.getHeader(b"authorization") or b""
        expected = b"Bearer " + (self.token or "").encode()
        return hmac.compare_digest(given, expected)

    def _heartbeat(self, request: Request) -> bytes:
        content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return _error(request, 415, "Content-Type must be application/json")
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return _error(request, 413, f"body larger than {self.max_body} bytes")
        assert request.content is not None
        raw = request.content.read(self.max_body + 1)
        if len(raw) > self.max_body:
            return _error(request, 413, f"body larger than {self.max_body} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return _error(request, 400, "body is not valid JSON")
        problem = validate_body(body)
        if problem is not None:
            return _error(request, 400, problem)
        now = time.time()
        latency = self.store.add(body, now)
        if self.on_heartbeat is not None:
            self.on_heartbeat(body, latency)
        return _json(
            request,
            200,
            {"status": "ok", "timestamp": int(now), "execution_id": body["execution_id"]},
        )

    def _executions(self, request: Request) -> bytes:
        raw = (request.args or {}).get(b"status", [None])[0]
        status = raw.decode("utf-8", "replace") if raw else None
        if status is not None and status not in (*STATUSES, "stale", "active"):
            allowed = ", ".join((*STATUSES, "stale", "active"))
            return _error(request, 400, f"query 'status' must be one of {allowed}")
        return _json(request, 200, {"executions": self.store.executions(status)})

    def _execution(self, request: Request, execution_id: str) -> bytes:
        if not is_uuid(execution_id):
            return _error(request, 400, "Invalid execution_id format")
        found = self.store.execution(execution_id)
        if found is None:
            return _error(request, 404, "no heartbeat for this execution_id")
        return _json(
            request,
            200,
            {
                **found,
                "containers": self.store.containers(execution_id),
                "history": self.store.history(execution_id),
            },
        )

    def _page(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(
            b"Content-Security-Policy",
            b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        )
        return self._dashboard


def _json(request: Request, code: int, payload: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _error(request: Request, code: int, message: str) -> bytes:
    return _json(request, code, {"status": "error", "message": message})


def listen(receiver: HeartbeatReceiver, host: str = "127.0.0.1", port: int = 8000) -> Any:
    """Start serving on the installed reactor; returns the listening port."""
    site = server.Site(receiver)
    site.noisy = False
    site.displayTracebacks = False
    return twisted_reactor().listenTCP(port, site, interface=host)
