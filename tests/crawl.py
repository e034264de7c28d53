"""Run real crawls in a subprocess (each crawl process installs its own
reactor, exactly as ``scrapy crawl`` would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

DEPENDENCY_WARNINGS = (
    # Twisted before 22.1 (our minimum is 21.7) calls threading.currentThread().
    "currentThread() is deprecated",
    # Scrapy 2.13.0 resuming a JOBDIR drops an empty start-request disk queue
    # without closing its file (ScrapyPriorityQueue.init_prios).
    "scrapy/pqueues.py:122: ResourceWarning: unclosed file",
    # scrapy-redis 0.9.1 (the fleet tests' queue) calls Spider.log() and passes
    # spider= to the stats collector, both deprecated since Scrapy 2.13.
    "site-packages/scrapy_redis/",
)


@dataclass
class CrawlResult:
    crawls: list[dict[str, Any]]
    log: str
    returncode: int
    elapsed: float

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.crawls[0]["items"]

    @property
    def stats(self) -> dict[str, Any]:
        return self.crawls[0]["stats"]

    @property
    def reason(self) -> str:
        return self.crawls[0]["reason"]

    def log_time(self, text: str) -> float:
        """When the first log line containing ``text`` was written (unix time)."""
        for line in self.log.splitlines():
            if text in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
                return stamp.timestamp()
        raise AssertionError(f"{text!r} is not in the crawl's log")

    def close_seconds(self) -> float:
        """How long the spider took to close: the extension's final beat is
        awaited in between."""
        return self.log_time("Spider closed (") - self.log_time("Closing spider (")


class RunningCrawl:
    """A crawl process under way; :meth:`finish` waits and reads its output."""

    def __init__(
        self,
        crawls: list[dict[str, Any]],
        settings: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        config = Path(self._tmp.name, "config.json")
        self._output = Path(self._tmp.name, "output.json")
        config.write_text(json.dumps({"crawls": crawls, "settings": settings or {}}))
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"API_BASE_URL", "EXECUTION_ID", "DEBUG"}
        }
        child_env.update(env or {})
        child_env["PYTHONPATH"] = str(ROOT)
        self.started = time.monotonic()
        # A file, not a pipe: a crawl that logs more than a pipe holds while
        # nobody reads it (a worker running beside others) would block on it.
        log = Path(self._tmp.name, "crawl.log")
        self._log = log.open("w+", encoding="utf-8")  # closed by finish()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crawl_runner", str(config), str(self._output)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=ROOT,
        )

    def finish(self, timeout: float = 180) -> CrawlResult:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the crawl ran past {timeout}s:\n{self._read_log()[-3000:]}"
            ) from None
        elapsed = time.monotonic() - self.started
        log = self._read_log()
        data = json.loads(self._output.read_text()) if self._output.exists() else {"crawls": []}
        self._log.close()
        self._tmp.cleanup()
        result = CrawlResult(data["crawls"], log, self.process.returncode, elapsed)
        # Warnings are errors in the crawl processes too, but for those a
        # dependency emits that we cannot fix.
        warned = [
            line
            for line in result.log.splitlines()
            if "[py.warnings]" in line and not any(known in line for known in DEPENDENCY_WARNINGS)
        ]
        assert not warned, "\n".join(warned)
        return result

    def _read_log(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()


def run_crawls(
    crawls: list[dict[str, Any]],
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> CrawlResult:
    return RunningCrawl(crawls, settings, env).finish(timeout)


def run_crawl(
    spider: str,
    settings: dict[str, Any] | None = None,
    args: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> CrawlResult:
    return run_crawls(
        [{"spider": spider, "settings": settings or {}, "args": args or {}}],
        settings=settings,  # process-wide too: the reactor is chosen there
        env=env,
        timeout=timeout,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
