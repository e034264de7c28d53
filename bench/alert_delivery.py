"""Alert delivery from the outbox: throughput to a fast local webhook, and
the delay from each transition to its delivery, for a burst.

    python bench/alert_delivery.py [--backend sqlite|postgresql] [--alerts 10000]
        [--concurrency 4] [--save NAME]

Stores ``--alerts`` executions that completed straight in a fresh
database, starts ``scrapy-heartbeat serve --webhook`` on it (its first
liveness check claims every transition at once, writing one alert each),
and records when each alert reaches a local webhook (``HeartbeatServer``,
in this process). The delay of an alert is its arrival less the moment its
transition was claimed (the event's ``at``). Throughput is alerts per
second from the first arrival to the last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, save  # noqa: E402
from bench.receiver_load import percentile  # noqa: E402
from scrapy_heartbeat.demo import spawn_receiver  # noqa: E402
from scrapy_heartbeat.server import open_store  # noqa: E402
from tests.server.beats import worker_beat  # noqa: E402
from tests.servers import HeartbeatServer  # noqa: E402


def seed(db: str, count: int) -> None:
    store = open_store(db)
    try:
        now = time.time()
        for start in range(0, count, 1000):
            ids = (str(uuid.uuid4()) for _ in range(min(1000, count - start)))
            store.add_many([(worker_beat(eid, "completed", crawled=3), now) for eid in ids])
    finally:
        store.close()


def measure(db: str, args: argparse.Namespace) -> dict[str, float]:
    hook = HeartbeatServer()
    server, _ = spawn_receiver(
        db, "--webhook", hook.url + "/hook", "--check-every", "1",
        "--alert-concurrency", str(args.concurrency), stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + args.timeout
        while len(hook.received) < args.alerts and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout:
            server.stdout.close()
        hook.stop()
    arrivals = sorted(r.at for r in hook.received)
    delays = [r.at - datetime.fromisoformat(r.body["at"]).timestamp() for r in hook.received]
    unique = len({r.body["event_id"] for r in hook.received})
    return {
        "alerts": args.alerts,
        "delivered": unique,
        "requests": len(arrivals),
        "per_second": round(len(arrivals) / max(arrivals[-1] - arrivals[0], 1e-9), 1),
        "delay_p50_s": round(percentile(delays, 0.5), 2),
        "delay_p99_s": round(percentile(delays, 0.99), 2),
        "delay_max_s": round(max(delays), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait at most")
    parser.add_argument("--save", help="save the report as bench/results/NAME.json")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        db = bench_database(stack, args.backend, "alerts.sqlite3")
        seed(db, args.alerts)
        found = {"backend": args.backend, **measure(db, args)}
    print(json.dumps(found, indent=2))
    if args.save:
        save(args.save, found)


if __name__ == "__main__":
    main()
