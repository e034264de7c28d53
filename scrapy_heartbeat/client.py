"""The synchronous heartbeat client: the spec's ``HeartbeatClient``.

Used as is from scripts and the CLI, and from the extension's worker thread,
so there is one HTTP code path. :meth:`HeartbeatClient.send` never raises for
anything the network or the server does; it returns a :class:`HeartbeatResult`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import requests

from scrapy_heartbeat.payload import heartbeat_body
from scrapy_heartbeat.settings import HEARTBEAT_PATH, check_execution_id, redact_url

if TYPE_CHECKING:
    from scrapy_heartbeat.payload import Progress

Outcome = Literal["ok", "rejected", "failed"]

USER_AGENT = "scrapy-heartbeat"
_MAX_MESSAGE = 300


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

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class HeartbeatClient:
    """Posts heartbeats to ``{api_base_url}/api/v1/monitoring/heartbeat``."""

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
    ) -> None:
        self.api_base_url = api_base_url.rstrip("/")
        self.execution_id = check_execution_id(execution_id, "execution_id")
        self.container_id = container_id
        self.heartbeat_url = f"{self.api_base_url}{HEARTBEAT_PATH}"
        self.timeout = timeout
        self.verify = verify
        self._secrets = [v for v in (headers or {}).values() if v]
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, **(headers or {})})

    def send(
        self,
        status: str | None = "running",
        progress: Progress | dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        timestamp: int | None = None,
    ) -> HeartbeatResult:
        """Send one heartbeat; ``timestamp`` defaults to now, taken just before
        sending so the server's latency figure is true."""
        body = heartbeat_body(self.execution_id, self.container_id, status, progress, timestamp)
        wait = self.timeout if timeout is None else timeout
        try:
            response = self.session.post(
                self.heartbeat_url,
                data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                headers={"Content-Type": "application/json"},
                timeout=wait,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            return HeartbeatResult(
                "failed",
                self._scrub(describe_exception(exc, wait)),
                retryable=not isinstance(exc, requests.exceptions.ReadTimeout),
            )
        return self._interpret(response)

    def _interpret(self, response: requests.Response) -> HeartbeatResult:
        code = response.status_code
        try:
            reply = response.json()
        except ValueError:
            reply = None
        message = ""
        if isinstance(reply, dict) and isinstance(reply.get("message"), str):
            message = reply["message"]
        if code >= 500:
            detail = message or f"HTTP {code} from the server"
            return HeartbeatResult("failed", self._scrub(detail), code, retryable=True)
        if code >= 400:
            detail = message or f"HTTP {code}"
            return HeartbeatResult("rejected", self._scrub(detail), code)
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

    def _scrub(self, text: str) -> str:
        """Cut ``text`` to one short line holding none of our secrets."""
        line = " ".join(text.split())[:_MAX_MESSAGE]
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return redact_url(line) if "@" in line else line

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HeartbeatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
        return f"connect timeout after {timeout:g}s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no reply within {timeout:g}s"
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
