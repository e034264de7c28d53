"""Debian's headless Chromium driven for the dashboard's tests: what a page
lays out (a JavaScript expression evaluated through the DevTools protocol
over ``--remote-debugging-pipe``, no library between), and screenshots."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Flags every run takes: no network of its own, nothing kept.
QUIET = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
#: Seconds Chromium may take to answer one DevTools call.
REPLY_TIMEOUT = 60
#: A page has loaded when its script marked the body so.
LOADED = """new Promise(done => { const check = () => document.body &&
  document.body.dataset.loaded === "true" ? done(true) : setTimeout(check, 50); check(); })"""


def _chromium() -> str:
    assert CHROMIUM is not None, "Debian's chromium is not installed: run make system-deps"
    return CHROMIUM


def _high(fd: int) -> int:
    """``fd`` moved above 4: the shell's ``3<&n 4>&n`` must not overwrite it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class _Pipe:
    """DevTools messages: JSON, each ended by a NUL byte."""

    def __init__(self, to_chromium: int, from_chromium: int) -> None:
        self.to_chromium, self.from_chromium = to_chromium, from_chromium
        self.buffer = b""
        self.last_id = 0
        self.events: list[str] = []  # the methods of the events seen

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_chromium, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next(method)
            if reply.get("id") == self.last_id:
                assert "error" not in reply, reply
                result: dict[str, Any] = reply["result"]
                return result

    def wait_for(self, event: str) -> None:
        while event not in self.events:
            self._next(event)

    def _next(self, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.from_chromium], [], [], REPLY_TIMEOUT)
            assert ready, f"chromium: no {waiting_for} within {REPLY_TIMEOUT} s"
            chunk = os.read(self.from_chromium, 1 << 16)
            assert chunk, "chromium closed its DevTools pipe"
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        if "method" in message:
            self.events.append(message["method"])
        return message


def evaluate(url: str, expression: str, width: int = 1280, height: int = 800) -> Any:
    """The value of ``expression`` (JSON-able; a promise is awaited) on the
    page at ``url`` once its script has loaded it."""
    to_read, to_chromium = map(_high, os.pipe())
    from_chromium, to_write = map(_high, os.pipe())
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            # Bash (dash takes no fd over 9) puts the ends at fds 3 and 4, for Chromium.
            ["bash", "-c", f'exec "$@" 3<&{to_read} 4>&{to_write}', "bash",
             _chromium(), *QUIET, "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=(to_read, to_write),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_read)
        os.close(to_write)
        pipe = _Pipe(to_chromium, from_chromium)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)
            sid = session["sessionId"]
            pipe.call("Page.enable", sid)
            pipe.call("Page.navigate", sid, url=url)
            pipe.wait_for("Page.loadEventFired")
            for step in (LOADED, expression):
                result = pipe.call(
                    "Runtime.evaluate", sid, expression=step, awaitPromise=True, returnByValue=True
                )
                assert "exceptionDetails" not in result, result["exceptionDetails"]
            return result["result"].get("value")
        finally:
            with contextlib.suppress(OSError, AssertionError):
                pipe.call("Browser.close")
            os.close(to_chromium)
            os.close(from_chromium)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def screenshot(url: str, out: Path, width: int, height: int) -> None:
    """A PNG of the page's first ``width`` x ``height`` pixels."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [_chromium(), *QUIET, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--virtual-time-budget=4000", f"--screenshot={out}", url],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
