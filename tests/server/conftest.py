"""The receiver's fixtures: ``serve`` (the one way the tests start
``scrapy-heartbeat serve``), and its databases on each backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.server.serving import Serve

if TYPE_CHECKING:
    from tests.server.postgres_server import PostgresServer


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """``serve(*args, db=None)`` starts ``scrapy-heartbeat serve`` with
    ``args`` on ``db`` (by default a SQLite file of the test's own; more
    than one may share a database); each is stopped after the test."""
    started: list[Serve] = []

    def start(*args: str, db: str | None = None) -> Serve:
        started.append(Serve.start(tmp_path, *args, db=db))
        return started[-1]

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test process; tests take a database each."""
    from tests.server.postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The receiver's database on each backend, for the tests that must hold
    on both: a SQLite file, or a new database on Debian's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "hb.sqlite3")
    return str(request.getfixturevalue("postgres_server").database())
