"""CPU time of one beat's HTTP exchange, the part of a beat that runs off
the loop thread (on a CPU the crawl shares, it is taken from the crawl).

    python bench/send_cost.py [--sends 500] [--rounds 5]

Against ``scrapy-heartbeat serve`` on 127.0.0.1, one connection kept alive,
sequential beats of a typical payload; the CPU time (user + system) of the
sending thread per beat, median (min–max) over rounds, for:

* ``requests``: ``HeartbeatClient.send(watchdog=False)``, as the extension
  sends a periodic beat (the event loop's timer bounds it);
* ``requests+timer``: ``HeartbeatClient.send()``, with the watchdog thread
  it starts per request (the CLI, a final beat),
  the watchdog thread's own CPU time included (it is process CPU time);
* ``agent``: Twisted's ``Agent`` on a running reactor, what a sender on the
  loop thread would run (the ``loop-http`` probe of ``bench/contention.py``):
  the reactor thread's CPU time, its polling included.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import receiver, rotated, save, summary
from scrapy_heartbeat.client import HeartbeatClient
from scrapy_heartbeat.payload import heartbeat_body

EXECUTION_ID = "550e8400-e29b-41d4-a716-446655440000"
PROGRESS = {
    "total_urls": 20000,
    "crawled_urls": 9000,
    "successful_urls": 8990,
    "failed_urls": 10,
    "current_url": "http://127.0.0.1:8000/p/9000",
    "current_stage": "爬取中 (9000/20000)",
    "data_items": 9000,
    "percentage": 45.0,
    "runtime_seconds": 15.2,
    "start_time": "2026-12-03T09:00:00+00:00",
    "error_count": 0,
}
MODES = ["requests", "requests+timer", "agent"]


def with_requests(api: str, sends: int, watchdog: bool) -> float:
    with HeartbeatClient(api, EXECUTION_ID, "bench") as client:
        client.send("running", PROGRESS)  # the connection, opened outside the timing
        started = time.process_time()
        for _ in range(sends):
            result = client.send("running", PROGRESS, watchdog=watchdog)
            if not result.ok:
                raise SystemExit(f"beat failed: {result.message}")
        return (time.process_time() - started) / sends


def with_agent(api: str, sends: int) -> float:
    """In a child process: a reactor can run once per process."""
    import subprocess

    done = subprocess.run(
        [sys.executable, __file__, "--agent-child", api, str(sends)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def agent_child(api: str, sends: int) -> None:
    from twisted.internet import defer, reactor, task
    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers

    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
    headers = Headers(
        {b"Content-Type": [b"application/json"], b"User-Agent": [b"scrapy-heartbeat"]}
    )
    url = f"{api}/api/v1/monitoring/heartbeat".encode()

    async def post() -> None:
        body = heartbeat_body(EXECUTION_ID, "bench", "running", PROGRESS)
        producer = FileBodyProducer(io.BytesIO(json.dumps(body, ensure_ascii=False).encode()))
        response = await agent.request(b"POST", url, headers, producer)
        reply = json.loads(await readBody(response))
        if reply.get("status") != "ok":
            raise SystemExit(f"beat failed: {reply}")

    async def run() -> None:
        await post()  # the connection, opened outside the timing
        started = time.process_time()
        for _ in range(sends):
            await post()
        print((time.process_time() - started) / sends, flush=True)  # react() exits

    def main(_: Any) -> Any:
        return defer.ensureDeferred(run())

    task.react(main)


def main() -> int:
    if sys.argv[1:2] == ["--agent-child"]:
        agent_child(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    with receiver() as api:
        for n in range(args.rounds):
            for mode in rotated(MODES, n):
                if mode == "agent":
                    per_send = with_agent(api.url, args.sends)
                else:
                    per_send = with_requests(api.url, args.sends, watchdog=mode != "requests")
                seconds[mode].append(per_send)
                print(
                    f"round {n + 1}/{args.rounds} {mode:15} {per_send * 1e6:7.0f} µs CPU per beat"
                )
    print(f"\nCPU per beat, {args.sends} beats per round, {args.rounds} rounds, median (min–max):")
    report: dict[str, Any] = {"settings": vars(args), "modes": {}}
    for mode in MODES:
        micro = [s * 1e6 for s in seconds[mode]]
        report["modes"][mode] = {"cpu_us_median": statistics.median(micro), "cpu_us": micro}
        print(f"  {mode:15} {summary(micro, 0)} µs")
    print(f"saved {save('send_cost', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
