"""``scrapy-heartbeat send`` exit codes and the end-to-end demo, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXECUTION_ID
from tests.crawl import ROOT
from tests.server.serving import EXECUTIONS, Serve
from tests.servers import HeartbeatServer, free_port


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k not in {"API_BASE_URL", "EXECUTION_ID"}}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "scrapy_heartbeat", *args],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def test_send_accepted_from_environment(tmp_path: Path) -> None:
    receiver = Serve.start(tmp_path)
    try:
        result = cli(
            "send",
            "--status",
            "failed",
            "--crawled-urls",
            "7",
            "--total-urls",
            "9",
            env={"API_BASE_URL": receiver.url, "EXECUTION_ID": EXECUTION_ID, "HOSTNAME": "box-1"},
        )
        stored = receiver.get(f"{EXECUTIONS}/{EXECUTION_ID}").json()
    finally:
        receiver.stop()
    assert result.returncode == 0, result.stderr
    assert stored["status"] == "failed"
    assert stored["container_id"] == "box-1"
    assert stored["progress"] == {"total_urls": 9, "crawled_urls": 7}


def test_send_progress_json_and_flags(heartbeat_server: HeartbeatServer) -> None:
    result = cli(
        "send",
        "--api-base-url",
        heartbeat_server.url,
        "--execution-id",
        EXECUTION_ID,
        "--container-id",
        "c1",
        "--progress",
        json.dumps({"data_items": 3}),
        "--header",
        "Authorization: Bearer t",
    )
    assert result.returncode == 0
    received = heartbeat_server.received[0]
    assert received.body["progress"] == {"data_items": 3}
    assert received.headers["Authorization"] == "Bearer t"
    assert "status" not in received.body


def test_send_rejected_exits_1() -> None:
    server = HeartbeatServer(behaviour="status_error")
    try:
        result = cli("send", "--api-base-url", server.url, "--execution-id", EXECUTION_ID)
    finally:
        server.stop()
    assert result.returncode == 1
    assert "Invalid execution_id format" in result.stderr


def test_send_network_failure_exits_3() -> None:
    """3, not argparse's 2 for bad usage: a script tells them apart."""
    result = cli(
        "send", "--api-base-url", f"http://127.0.0.1:{free_port()}", "--execution-id", EXECUTION_ID
    )
    assert result.returncode == 3
    assert "connection refused" in result.stderr


def test_send_usage_errors_name_the_fix() -> None:
    missing = cli("send", "--execution-id", EXECUTION_ID)
    assert missing.returncode == 2
    assert "API_BASE_URL" in missing.stderr
    bad_id = cli("send", "--api-base-url", "http://127.0.0.1:1", "--execution-id", "x")
    assert "execution_id='x' is not a UUID" in bad_id.stderr
    bad_json = cli(
        "send",
        "--api-base-url",
        "http://127.0.0.1:1",
        "--execution-id",
        EXECUTION_ID,
        "--progress",
        "{",
    )
    assert "--progress is not valid JSON" in bad_json.stderr


def test_demo_runs_end_to_end() -> None:
    result = cli("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "1. receiver: receiving heartbeats at http://127.0.0.1:" in out
    assert "heartbeat " in out and " completed " in out
    # the bundled site: 44 logical URLs, 3 of them 404s, 36 book pages
    assert "completed, 44/44 URLs (41 ok, 3 failed), 36 items, 0 errors" in out
    # It ends pointing at the dashboard: the command that shows this crawl there.
    assert re.search(r"dashboard at http://127\.0\.0\.1:\d+/$", out, re.MULTILINE), out
    end = out[out.index("5. dashboard: to see this crawl there, run") :].splitlines()
    shown = re.fullmatch(r" +(.+) serve --db (.+)", end[1])
    assert shown, end
    assert Path(shown[2]).is_file() and shown[2].endswith("heartbeats.sqlite3")
    assert "http://127.0.0.1:8000/" in end[2]
    assert "--keep-open" in end[3]
    # the packaged project, crawled from a copy in the demo's own directory
    project = re.search(r"\(project: (.+)\)$", out, re.MULTILINE)
    assert project, out
    assert Path(project[1]).name == "project"
    assert Path(project[1]).parent.name.startswith("scrapy-heartbeat-demo-")


def test_demo_refuses_a_project_that_is_not_the_demo_s_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "scrapy.cfg").write_text("[settings]\ndefault = shop.settings\n")
    result = cli("demo", "--project", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == (
        f"--project {tmp_path}: not a copy of the demo project (it needs scrapy.cfg and "
        "bookshop/site/); leave --project out to use the packaged one\n"
    )


def test_send_refuses_what_cannot_work_in_one_line() -> None:
    base = ("send", "--api-base-url", "http://127.0.0.1:1", "--execution-id", EXECUTION_ID)
    for extra, expected in (
        (("--timeout", "inf"), "timeout=inf is not a number of seconds"),
        (("--timeout", "0"), "timeout=0.0 is not a number of seconds"),
        (("--timeout", "-1"), "timeout=-1.0 is not a number of seconds"),
        (("--header", "X-Token: 秘密"), "has characters HTTP headers cannot carry"),
        (("--header", "Bearer T0KEN-123"), "--header needs 'Name: value'"),
        (("--progress", '{"percentage": NaN}'), "NaN is not a number"),
        (("--progress", '{"runtime_seconds": Infinity}'), "Infinity is not a number"),
        (("--progress", "[" * 20_000 + "]" * 20_000), "--progress is nested too deeply"),
        (("--progress", '{"total_urls": 1e400}'), "1e400 is too large"),
    ):
        done = cli(*base, *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert expected in done.stderr, (extra, done.stderr)
        assert "Traceback" not in done.stderr
        assert "T0KEN-123" not in done.stderr and "秘密" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 2  # argparse's usage line, then ours


def test_a_token_in_the_base_url_query_is_never_echoed() -> None:
    done = cli(
        "send", "--api-base-url", "http://h:1/p?token=S3CR3T-TOKEN", "--execution-id", EXECUTION_ID
    )
    assert done.returncode == 2
    assert "has a query or fragment" in done.stderr
    assert "S3CR3T-TOKEN" not in done.stderr


def test_send_takes_what_the_extension_takes(heartbeat_server: HeartbeatServer) -> None:
    """Bytes that are not UTF-8 in the environment or the arguments, and a
    container id longer than 255 characters: sent as the extension would
    send them (U+FFFD, cut at 255), with one line about each."""
    done = subprocess.run(
        [
            sys.executable, "-m", "scrapy_heartbeat", "send",
            "--api-base-url", heartbeat_server.url, "--execution-id", EXECUTION_ID,
            "--status", "running", "--current-stage", os.fsdecode(b"stage-\xff"),
        ],
        env={**os.environ, "HOSTNAME": os.fsdecode(b"crawler-\xff" + b"x" * 300)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = heartbeat_server.bodies()[-1]
    assert body["container_id"].startswith("crawler-\ufffd") and len(body["container_id"]) == 255
    assert body["progress"]["current_stage"] == "stage-\ufffd"
    assert "HOSTNAME has bytes" in done.stderr
