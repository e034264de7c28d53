"""The fault matrix: every way the API can misbehave, each crawled beside a
healthy run of the same crawl in the same test.

For each fault: identical items, finish reason and exit code; stats that
record the failures; a bounded log (no traceback, the first failure in full
then summaries); ``spider_closed`` done within ``HEARTBEAT_CLOSE_TIMEOUT``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.crawl import CrawlResult
from tests.servers import HeartbeatServer, SiteServer, free_port, self_signed_certificate
from tests.test_sending import crawl_pages

CLOSE_TIMEOUT = 2.0
FAULT_SETTINGS: dict[str, Any] = {
    "HEARTBEAT_INTERVAL": 0.2,
    "HEARTBEAT_MIN_INTERVAL": 0.1,
    "HEARTBEAT_TIMEOUT": 0.5,
    "HEARTBEAT_CLOSE_TIMEOUT": CLOSE_TIMEOUT,
    "HEARTBEAT_RETRY_DELAY": 0.1,
}
PAGES = 30


def crawl(site: SiteServer, api_url: str, **settings: Any) -> CrawlResult:
    return crawl_pages(site, api_url, PAGES, **{**FAULT_SETTINGS, **settings})


@dataclass
class Fault:
    behaviour: str | None  # None: nothing listens on the port
    stats: tuple[str, ...]  # stats that must record failures
    delivered: bool = False  # whether the final beat gets through anyway
    tls: bool = False
    comes_back: bool = False  # down at the end, back within the close timeout


FAULTS = {
    "refused": Fault(None, ("heartbeat/failed",)),
    "never_answers": Fault("hang", ("heartbeat/failed",)),
    "answers_too_late": Fault("slow:1.5", ("heartbeat/failed",)),
    "http_500": Fault("http:500", ("heartbeat/failed",)),
    "http_503": Fault("http:503", ("heartbeat/failed",)),
    "http_400": Fault("http:400", ("heartbeat/rejected",)),
    "http_401": Fault("http:401", ("heartbeat/rejected",)),
    "http_404": Fault("http:404", ("heartbeat/rejected",)),
    "invalid_json": Fault("invalid_json", ("heartbeat/failed",)),
    "status_error": Fault("status_error", ("heartbeat/rejected",)),
    "reset_mid_reply": Fault("reset", ("heartbeat/failed",)),
    "untrusted_tls": Fault("ok", ("heartbeat/failed",), tls=True),
    "fails_every_other": Fault("alternate", ("heartbeat/failed", "heartbeat/ok"), delivered=True),
    "down_then_back": Fault(None, ("heartbeat/failed",), delivered=True, comes_back=True),
}


def heartbeat_lines(result: CrawlResult, levels: str = "WARNING|ERROR") -> list[str]:
    pattern = re.compile(rf"\[scrapy_heartbeat[.\w]*\] ({levels}):")
    return [line for line in result.log.splitlines() if pattern.search(line)]


def run_fault(
    fault: Fault, site: SiteServer, tmp_path: Path
) -> tuple[CrawlResult, HeartbeatServer | None]:
    if fault.comes_back:
        port = free_port()
        started: list[HeartbeatServer] = []

        def come_back(process_started: float = time.monotonic()) -> None:
            # back 1 s after the crawl's "Closing spider": within CLOSE_TIMEOUT
            while time.monotonic() - process_started < 60:
                if closing.is_set():
                    time.sleep(1.0)
                    started.append(HeartbeatServer(port_to_use=port))
                    return
                time.sleep(0.02)

        closing = threading.Event()
        watcher = threading.Thread(target=come_back, daemon=True)
        watcher.start()
        result = _crawl_watching_close(site, f"http://127.0.0.1:{port}", closing)
        watcher.join(5)
        return result, (started[0] if started else None)
    if fault.behaviour is None:
        return crawl(site, f"http://127.0.0.1:{free_port()}"), None
    certificate = self_signed_certificate(tmp_path)[0] if fault.tls else None
    server = HeartbeatServer(behaviour=fault.behaviour, certificate=certificate)
    try:
        return crawl(site, server.url), server
    finally:
        server.stop()


def _crawl_watching_close(site: SiteServer, api_url: str, closing: threading.Event) -> CrawlResult:
    """Crawl; ``closing`` is set when the last page has been served."""
    original: Callable[..., None] = site.pages.get  # type: ignore[assignment]

    def page(path: str, default: Any = None) -> Any:
        found = original(path, default)
        if found is not None and path == f"/page/{PAGES - 1}":
            closing.set()
        return found

    site.pages.get = page  # type: ignore[method-assign]
    try:
        return crawl(site, api_url, HEARTBEAT_RETRY_TIMES=10, HEARTBEAT_RETRY_DELAY=0.2)
    finally:
        site.pages.get = original  # type: ignore[method-assign]


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_leaves_the_crawl_unchanged(
    name: str, pages_site: SiteServer, heartbeat_server: HeartbeatServer, tmp_path: Path
) -> None:
    fault = FAULTS[name]
    pages_site.delay = 0.03  # type: ignore[attr-defined]
    healthy = crawl(pages_site, heartbeat_server.url)
    result, server = run_fault(fault, pages_site, tmp_path)

    # the crawl itself: identical
    assert result.returncode == healthy.returncode == 0
    assert sorted(i["n"] for i in result.items) == sorted(i["n"] for i in healthy.items)
    assert len(result.items) == PAGES
    assert result.reason == healthy.reason == "finished"
    assert {k: v for k, v in result.stats.items() if k.startswith("item_scraped")} == {
        k: v for k, v in healthy.stats.items() if k.startswith("item_scraped")
    }

    # the failures are on record
    assert healthy.stats["heartbeat/final_delivered"] is True
    assert result.stats["heartbeat/final_delivered"] is fault.delivered
    for stat in fault.stats:
        assert result.stats.get(stat, 0) >= 1, stat

    # the log stays bounded: first failure in full, one summary per 10 more
    failures = result.stats.get("heartbeat/failed", 0) + result.stats.get("heartbeat/rejected", 0)
    problems = heartbeat_lines(result)
    assert len(problems) <= 2 + 2 * (failures // 10), "\n".join(problems)
    assert len(heartbeat_lines(result, "INFO|WARNING|ERROR")) <= 2 * len(problems) + 3
    assert "Traceback" not in result.log

    # spider_closed waited no longer than the close timeout (plus process slack)
    assert result.close_seconds() <= CLOSE_TIMEOUT + 1.0

    if fault.comes_back:
        assert server is not None
        finals = [b for b in server.bodies() if b["status"] == "completed"]
        assert finals, "the final beat did not reach the API once it came back"
        assert finals[-1]["progress"]["crawled_urls"] == PAGES
    if fault.tls:
        assert "TLS certificate verify failed (trust the server's CA with HEARTBEAT_TLS_VERIFY" in (
            result.log
        )


def test_tls_with_a_ca_bundle_works(pages_site: SiteServer, tmp_path: Path) -> None:
    server_pem, ca = self_signed_certificate(tmp_path)
    server = HeartbeatServer(certificate=server_pem)
    try:
        result = crawl(pages_site, server.url, HEARTBEAT_TLS_VERIFY=str(ca))
    finally:
        server.stop()
    assert result.stats["heartbeat/final_delivered"] is True
    assert result.stats.get("heartbeat/failed", 0) == 0
    assert server.bodies()[-1]["progress"]["crawled_urls"] == PAGES
