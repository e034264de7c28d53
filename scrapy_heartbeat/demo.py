"""The whole system on one machine: the reference receiver, the example
project's bundled site, and the example spider reporting to the receiver,
each in a process of its own as in production."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from scrapy_heartbeat.store import HeartbeatStore


def spawn_receiver(
    db: Path | str, *args: str, stderr: Any = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``scrapy-heartbeat serve`` on a free port of 127.0.0.1 with the
    database ``db``; returns the process (its stdout a pipe, the first line
    read) and the receiver's base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapy_heartbeat", "serve", "--port", "0", "--db", str(db), *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    url = first.rsplit(" ", 1)[-1].removesuffix("/api/v1/monitoring/heartbeat")
    if not url.startswith("http://"):
        process.kill()
        raise RuntimeError(f"the receiver did not start: {first!r}")
    return process, url


def find_project(project: str | None) -> Path:
    candidates = (
        [Path(project)]
        if project
        else [
            Path.cwd() / "example_project",
            Path(__file__).resolve().parent.parent / "example_project",
        ]
    )
    for candidate in candidates:
        if (candidate / "scrapy.cfg").is_file():
            return candidate.resolve()
    raise SystemExit("example_project not found; run from a clone or pass --project PATH")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_site(root: Path) -> ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(root))
    site = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


def _relay(stream: IO[str], prefix: str) -> None:
    for line in stream:
        print(prefix + line, end="", flush=True)


def run_demo(keep_open: bool = False, project: str | None = None, interval: float = 1.0) -> int:
    project_dir = find_project(project)
    workdir = Path(tempfile.mkdtemp(prefix="scrapy-heartbeat-demo-"))
    db = workdir / "heartbeats.sqlite3"
    receiver, api = spawn_receiver(db, "--print")
    try:
        assert receiver.stdout is not None
        dashboard = receiver.stdout.readline().strip()
        print(f"1. receiver: receiving heartbeats at {api}/api/v1/monitoring/heartbeat")
        site = serve_site(project_dir / "bookshop" / "site")
        site_url = f"http://127.0.0.1:{site.server_address[1]}"
        print(f"2. site: the example project's bundled bookshop at {site_url}/")
        threading.Thread(target=_relay, args=(receiver.stdout, "   "), daemon=True).start()

        execution_id = str(uuid.uuid4())
        crawl_log = workdir / "crawl.log"
        print(f"3. crawl: scrapy crawl books (execution {execution_id}), heartbeats as received:")
        env = {**os.environ, "API_BASE_URL": api, "EXECUTION_ID": execution_id}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_dir), env.get("PYTHONPATH")]))
        started = time.monotonic()
        crawl = subprocess.run(
            [
                sys.executable,
                "-m",
                "scrapy",
                "crawl",
                "books",
                "-a",
                f"site={site_url}",
                "-s",
                f"HEARTBEAT_INTERVAL={interval}",
                "-s",
                f"HEARTBEAT_MIN_INTERVAL={min(interval, 10)}",
                "-s",
                f"LOG_FILE={crawl_log}",
            ],
            cwd=project_dir,
            env=env,
            check=False,
        )
        elapsed = time.monotonic() - started
        site.shutdown()
        time.sleep(0.3)  # let the relay print the final line
        store = HeartbeatStore(str(db))
        execution = store.execution(execution_id)
        beats = len(store.history(execution_id))
        store.close()
        print(f"4. summary, read back from the receiver's database ({db}):")
        if execution is None:
            print("   no heartbeat arrived: see the crawl log " + str(crawl_log))
            return 1
        p = execution["progress"] or {}
        print(
            f"   execution {execution_id}: {execution['status']}, "
            f"{p.get('crawled_urls')}/{p.get('total_urls')} URLs "
            f"({p.get('successful_urls')} ok, {p.get('failed_urls')} failed), "
            f"{p.get('data_items')} items, {p.get('error_count')} errors, "
            f"{beats} heartbeats in {elapsed:.1f}s; crawl exit code {crawl.returncode}"
        )
        print(f"   crawl log: {crawl_log}")
        ok = crawl.returncode == 0 and execution["status"] == "completed"
        if keep_open:
            print(f"5. {dashboard}: the dashboard stays open; Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                receiver.wait()
        else:
            print("   (run `scrapy-heartbeat demo --keep-open` to keep the dashboard open)")
        return 0 if ok else 1
    finally:
        if receiver.poll() is None:
            receiver.terminate()
            receiver.wait(10)
