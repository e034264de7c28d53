"""One execution, many processes: workers on one scrapy-redis queue, shards
with shared counters in Redis, and JOBDIR crawls paused and resumed.

Real parts only: Debian's ``redis-server`` (the ``redis_server`` fixture),
the real scrapy-redis scheduler and dupe filter, real crawl processes and a
local site whose truth is known (:mod:`tests.fleet`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from scrapy_heartbeat.settings import DEFAULTS
from tests.conftest import EXECUTION_ID
from tests.crawl import CrawlResult, RunningCrawl, wait_for
from tests.fleet import Truth, fleet_site
from tests.redis_server import RedisServer
from tests.servers import HeartbeatServer, SiteServer

FINAL = ("completed", "failed")
WORKER_FINISHED = DEFAULTS["HEARTBEAT_STAGE_LABELS"]["worker_finished"]


@pytest.fixture
def site() -> Iterator[tuple[SiteServer, Truth]]:
    server, truth = fleet_site()
    yield server, truth
    server.stop()


def heartbeat_settings(server: HeartbeatServer, container: str, **more: Any) -> dict[str, Any]:
    return {
        "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
        "HEARTBEAT_API_BASE_URL": server.url,
        "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
        "HEARTBEAT_CONTAINER_ID": container,
        "HEARTBEAT_INTERVAL": 1.0,
        "HEARTBEAT_MIN_INTERVAL": 0.1,
        **more,
    }


def redis_queue_settings(redis_server: RedisServer) -> dict[str, Any]:
    return {
        "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
        "SCHEDULER_PERSIST": True,  # workers share the queue: none may flush it
        "REDIS_URL": redis_server.url,
        "CONCURRENT_REQUESTS": 4,
        "RETRY_TIMES": 2,
    }


def start_worker(
    site: SiteServer,
    settings: dict[str, Any],
    *,
    spider: str = "tests.spiders.FleetSpider",
    args: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> RunningCrawl:
    crawl = {"spider": spider, "settings": settings, "args": {"site": site.url, **(args or {})}}
    return RunningCrawl([crawl], settings=settings, env=env)


def beats_of(server: HeartbeatServer, container: str) -> list[dict[str, Any]]:
    return [b for b in server.bodies() if b["container_id"] == container]


def progress_of(body: dict[str, Any]) -> dict[str, int]:
    p = body["progress"]
    return {k: p[k] for k in Truth.__dataclass_fields__} | {"crawled_urls": p["crawled_urls"]}


def assert_one_ending(server: HeartbeatServer, expected: str = "completed") -> dict[str, Any]:
    """Exactly one final status, and nothing after it: no worker ended the
    execution while another still crawled."""
    bodies = server.bodies()
    finals = [i for i, b in enumerate(bodies) if b.get("status") in FINAL]
    assert len(finals) == 1, [(b["container_id"], b.get("status")) for b in bodies]
    assert finals[0] == len(bodies) - 1, "a beat arrived after the execution ended"
    final = bodies[-1]
    assert final["status"] == expected, final
    return final


def assert_execution_numbers(server: HeartbeatServer, truth: Truth) -> None:
    """Every beat of every worker carries execution-wide numbers: never more
    than the truth (nothing counted twice), crawled never above total."""
    for body in server.bodies():
        p = body["progress"]
        assert p["crawled_urls"] == p["successful_urls"] + p["failed_urls"]
        assert p["crawled_urls"] <= p["total_urls"] <= truth.total_urls, body
        assert p["data_items"] <= truth.data_items, body


def all_items(results: list[CrawlResult]) -> list[str]:
    return sorted(item["url"] for r in results for item in r.items)


def test_three_workers_on_one_scrapy_redis_queue(
    heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    server, truth = fleet_site(delay=0.05)
    settings = redis_queue_settings(redis_server)
    workers = [start_worker(server, {**settings, **heartbeat_settings(heartbeat_server, "w0")})]
    # the others join once there is work in the queue (else they close at once, idle)
    wait_for(lambda: len(heartbeat_server.bodies()) >= 2, what="w0's second beat")
    workers += [
        start_worker(server, {**settings, **heartbeat_settings(heartbeat_server, f"w{n}")})
        for n in (1, 2)
    ]
    results = [w.finish() for w in workers]
    server.stop()
    for result in results:
        assert result.returncode == 0, result.log[-3000:]
        assert result.stats.get("scheduler/dequeued/redis", 0) > 0 or result.items == []
    items = all_items(results)
    assert len(items) == len(set(items)) == truth.data_items  # nothing lost, nothing twice
    final = assert_one_ending(heartbeat_server)
    assert progress_of(final) == truth.as_progress()
    assert final["progress"]["percentage"] == 100.0
    assert_execution_numbers(heartbeat_server, truth)
    # several workers really downloaded: a URL queued by one, fetched by another
    assert sum(1 for r in results if r.items) >= 2
    for n in range(3):
        last = beats_of(heartbeat_server, f"w{n}")[-1]
        if last is not final:
            assert last["status"] == "running"
            assert last["progress"]["current_stage"].startswith(WORKER_FINISHED)


def test_workers_that_never_close_complete_when_stopped_after_the_queue_drains(
    site: tuple[SiteServer, Truth], heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    """scrapy-redis's default: idle workers wait for more work until the
    orchestrator stops them (SIGTERM, reason ``shutdown``). The work is done:
    the execution is ``completed``, not ``failed``."""
    server, truth = site
    workers = [
        start_worker(
            server,
            {**redis_queue_settings(redis_server), **heartbeat_settings(heartbeat_server, f"w{n}")},
            args={"never_close": "1"},
        )
        for n in range(3)
    ]

    def drained() -> bool:
        bodies = heartbeat_server.bodies()
        return bool(bodies) and progress_of(bodies[-1]) == truth.as_progress()

    wait_for(drained, what="the execution to reach its truth")
    assert all(w.process.poll() is None for w in workers), "a never-closing worker closed"
    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)
    results = [w.finish() for w in workers]
    assert all(r.returncode == 0 and r.reason == "shutdown" for r in results)
    final = assert_one_ending(heartbeat_server, "completed")
    assert progress_of(final) == truth.as_progress()
    assert len(all_items(results)) == truth.data_items


def test_a_worker_scaled_down_mid_crawl_does_not_end_the_execution(
    heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    server, truth = fleet_site(delay=0.1)  # slow enough to stop a worker mid-crawl
    settings = {**redis_queue_settings(redis_server), "CONCURRENT_REQUESTS": 1}
    workers = [start_worker(server, {**settings, **heartbeat_settings(heartbeat_server, "w0")})]
    wait_for(lambda: len(beats_of(heartbeat_server, "w0")) >= 2, what="w0 to beat twice")
    workers.append(start_worker(server, {**settings, **heartbeat_settings(heartbeat_server, "w1")}))
    wait_for(lambda: len(beats_of(heartbeat_server, "w1")) >= 2, what="w1 to beat twice")
    workers[0].process.send_signal(signal.SIGTERM)
    stopped = workers[0].finish()
    assert stopped.reason == "shutdown"
    last = beats_of(heartbeat_server, "w0")[-1]
    assert last["status"] == "running", last  # not failed: the execution goes on
    assert last["progress"]["current_stage"].startswith(WORKER_FINISHED)
    assert not any(b.get("status") in FINAL for b in heartbeat_server.bodies())
    rest = workers[1].finish()
    assert rest.returncode == 0 and rest.reason == "finished"
    final = assert_one_ending(heartbeat_server, "completed")
    assert final["container_id"] == "w1"
    p = final["progress"]
    # what the stopped worker had in flight as it stopped is lost by
    # scrapy-redis (popped, never downloaded), so the truth is a bound here
    assert p["data_items"] == len(all_items([stopped, rest])) <= truth.data_items
    assert p["crawled_urls"] == p["successful_urls"] + p["failed_urls"] <= p["total_urls"]
    assert_execution_numbers(heartbeat_server, truth)
    server.stop()


def test_a_sigkilled_worker_cannot_hold_the_execution_open(
    heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    """A worker killed without a word (OOM, SIGKILL) is gone once silent for
    3 intervals: the last live worker ends the execution."""
    server, truth = fleet_site(delay=0.1)
    settings = {**redis_queue_settings(redis_server), "CONCURRENT_REQUESTS": 1}
    survivor = start_worker(server, {**settings, **heartbeat_settings(heartbeat_server, "w0")})
    wait_for(lambda: len(beats_of(heartbeat_server, "w0")) >= 2, what="w0 to beat twice")
    doomed = start_worker(server, {**settings, **heartbeat_settings(heartbeat_server, "w1")})
    wait_for(lambda: len(beats_of(heartbeat_server, "w1")) >= 2, what="w1 to beat twice")
    doomed.process.kill()
    killed_at = time.time()
    assert doomed.finish().returncode == -signal.SIGKILL
    result = survivor.finish()
    assert result.returncode == 0 and result.reason == "finished"
    final = assert_one_ending(heartbeat_server, "completed")
    assert final["container_id"] == "w0"
    assert heartbeat_server.received[-1].at - killed_at > 3 * 1.0  # w1 was stale by then
    assert final["progress"]["crawled_urls"] <= final["progress"]["total_urls"] <= truth.total_urls
    server.stop()


def test_heartbeat_shared_false_keeps_each_worker_to_itself(
    site: tuple[SiteServer, Truth], heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    server, truth = site
    result = start_worker(
        server,
        {
            **redis_queue_settings(redis_server),
            **heartbeat_settings(heartbeat_server, "w0", HEARTBEAT_SHARED=False),
        },
    ).finish()
    assert result.returncode == 0
    assert not redis_server.client().keys("heartbeat:*")
    final = heartbeat_server.bodies()[-1]
    assert final["status"] == "completed"
    assert progress_of(final) == truth.as_progress()  # one worker: its own numbers are the truth


def test_shared_keys_expire(
    site: tuple[SiteServer, Truth], heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    server, _ = site
    start_worker(
        server,
        {
            **redis_queue_settings(redis_server),
            **heartbeat_settings(heartbeat_server, "w0", HEARTBEAT_REDIS_TTL=1234),
        },
    ).finish()
    client = redis_server.client()
    keys = client.keys(f"heartbeat:{{{EXECUTION_ID}}}:*")
    # totals and this worker's totals; the workers' hash went with the last worker out
    assert len(keys) == 2
    assert all(0 < client.ttl(key) <= 1234 for key in keys)


def test_a_worker_without_the_package_loses_no_request(
    site: tuple[SiteServer, Truth], heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    """A rolling upgrade: one worker's image lacks scrapy-heartbeat. It reads
    the requests the other queued (their marker is plain data) and queues
    requests without a marker, which the other counts as they come off the
    queue."""
    server, truth = site
    settings = {**redis_queue_settings(redis_server), "CONCURRENT_REQUESTS": 2}
    with_package = start_worker(server, {**settings, **heartbeat_settings(heartbeat_server, "w0")})
    wait_for(lambda: bool(heartbeat_server.bodies()), what="the first beat")
    without = start_worker(server, settings, env={"HEARTBEAT_TEST_WITHOUT_PACKAGE": "1"})
    results = [with_package.finish(), without.finish()]
    for result in results:
        assert result.returncode == 0, result.log[-3000:]
        assert "ModuleNotFoundError" not in result.log
        assert "Unable to deserialize" not in result.log
    assert results[1].items, "the worker without the package did no work"
    items = all_items(results)
    assert len(items) == len(set(items)) == truth.data_items  # nothing lost
    final = assert_one_ending(heartbeat_server)
    assert final["progress"]["crawled_urls"] <= final["progress"]["total_urls"]
    assert final["progress"]["data_items"] == len(results[0].items)


def test_shards_share_counters_through_heartbeat_redis_url(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    """Each container crawls a shard with Scrapy's own scheduler; Redis holds
    only the execution's counters. Redis goes down mid-crawl and comes back:
    the crawl is untouched, beats meanwhile carry the worker's own numbers
    (one WARNING), and nothing is counted twice."""
    pages_site.delay = 0.03  # type: ignore[attr-defined]
    shards = [
        start_worker(
            pages_site,
            {
                **heartbeat_settings(
                    heartbeat_server, f"shard{n}", HEARTBEAT_REDIS_URL=redis_server.url
                ),
                "CONCURRENT_REQUESTS": 1,
            },
            spider="tests.spiders.ShardSpider",
            args={"first": str(60 * n), "pages": "60"},
        )
        for n in range(2)
    ]
    wait_for(lambda: len(beats_of(heartbeat_server, "shard1")) >= 1, what="shard1's first beat")
    redis_server.stop()
    outage = len(heartbeat_server.bodies())
    wait_for(lambda: len(heartbeat_server.bodies()) >= outage + 2, what="beats during the outage")
    redis_server.start()
    results = [s.finish() for s in shards]
    for result in results:
        assert result.returncode == 0, result.log[-3000:]
        assert len(result.items) == 60
    logs = "".join(r.log for r in results)
    assert logs.count("shared counters in Redis unavailable") <= 2  # once per worker
    assert "shared counters in Redis unavailable" in logs
    final = assert_one_ending(heartbeat_server)
    p = final["progress"]
    assert (p["total_urls"], p["crawled_urls"], p["successful_urls"]) == (120, 120, 120)
    assert p["data_items"] == 120
    for body in heartbeat_server.bodies():
        assert body["progress"]["total_urls"] <= 120


# -- JOBDIR: pause and resume ---------------------------------------------------


def jobdir_settings(server: HeartbeatServer, jobdir: Path) -> dict[str, Any]:
    return {
        **heartbeat_settings(server, "job", HEARTBEAT_INTERVAL=0.3),
        "JOBDIR": str(jobdir),
        "CONCURRENT_REQUESTS": 1,
        "DOWNLOAD_DELAY": 0.05,
    }


def pause_after(running: RunningCrawl, server: HeartbeatServer, crawled: int) -> CrawlResult:
    def far_enough() -> bool:
        bodies = server.bodies()
        return bool(bodies) and bodies[-1]["progress"]["crawled_urls"] >= crawled

    wait_for(far_enough, what=f"{crawled} URLs crawled")
    running.process.send_signal(signal.SIGTERM)  # as Ctrl-C or docker stop would
    return running.finish()


def test_jobdir_pause_and_resume_continue_one_crawl(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer, tmp_path: Path
) -> None:
    settings = jobdir_settings(heartbeat_server, tmp_path / "job")
    args = {"pages": "40"}
    first = pause_after(
        start_worker(pages_site, settings, spider="tests.spiders.PagesSpider", args=args),
        heartbeat_server,
        8,
    )
    assert first.returncode == 0 and first.reason == "shutdown"
    paused = heartbeat_server.bodies()[-1]
    assert paused["status"] == "paused", paused
    before = paused["progress"]
    assert 8 <= before["crawled_urls"] < 40
    assert before["data_items"] == len(first.items)
    assert first.stats["heartbeat/final_status"] == "paused"
    count = len(heartbeat_server.bodies())

    second = start_worker(pages_site, settings, spider="tests.spiders.PagesSpider", args=args)
    second = second.finish()
    assert second.returncode == 0 and second.reason == "finished"
    assert "resuming the counters of JOBDIR" in second.log
    resumed = heartbeat_server.bodies()[count:]
    start = resumed[0]["progress"]
    assert start["crawled_urls"] >= before["crawled_urls"]
    assert start["total_urls"] >= before["total_urls"]
    assert start["start_time"] == before["start_time"]
    assert start["runtime_seconds"] >= before["runtime_seconds"]
    final = resumed[-1]
    assert final["status"] == "completed"
    p = final["progress"]
    assert (p["total_urls"], p["crawled_urls"], p["successful_urls"]) == (40, 40, 40)
    assert p["data_items"] == len(first.items) + len(second.items) == 40
    assert p["start_time"] == before["start_time"]
    # running time summed over the runs, not the time between them
    assert p["runtime_seconds"] >= before["runtime_seconds"]
    assert p["runtime_seconds"] <= first.elapsed + second.elapsed


def test_jobdir_resumed_without_the_package_crawls_what_was_queued(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer, tmp_path: Path
) -> None:
    """The first run queued its requests on disk with the marker in their
    meta; a run without the package must read them all back."""
    settings = jobdir_settings(heartbeat_server, tmp_path / "job")
    args = {"pages": "30"}
    first = pause_after(
        start_worker(pages_site, settings, spider="tests.spiders.PagesSpider", args=args),
        heartbeat_server,
        5,
    )
    assert first.reason == "shutdown"
    plain = {k: v for k, v in settings.items() if not k.startswith(("HEARTBEAT_", "EXTENSIONS"))}
    second = start_worker(
        pages_site,
        plain,
        spider="tests.spiders.PagesSpider",
        args=args,
        env={"HEARTBEAT_TEST_WITHOUT_PACKAGE": "1"},
    ).finish(timeout=90)
    assert second.returncode == 0 and second.reason == "finished", second.log[-3000:]
    assert "Unable to deserialize" not in second.log and "ModuleNotFoundError" not in second.log
    crawled = [item["n"] for item in first.items + second.items]
    assert sorted(crawled) == list(range(30))


def test_docker_stop_with_redis_hanging_still_delivers_the_final_beat(
    pages_site: SiteServer, heartbeat_server: HeartbeatServer, redis_server: RedisServer
) -> None:
    """Redis stalls (DEBUG SLEEP) as the worker gets SIGTERM: each Redis
    call keeps to its share of HEARTBEAT_SHUTDOWN_TIMEOUT, so the final beat
    goes out in time. The worker cannot know whether others still crawl: it
    says it finished, and never ends the execution."""
    pages_site.delay = 0.05  # type: ignore[attr-defined]
    worker = start_worker(
        pages_site,
        {
            **heartbeat_settings(heartbeat_server, "stopped", HEARTBEAT_REDIS_URL=redis_server.url),
            "CONCURRENT_REQUESTS": 1,
        },
        spider="tests.spiders.ShardSpider",
        args={"first": "0", "pages": "1000"},
    )
    wait_for(lambda: len(beats_of(heartbeat_server, "stopped")) >= 2, what="two beats")
    sleeper = redis.Redis.from_url(redis_server.url, socket_timeout=30)
    stall = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", 8))
    stall.start()
    time.sleep(0.3)
    stopped_at = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    result = worker.finish(timeout=60)
    took = time.monotonic() - stopped_at
    stall.join()
    sleeper.close()
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["heartbeat/final_delivered"] is True, result.log[-3000:]
    assert took < DEFAULTS["HEARTBEAT_SHUTDOWN_TIMEOUT"] + 2, took
    final = beats_of(heartbeat_server, "stopped")[-1]
    assert final["status"] == "running"  # finished this worker, not the execution
    assert "Redis is unreachable at this worker's close" in result.log
