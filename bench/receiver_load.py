"""Load on the reference receiver: a simulated fleet posting heartbeats.

    python bench/receiver_load.py [--containers 10000] [--rate 1000] [--seconds 60]
                                  [--backend sqlite|postgresql] [--save NAME]

Starts ``scrapy-heartbeat serve`` (its own process, on a fresh SQLite file,
or on a new database of a PostgreSQL server of its own: Debian's, started
as for the tests) and
drives it open-loop from this process: request *i* is due at ``start + i /
rate`` whatever happened before, and its latency is measured from that due
time, so a stalled server cannot hide its queueing (no coordinated omission).
Keep-alive connections, raw HTTP/1.1 on asyncio. At the end the rows in the
database are counted and compared with the 200 replies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, cpu_counters, cpu_shares, host_verdict, save  # noqa: E402
from scrapy_heartbeat.demo import spawn_receiver  # noqa: E402
from scrapy_heartbeat.payload import HEARTBEAT_PATH as PATH  # noqa: E402
from scrapy_heartbeat.server import open_store  # noqa: E402


def body(execution_id: str, container: str, n: int) -> bytes:
    crawled = n % 1000
    return json.dumps(
        {
            "execution_id": execution_id,
            "container_id": container,
            "status": "running",
            "timestamp": int(time.time()),
            "progress": {
                "total_urls": 1000,
                "crawled_urls": crawled,
                "successful_urls": crawled,
                "failed_urls": 0,
                "current_url": f"https://example.com/page/{crawled}",
                "current_stage": f"爬取中 ({crawled}/1000)",
                "data_items": crawled * 3,
                "percentage": round(crawled / 10, 2),
                "runtime_seconds": n,
                "start_time": "2026-01-01T00:00:00+00:00",
                "error_count": 0,
            },
        },
        ensure_ascii=False,
    ).encode()


async def worker(
    host: str,
    port: int,
    *,
    schedule: asyncio.Queue[tuple[int, float]],
    ids: list[str],
    latencies: list[float],
    statuses: dict[int, int],
    sent: list[float] | None = None,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            n, due = await schedule.get()
            if n < 0:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = body(ids[n % len(ids)], f"container-{n % len(ids)}", n)
            writer.write(
                f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.monotonic() - due)
            if sent is not None:
                sent.append(due)
            code = int(head.split(b" ", 2)[1])
            statuses[code] = statuses.get(code, 0) + 1
    finally:
        writer.close()


async def drive(
    host: str,
    port: int,
    *,
    containers: int,
    rate: float,
    seconds: float,
    connections: int,
    sent: list[float] | None = None,
) -> tuple[list[float], dict[int, int], float]:
    """Beats open loop: their latencies, reply codes and the seconds taken;
    each beat's due time (``time.monotonic()``) into ``sent``, in the order
    of the latencies, when given."""
    ids = [str(uuid.uuid4()) for _ in range(containers)]
    total = int(rate * seconds)
    schedule: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.monotonic() + 0.5
    for n in range(total):
        schedule.put_nowait((n, start + n / rate))
    for _ in range(connections):
        schedule.put_nowait((-1, 0.0))
    workers = [
        asyncio.create_task(
            worker(
                host,
                port,
                schedule=schedule,
                ids=ids,
                latencies=latencies,
                statuses=statuses,
                sent=sent,
            )
        )
        for _ in range(connections)
    ]
    await asyncio.gather(*workers)
    return latencies, statuses, time.monotonic() - start


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def measure(
    args: argparse.Namespace,
) -> tuple[list[float], dict[int, int], float, float, int, int, dict[str, float]]:
    """Drive a fresh ``serve``: the latencies, reply codes, seconds and load
    generator CPU seconds; then the rows and executions stored, and the
    machine's CPU shares during the load."""
    with contextlib.ExitStack() as stack:
        db = bench_database(stack, args.backend, "bench.sqlite3")
        server, url = spawn_receiver(db, *args.serve_arg)
        try:
            port = int(url.rsplit(":", 1)[1])
            cpu_before, machine_before = os.times(), cpu_counters()
            latencies, statuses, elapsed = asyncio.run(
                drive(
                    "127.0.0.1",
                    port,
                    containers=args.containers,
                    rate=args.rate,
                    seconds=args.seconds,
                    connections=args.connections,
                )
            )
            client_cpu = sum(os.times()[:2]) - sum(cpu_before[:2])
            machine = cpu_shares(machine_before, cpu_counters())
        finally:
            server.terminate()
            server.wait(10)
            if server.stdout:
                server.stdout.close()
        store = open_store(db)
        try:
            rows = store.count()
            executions = len(store.executions())
        finally:
            store.close()

    return latencies, statuses, elapsed, client_cpu, rows, executions, machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="heartbeats per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--save", help="save the report as bench/results/NAME.json")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an argument for serve, e.g. --serve-arg=--check-every=3600 (repeatable)",
    )
    args = parser.parse_args()

    latencies, statuses, elapsed, client_cpu, rows, executions, machine = measure(args)
    accepted = statuses.get(200, 0)
    report = {
        "backend": args.backend,
        "containers": args.containers,
        "target_rate": args.rate,
        "requests": len(latencies),
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "seconds": round(elapsed, 1),
        "statuses": statuses,
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
            "mean": round(statistics.fmean(latencies) * 1000, 2),
        },
        "rows_stored": rows,
        "executions_stored": executions,
        "every_accepted_beat_stored": rows == accepted,
        "load_generator_cpu_s": round(client_cpu, 1),
        "machine_cpu": machine,
    }
    print(json.dumps(report, indent=2))
    if args.save:
        save(args.save, report)
    ok = (
        report["every_accepted_beat_stored"]
        and accepted == len(latencies)
        and report["achieved_rate"] >= 0.98 * args.rate
        and report["latency_ms"]["p99"] < 100
    )
    line, status = host_verdict(machine, bool(ok))
    print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
