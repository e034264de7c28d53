"""Run real crawls in a subprocess (each crawl process installs its own
reactor, exactly as ``scrapy crawl`` would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

DEPENDENCY_WARNINGS = (
    # Twisted before 22.1 (our minimum is 21.7) calls threading.currentThread().
    "currentThread() is deprecated",
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


def run_crawls(
    crawls: list[dict[str, Any]],
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> CrawlResult:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "config.json")
        output = Path(tmp, "output.json")
        config.write_text(json.dumps({"crawls": crawls, "settings": settings or {}}))
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"API_BASE_URL", "EXECUTION_ID", "DEBUG"}
        }
        child_env.update(env or {})
        child_env["PYTHONPATH"] = str(ROOT)
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.crawl_runner",
                str(config),
                str(output),
            ],
            capture_output=True,
            text=True,
            env=child_env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
        elapsed = time.monotonic() - started
        data = json.loads(output.read_text()) if output.exists() else {"crawls": []}
    result = CrawlResult(data["crawls"], proc.stderr + proc.stdout, proc.returncode, elapsed)
    # Warnings are errors in the crawl processes too, but for those a
    # dependency emits that we cannot fix.
    warned = [
        line
        for line in result.log.splitlines()
        if "[py.warnings]" in line and not any(known in line for known in DEPENDENCY_WARNINGS)
    ]
    assert not warned, "\n".join(warned)
    return result


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
