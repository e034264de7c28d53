"""An operator's mistakes in ``serve``'s options: each is refused at start,
in one line naming the option and the fix, with exit code 2 and no
traceback, by a real ``scrapy-heartbeat serve`` process."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``serve`` with ``args``, expected to refuse them at once."""
    db = ("--db", str(tmp_path / "hb.sqlite3"))
    return subprocess.run(
        [sys.executable, "-m", "scrapy_heartbeat", "serve", "--port", "0", *db, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )


def assert_refused(done: subprocess.CompletedProcess[str], option: str, *said: str) -> None:
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert option in lines[0], lines
    assert "Traceback" not in done.stderr
    for text in said:
        assert text in lines[0], lines
    assert "Receiving heartbeats" not in done.stdout  # it never started


@pytest.mark.parametrize(
    ("option", "value", "fix"),
    [
        ("--request-timeout", "-5", "from 0.1 to 3600"),
        ("--request-timeout", "0", "from 0.1 to 3600"),
        ("--request-timeout", "nan", "from 0.1 to 3600"),
        ("--request-timeout", "inf", "from 0.1 to 3600"),
        ("--request-timeout", "soon", "from 0.1 to 3600"),
        ("--max-body", "-1", "from 1024 to 1048576"),
        ("--max-body", "0", "from 1024 to 1048576"),
        ("--max-body", str(2**40), "from 1024 to 1048576"),
        ("--max-connections", "0", "from 1 to 65536"),
        ("--max-connections", "-3", "from 1 to 65536"),
        ("--port", "99999", "from 0 to 65535"),
        ("--port", "-1", "from 0 to 65535"),
        ("--keep-days", "-1", "from 0 to 36500"),
        ("--keep-days", "nan", "from 0 to 36500"),
        ("--check-every", "0", "from 0.1 to 3600"),
        ("--check-every", "1e9", "from 0.1 to 3600"),
        ("--lost-after", "0", "from 0.1 to 2592000"),
        ("--lost-after", "inf", "from 0.1 to 2592000"),
        ("--stall-after", "-600", "from 0.1 to 2592000"),
        ("--alert-retries", "-1", "from 0 to 10"),
        ("--alert-timeout", "0", "from 0.1 to 300"),
        ("--alert-lease", "inf", "from 0.2 to 86400"),
        ("--alert-backoff", "-1", "from 0.01 to 3600"),
        ("--alert-max-age", "nan", "from 1 to 2592000"),
        ("--alert-concurrency", "0", "from 1 to 64"),
    ],
)
def test_a_number_out_of_range_is_refused(
    tmp_path: Path, option: str, value: str, fix: str
) -> None:
    assert_refused(serve(tmp_path, option, value), option, fix)
    assert not (tmp_path / "hb.sqlite3").exists()  # refused before anything was made


@pytest.mark.parametrize(
    "url",
    [
        "not-a-url",
        "http://[::1",
        "ftp://hooks.example.com/x",
        "http:///path",
        "http://h:99x/",
        "http://127.0.0.1:9/p\u00e4th?x=\u00fc",
        "http://b\u00fccher.example/hook",
    ],
)
def test_a_webhook_that_is_not_an_http_url_is_refused(tmp_path: Path, url: str) -> None:
    assert_refused(serve(tmp_path, "--webhook", url), "--webhook", "http")


def test_a_refused_webhook_never_shows_its_credentials(tmp_path: Path) -> None:
    done = serve(tmp_path, "--webhook", "http://user:S3CR3T@[::1/hook")
    assert_refused(done, "--webhook")
    assert "S3CR3T" not in done.stderr


def test_a_db_in_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    done = serve(tmp_path, "--db", str(tmp_path / "missing" / "hb.sqlite3"))
    assert_refused(done, "--db", "does not exist", "create it")


def test_a_db_where_nothing_can_be_written(tmp_path: Path) -> None:
    """/proc refuses new files even to root, whom permissions do not stop."""
    assert_refused(serve(tmp_path, "--db", "/proc/hb.sqlite3"), "--db", "cannot be opened")


def test_a_db_that_is_a_directory(tmp_path: Path) -> None:
    assert_refused(serve(tmp_path, "--db", str(tmp_path)), "--db", "cannot be opened")


def test_a_db_that_is_not_a_sqlite_database(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not a database, but a file someone named by mistake\n" * 100)
    done = serve(tmp_path, "--db", str(other))
    assert_refused(done, "--db", "is not a SQLite database")
    assert other.read_bytes().startswith(b"not a database")  # left as it was


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def test_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    done = serve(tmp_path, "--port", str(taken_port))
    assert_refused(done, f"--port {taken_port}", "already in use", "another port")


@pytest.mark.parametrize("host", ["not-a-host.invalid", "10.255.255.1", "256.1.1.1"])
def test_a_host_that_cannot_be_bound(tmp_path: Path, host: str) -> None:
    assert_refused(serve(tmp_path, "--host", host), f"--host {host}", "127.0.0.1")


def test_values_at_the_bounds_start(tmp_path: Path) -> None:
    """The documented bounds are themselves accepted: the range is not off
    by one (the process starts; it is stopped at once)."""
    args = [
        sys.executable, "-m", "scrapy_heartbeat", "serve", "--port", "0",
        "--db", str(tmp_path / "hb.sqlite3"), "--max-body", "1024",
        "--max-connections", "1", "--request-timeout", "0.1", "--keep-days", "0",
        "--check-every", "3600", "--lost-after", "2592000", "--alert-retries", "10",
        "--webhook", "https://hooks.example.com/x",
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert first.startswith("Receiving heartbeats at "), err


@pytest.mark.parametrize("where", ["missing/port", "."], ids=["no directory", "a directory"])
def test_a_port_file_that_cannot_be_written(tmp_path: Path, where: str) -> None:
    done = serve(tmp_path, "--port-file", str(tmp_path / where))
    assert_refused(done, "--port-file", "cannot write it")
    assert "Receiving heartbeats" not in done.stdout


def test_a_postgres_url_that_cannot_be_parsed(tmp_path: Path) -> None:
    done = serve(tmp_path, "--db", "postgresql://u:p%zz@127.0.0.1:1/x")
    assert_refused(done, "--db", "cannot be parsed")
    assert "%zz" not in done.stderr


@pytest.mark.parametrize("states", [",", " , ", ""])
def test_alerting_on_no_state_is_refused(tmp_path: Path, states: str) -> None:
    assert_refused(serve(tmp_path, "--alert-on", states), "--alert-on", "names no state")
