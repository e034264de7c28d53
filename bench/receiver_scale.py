"""The reference receiver at fleet scale: beats while the dashboard and
Prometheus read.

    python bench/receiver_scale.py [--backend sqlite|postgresql] [--executions 100000]
        [--history 10000000] [--rate 1000] [--seconds 60] [--save NAME]

Seeds a fresh database directly with SQL (``--executions`` executions of
one container each, a tenth of them completed, the rest last seen over the
past hour, each with the liveness a receiver settled; ``--history``
history rows), starts ``scrapy-heartbeat serve`` on it, and drives beats
open-loop as :mod:`bench.receiver_load` does, while a dashboard-like poller
asks for one page of 100 and the summary every 2 s (never before the
previous answer) and ``/metrics`` is scraped every 15 s.
Reports the beats' latencies, each page's and scrape's time, the scrape's
size and series, the receiver's peak RSS, and the machine's CPU: the
share busy and the share its host took (steal); above 5 % stolen, the run
does not resolve the targets (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    bench_database,
    cpu_counters,
    cpu_shares,
    host_verdict,
    save,
)
from bench.receiver_load import drive, percentile  # noqa: E402
from scrapy_heartbeat.demo import spawn_receiver  # noqa: E402
from scrapy_heartbeat.server import open_store  # noqa: E402

EXECUTIONS = "/api/v1/monitoring/executions"
PROGRESS = '{"total_urls": 1000, "crawled_urls": 500, "data_items": 1500, "percentage": 50.0}'
#: An execution id from a number, in SQL: the 8-4-4-4-12 form, lower case.
_ID = {
    "sqlite": "printf('%08x-0000-4000-8000-%012x', {n}, {n})",
    "postgresql": "lpad(to_hex({n}), 8, '0') || '-0000-4000-8000-' || lpad(to_hex({n}), 12, '0')",
}
_SERIES = {
    "sqlite": "WITH RECURSIVE s(n) AS "
    "(SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < {count})",
    "postgresql": "WITH s(n) AS (SELECT generate_series(0, {count} - 1))",
}


def seed_statements(backend: str, executions: int, history: int, now: float) -> list[str]:
    ids, series = _ID[backend], _SERIES[backend]
    eid = ids.format(n="n")
    hid = ids.format(n=f"(n % {executions})")
    state = (
        f"SELECT <id>, <container>CASE WHEN n % 10 = 0 THEN 'completed' ELSE 'running' END, "
        f"'{PROGRESS}', {now - 7200}, {now} - (n % 3600), 240, '500/1500', {now} - 60, 239, "
        f"{239 * 30.0}, CASE WHEN n % 10 = 0 THEN 'completed' WHEN n % 3600 < 60 THEN 'running' "
        "WHEN n % 3600 < 300 THEN 'late' ELSE 'lost' END, 240 FROM s"
    )
    columns = (
        "status, progress, first_seen, last_seen, beats, progress_key, moved_at, gaps, "
        "gap_seconds, liveness, settled_beats"
    )
    return [
        f"{series.format(count=executions)} INSERT INTO executions (execution_id, container_id, "
        f"latency, {columns}) "
        + state.replace("<id>", eid).replace("<container>", "'worker-1', 0.05, "),
        f"{series.format(count=executions)} INSERT INTO containers (execution_id, container_id, "
        f"{columns}) " + state.replace("<id>", eid).replace("<container>", "'worker-1', "),
        f"{series.format(count=history)} INSERT INTO heartbeats (execution_id, container_id, "
        "status, client_timestamp, received_at, latency, progress) "
        f"SELECT {hid}, 'worker-1', 'running', {int(now)} - (n % 86400), {now} - (n % 86400), "
        f"0.05, '{PROGRESS}' FROM s",
    ]


def seed(db: str, backend: str, executions: int, history: int) -> float:
    """The seconds it took."""
    started = time.monotonic()
    open_store(db).close()  # the tables, as serve makes them
    statements = seed_statements(backend, executions, history, time.time())
    if backend == "sqlite":
        import sqlite3

        with sqlite3.connect(db) as conn:
            for statement in statements:
                conn.execute(statement)
    else:
        import psycopg

        with psycopg.connect(db) as conn:
            for statement in statements:
                conn.execute(statement)
        # What autovacuum would have done while the rows came in over days:
        # otherwise it vacuums ten million rows during the measurement.
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
    return time.monotonic() - started


async def get(port: int, path: str) -> tuple[int, bytes, float]:
    """One GET on a connection of its own: code, body, seconds."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    raw = await reader.read(-1)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, time.monotonic() - started


async def every(seconds: float, stop: asyncio.Event, task: Any) -> None:
    """``task()`` awaited, then ``seconds`` waited, until ``stop``."""
    while not stop.is_set():
        await task()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    pages: list[float] = []
    filtered: list[float] = []
    scrapes: list[tuple[float, int, int]] = []
    codes: dict[str, int] = {}
    peak = [rss_kib(pid)]
    sent: list[float] = []
    cpu: list[tuple[float, list[int]]] = [(time.monotonic(), cpu_counters())]

    async def dashboard() -> None:
        for path, into in (
            (f"{EXECUTIONS}?limit=100", pages),
            ("/api/v1/monitoring/summary", pages),
            (f"{EXECUTIONS}?limit=100&status=stale", filtered),
        ):
            code, _, seconds = await get(port, path)
            codes[f"page {code}"] = codes.get(f"page {code}", 0) + 1
            into.append(seconds)

    async def scrape() -> None:
        code, body, seconds = await get(port, "/metrics")
        codes[f"scrape {code}"] = codes.get(f"scrape {code}", 0) + 1
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        scrapes.append((seconds, len(body), series))

    async def memory() -> None:
        peak[0] = max(peak[0], rss_kib(pid))
        cpu.append((time.monotonic(), cpu_counters()))

    readers = [asyncio.create_task(every(1.0, stop, memory))]
    if not args.no_readers:
        readers.append(asyncio.create_task(every(2.0, stop, dashboard)))
        readers.append(asyncio.create_task(every(15.0, stop, scrape)))
    latencies, statuses, elapsed = await drive(
        "127.0.0.1",
        port,
        containers=args.containers,
        rate=args.rate,
        seconds=args.seconds,
        connections=args.connections,
        sent=sent,
    )
    stop.set()
    await asyncio.gather(*readers)
    seen = {"pages": pages, "filtered": filtered, "scrapes": scrapes, "codes": codes, "peak": peak}
    found = report(args, latencies, statuses, elapsed, seen)
    found["timeline"] = timeline(latencies, sent, cpu)
    return found


def timeline(
    latencies: list[float], sent: list[float], cpu: list[tuple[float, list[int]]]
) -> list[list[float | None]]:
    """Per second of the run, by when the beats were due: the second, the
    beats due in it, their slowest (ms), and the share of the machine's CPU
    its host took in the second before each sample (steal; None for a
    second no sample ended in), so that slow beats can be told from a host
    that took the CPU."""
    start = min(sent, default=0.0)
    slowest: dict[int, list[float]] = {}
    for due, latency in zip(sent, latencies, strict=True):
        slowest.setdefault(int(due - start), []).append(latency)
    stolen = {
        int(at - start): cpu_shares(before, after)["stolen"]
        for (_, before), (at, after) in itertools.pairwise(cpu)
    }
    return [
        [second, len(found), round(max(found) * 1000, 1), stolen.get(second)]
        for second, found in sorted(slowest.items())
    ]


def ms(values: list[float], p: float) -> float | None:
    return round(percentile(values, p) * 1000, 1) if values else None


def report(
    args: argparse.Namespace,
    latencies: list[float],
    statuses: dict[int, int],
    elapsed: float,
    seen: dict[str, Any],
) -> dict[str, Any]:
    pages, filtered, scrapes = seen["pages"], seen["filtered"], seen["scrapes"]
    return {
        "backend": args.backend,
        "serve_args": args.serve_arg,
        "readers": not args.no_readers,
        "executions_seeded": args.executions,
        "history_rows_seeded": args.history,
        "target_rate": args.rate,
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "seconds": round(elapsed, 1),
        "beat_statuses": statuses,
        "beat_ms": {
            "p50": ms(latencies, 0.5),
            "p99": ms(latencies, 0.99),
            "max": ms(latencies, 1.0),
        },
        "page_and_summary_ms": {"p50": ms(pages, 0.5), "max": ms(pages, 1.0), "n": len(pages)},
        "stale_page_ms": {"p50": ms(filtered, 0.5), "max": ms(filtered, 1.0)},
        "scrapes": [{"seconds": round(s, 2), "bytes": b, "series": n} for s, b, n in scrapes],
        "read_statuses": seen["codes"],
        "receiver_peak_rss_mib": round(seen["peak"][0] / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=10_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="heartbeats per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--containers", type=int, default=10_000, help="beating containers")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds before the load")
    parser.add_argument(
        "--no-readers",
        action="store_true",
        help="beats alone, no dashboard nor scrapes: what the reads cost the beats",
    )
    parser.add_argument("--save", help="save the report as bench/results/NAME.json")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an argument for serve, e.g. --serve-arg=--check-every=3600 (repeatable)",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        db = bench_database(stack, args.backend, "scale.sqlite3")
        seeded = seed(db, args.backend, args.executions, args.history)
        server, url = spawn_receiver(db, *args.serve_arg, stderr=subprocess.DEVNULL)
        time.sleep(args.warm_up)  # its first liveness check, over every execution
        try:
            before = cpu_counters()
            found = asyncio.run(run(int(url.rsplit(":", 1)[1]), server.pid, args))
            found["machine_cpu"] = cpu_shares(before, cpu_counters())
        finally:
            server.terminate()
            server.wait(30)
            if server.stdout:
                server.stdout.close()
    found["seed_seconds"] = round(seeded, 1)
    print(json.dumps(found, indent=2))
    if args.save:
        save(args.save, found)
    pages_ok = (found["page_and_summary_ms"]["max"] or 0) < 200
    scrapes_ok = all(s["seconds"] < 2 for s in found["scrapes"])
    ok = (found["beat_ms"]["p99"] or 0) < 100 and pages_ok and scrapes_ok
    line, status = host_verdict(found["machine_cpu"], ok)
    print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
