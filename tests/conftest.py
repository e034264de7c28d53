from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import scrapy_heartbeat
from tests.servers import HeartbeatServer, SiteServer

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

EXECUTION_ID = "550e8400-e29b-41d4-a716-446655440000"


def pytest_report_header() -> str:
    """Which copy of the package the suite tests: the source tree's under
    ``make test`` (an editable install), the installed wheel's under ``make
    test-dist``, which reads this line to make sure of it."""
    package = Path(scrapy_heartbeat.__file__).resolve().parent
    return f"scrapy_heartbeat {scrapy_heartbeat.__version__} imported from {package}"


@pytest.fixture
def heartbeat_server() -> Iterator[HeartbeatServer]:
    server = HeartbeatServer()
    yield server
    server.stop()


@pytest.fixture
def pages_site() -> Iterator[SiteServer]:
    """``/page/<n>`` for any n, each answered after ``delay`` seconds."""
    site = SiteServer()

    def page(handler, hit):  # type: ignore[no-untyped-def]
        time.sleep(site.delay)  # type: ignore[attr-defined]
        handler.respond(200, "<html><body>page</body></html>")

    site.delay = 0.0  # type: ignore[attr-defined]
    site.pages = _AnyPage(page)  # type: ignore[assignment]
    yield site
    site.stop()


class _AnyPage(dict):  # type: ignore[type-arg]
    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self._page = page

    def get(self, path, default=None):  # type: ignore[no-untyped-def]
        return self._page if path.startswith("/page/") else default


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
