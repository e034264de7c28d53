"""What the crawl benchmarks share: the site and receiver processes, one
measured crawl, and median/min–max summaries."""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from scrapy_heartbeat.demo import spawn_receiver

ROOT = Path(__file__).resolve().parent.parent
#: Where results are saved: ``BENCH_RESULTS`` when set (``bench/quick.py``
#: keeps its quick figures apart from the full ones the docs cite).
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
T = TypeVar("T")


#: The most of the machine's CPU time its host may take (steal) during a
#: run whose figure is to resolve a latency target: this VM shares its host,
#: and a run with a third of its CPU taken measures the neighbours.
STOLEN_AT_MOST = 0.05


def cpu_counters() -> list[int]:
    """The machine's CPU time so far, in ticks, as ``/proc/stat`` counts it:
    user, nice, system, idle, iowait, irq, softirq, steal."""
    with open("/proc/stat") as stat:
        return [int(n) for n in stat.readline().split()[1:9]]


def cpu_shares(before: Sequence[int], after: Sequence[int]) -> dict[str, float]:
    """Between two :func:`cpu_counters`: the share of the machine's CPU time
    that was busy, and the share its host took for other guests (steal)."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent) or 1
    idle = spent[3] + spent[4]
    return {
        "busy": round((total - idle - spent[7]) / total, 3),
        "stolen": round(spent[7] / total, 3),
    }


def host_verdict(shares: dict[str, float], ok: bool) -> tuple[str, int]:
    """The line a latency benchmark ends with, and its exit status: a run
    whose host took more than :data:`STOLEN_AT_MOST` of the CPU does not
    resolve its target, met or not."""
    if shares["stolen"] > STOLEN_AT_MOST:
        return (
            f"DOES NOT RESOLVE: the host took {shares['stolen']:.0%} of the CPU "
            f"(more than {STOLEN_AT_MOST:.0%}); run it again on a quieter host",
            2,
        )
    return ("PASS", 0) if ok else ("FAIL: see the figures above", 1)


@dataclass
class Service:
    url: str
    process: subprocess.Popen[str]
    started: float

    def stop(self) -> str:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=20)
        return out


@contextmanager
def site_server(pages: int, scrapeops_period: int = 10) -> Iterator[Service]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "site_server.py"),
            "--pages",
            str(pages),
            "--scrapeops-period",
            str(scrapeops_period),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    service = Service(process.stdout.readline().strip(), process, time.monotonic())
    try:
        yield service
    finally:
        tail = service.stop().strip().splitlines()
        report = json.loads(tail[-1]) if tail else {}
        busy = report.get("cpu_seconds", 0) / (time.monotonic() - service.started)
        print(
            f"site server: {report.get('cpu_seconds', 0):.1f} CPU s, busy {busy:.0%} of the "
            f"run (below 100%: not the bottleneck), scrapeops calls {report.get('scrapeops_calls')}"
        )


@contextmanager
def receiver() -> Iterator[Service]:
    with tempfile.TemporaryDirectory() as tmp:
        process, url = spawn_receiver(Path(tmp, "bench.sqlite3"))
        service = Service(url, process, time.monotonic())
        try:
            yield service
        finally:
            service.stop()


def bench_database(stack: ExitStack, backend: str, name: str) -> str:
    """A fresh database for a receiver under ``stack``: a SQLite file named
    ``name`` in a temporary directory, or a database on a throwaway
    PostgreSQL server (``backend`` ``"postgresql"``)."""
    if backend == "postgresql":
        from tests.server.postgres_server import PostgresServer

        postgres = PostgresServer()
        stack.callback(postgres.stop)
        return str(postgres.database())
    return str(Path(stack.enter_context(tempfile.TemporaryDirectory()), name))


def run_crawl_process(
    variant: str,
    site: str,
    api: str,
    *,
    delay: float | None = None,
    extra: dict[str, Any] | None = None,
    prefix: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    """Run ``bench/crawl_process.py`` (after ``prefix``, such as valgrind);
    its JSON report and its stderr. A failed crawl ends the benchmark."""
    args = [*prefix, sys.executable, str(ROOT / "bench" / "crawl_process.py"), variant, site, api]
    if delay is not None:
        args.append(str(delay))
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BENCH_EXTRA_SETTINGS": json.dumps(extra or {}),
            **(env or {}),
        },
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{variant} crawl failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1]), done.stderr


def crawl(
    variant: str,
    site: str,
    api: str,
    delay: float | None = None,
    extra: dict[str, Any] | None = None,
    *,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one crawl process; add its CPU seconds, wall seconds and the time
    from "Closing spider" to the process's exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result, _ = run_crawl_process(variant, site, api, delay=delay, extra=extra, env=env)
    exited = time.time()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["wall_seconds"] = wall
    result["shutdown_seconds"] = exited - result["closing_at"] if result["closing_at"] else None
    return result


def rotated(order: Sequence[T], n: int) -> list[T]:
    """``order`` started ``n`` places further down (wrapping): round n's order,
    so that no variant always runs in the same place in a round."""
    k = n % len(order)
    return [*order[k:], *order[:k]]


def summary(values: list[float], digits: int = 3) -> str:
    return (
        f"{round(statistics.median(values), digits)} "
        f"({round(min(values), digits)}–{round(max(values), digits)})"
    )


def median_interval(values: list[float], confidence: float = 0.9) -> tuple[float, float, float]:
    """A distribution-free interval for the median of what ``values`` were
    drawn from: the k-th smallest and k-th largest value, k as large as
    keeps at least ``confidence`` (from the binomial distribution; with few
    values the whole range, and its coverage is returned as the third
    element: 3 values cover 75%, 8 cover 93% at k = 2)."""
    ordered = sorted(values)
    n = len(ordered)
    k, coverage = 1, 1 - 2 * 0.5**n
    while k + 1 <= n // 2:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # P(fewer than k + 1 below)
        if 1 - 2 * tail < confidence:
            break
        k, coverage = k + 1, 1 - 2 * tail
    return ordered[k - 1], ordered[n - k], coverage


def save(name: str, data: Any) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
