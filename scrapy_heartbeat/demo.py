"""The whole system on one machine: the reference receiver, the demo
project's bookshop site, and its spider reporting to the receiver, each in a
process of its own as in production. The demo project (``demo_project/``)
ships inside the package."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from scrapy_heartbeat.payload import HEARTBEAT_PATH

#: Seconds between the demo crawl's heartbeats (``demo --interval``).
INTERVAL = 0.5
#: How long a receiver may take to start listening, seconds.
START_TIMEOUT = 60.0
#: The bookshop site the demo serves, inside the project.
SITE = Path("bookshop", "site")


def spawn_receiver(
    db: Path | str, *args: str, stderr: Any = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``scrapy-heartbeat serve`` on a free port of 127.0.0.1 with the
    database ``db``; returns the process (its stdout a pipe, unread) and the
    receiver's base URL, once it listens."""
    with tempfile.TemporaryDirectory(prefix="scrapy-heartbeat-serve-") as tmp:
        port_file = Path(tmp, "port")
        process = subprocess.Popen(
            [sys.executable, "-m", "scrapy_heartbeat", "serve", "--port", "0",
             "--port-file", str(port_file), "--db", str(db), *args],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"the receiver did not start (exit code {process.returncode})")
            time.sleep(0.02)
        port = int(port_file.read_text(encoding="ascii"))
    return process, f"http://127.0.0.1:{port}"


def find_project(project: str | None) -> Path:
    """The Scrapy project the demo crawls: ``--project PATH``, else the one
    shipped inside this package, so that an installed wheel runs the demo
    without a clone."""
    candidate = Path(project) if project else Path(__file__).resolve().parent / "demo_project"
    if not (candidate / "scrapy.cfg").is_file() or not (candidate / SITE).is_dir():
        raise SystemExit(
            f"--project {candidate}: not a copy of the demo project (it needs scrapy.cfg "
            f"and {SITE.as_posix()}/); leave --project out to use the packaged one"
        )
    return candidate.resolve()


def working_copy(project_dir: Path, workdir: Path) -> Path:
    """A copy of the project in the demo's own directory: the crawl then runs
    and writes nowhere near the installed package, which may be read-only."""
    ignore = shutil.ignore_patterns("__pycache__", "*.py[co]", ".scrapy")
    return Path(shutil.copytree(project_dir, workdir / "project", ignore=ignore))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_site(root: Path) -> ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(root))
    site = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


def _relay(stream: IO[str], prefix: str) -> None:
    """The receiver's ``--print`` lines; its banner is the demo's own."""
    for line in stream:
        if line.startswith("heartbeat "):
            print(prefix + line, end="", flush=True)


def run_demo(
    keep_open: bool = False, project: str | None = None, interval: float = INTERVAL
) -> int:
    source = find_project(project)
    workdir = Path(tempfile.mkdtemp(prefix="scrapy-heartbeat-demo-"))
    project_dir = source if project else working_copy(source, workdir)
    db = workdir / "heartbeats.sqlite3"
    receiver, api = spawn_receiver(db, "--print")
    try:
        assert receiver.stdout is not None
        print(f"1. receiver: receiving heartbeats at {api}{HEARTBEAT_PATH}; dashboard at {api}/")
        site = serve_site(project_dir / SITE)
        site_url = f"http://127.0.0.1:{site.server_address[1]}"
        print(f"2. site: the demo project's bookshop at {site_url}/ (project: {project_dir})")
        threading.Thread(target=_relay, args=(receiver.stdout, "   "), daemon=True).start()

        execution_id = str(uuid.uuid4())
        crawl_log = workdir / "crawl.log"
        print(f"3. crawl: scrapy crawl books (execution {execution_id}), heartbeats as received:")
        started = time.monotonic()
        crawl = _crawl(
            project_dir, site_url, api, execution_id=execution_id, interval=interval, log=crawl_log
        )
        elapsed = time.monotonic() - started
        site.shutdown()
        time.sleep(0.3)  # let the relay print the final line
        execution, beats = _read_back(db, execution_id)
        print(f"4. summary, read back from the receiver's database ({db}):")
        if execution is None:
            print("   no heartbeat arrived: see the crawl log " + str(crawl_log))
            return 1
        print(
            f"   {_described(execution, beats)} in {elapsed:.1f}s; "
            f"crawl exit code {crawl.returncode}"
        )
        print(f"   crawl log: {crawl_log}")
        if keep_open:
            print(f"5. dashboard: open {api}/ in a browser; it stays open until Ctrl-C.")
            with contextlib.suppress(KeyboardInterrupt):
                receiver.wait()
        else:
            # The receiver stops with the demo; its database stays, to be seen.
            print("5. dashboard: to see this crawl there, run")
            print(f"      {_command()} serve --db {db}")
            print("   and open http://127.0.0.1:8000/ in a browser (or rerun the demo with")
            print(f"   `{_command()} demo --keep-open` to keep its receiver open)")
        return 0 if crawl.returncode == 0 and execution["status"] == "completed" else 1
    finally:
        if receiver.poll() is None:
            receiver.terminate()
            receiver.wait(10)


def _command() -> str:
    """How to run this package's command line from here: its script when
    that is on PATH, else through this interpreter (``make demo`` runs
    without the virtualenv's ``bin`` on PATH)."""
    script = shutil.which("scrapy-heartbeat")
    if script and Path(script).parent == Path(sys.executable).parent:
        return "scrapy-heartbeat"
    return f"{sys.executable} -m scrapy_heartbeat"


def _crawl(
    project_dir: Path, site: str, api: str, *, execution_id: str, interval: float, log: Path
) -> subprocess.CompletedProcess[bytes]:
    """``scrapy crawl books`` of the demo project, reporting to ``api``."""
    env = {**os.environ, "API_BASE_URL": api, "EXECUTION_ID": execution_id}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_dir), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "books", "-a", f"site={site}",
         "-s", f"HEARTBEAT_INTERVAL={interval}",
         "-s", f"HEARTBEAT_MIN_INTERVAL={min(interval, 10)}",
         "-s", f"LOG_FILE={log}"],
        cwd=project_dir, env=env, check=False,
    )  # fmt: skip


def _read_back(db: Path, execution_id: str) -> tuple[dict[str, Any] | None, int]:
    """The execution as the receiver stored it (None: no beat arrived), and
    how many beats it has."""
    from scrapy_heartbeat.server import open_store

    store = open_store(str(db))
    try:
        return store.execution(execution_id), len(store.history(execution_id))
    finally:
        store.close()


def _described(execution: dict[str, Any], beats: int) -> str:
    p = execution["progress"] or {}
    return (
        f"execution {execution['execution_id']}: {execution['status']}, "
        f"{p.get('crawled_urls')}/{p.get('total_urls')} URLs "
        f"({p.get('successful_urls')} ok, {p.get('failed_urls')} failed), "
        f"{p.get('data_items')} items, {p.get('error_count')} errors, "
        f"{beats} heartbeats"
    )
