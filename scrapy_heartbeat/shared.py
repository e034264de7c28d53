"""Execution-wide counters in Redis, for an execution spread over workers.

Several workers (containers, processes) of one execution each count what they
accept and download, exactly, in process (:mod:`scrapy_heartbeat.progress`).
At each beat a worker writes its own running totals into Redis and reads the
execution's back, in one atomic Lua script: one round trip, O(1) commands per
beat, never per URL, and always on the sender's worker thread.

A worker writes its *absolute* totals, and the script adds their change since
its last write to the execution's: writing the same totals twice changes
nothing, so a beat whose reply was lost, or that Redis missed while down, is
never counted twice, and nothing is lost (the next beat carries it).

Keys, namespaced by execution id (the ``{...}`` hash tag keeps an execution's
keys in one Redis Cluster slot), each expiring ``HEARTBEAT_REDIS_TTL`` seconds
after the last beat that touched it:

* ``heartbeat:{<id>}:totals`` (hash): the execution's counters, its earliest
  ``start_time`` and the number of workers that ended in failure;
* ``heartbeat:{<id>}:workers`` (hash): worker id -> last beat (Redis time, ms);
  a worker silent for 3 intervals is gone, so a SIGKILLed one cannot hold the
  execution open;
* ``heartbeat:{<id>}:worker:<worker id>`` (hash): that worker's last totals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

#: A worker silent for this many of its intervals is gone.
STALE_INTERVALS = 3
COUNTER_NAMES = ("total", "successful", "failed", "items", "errors")

_EXCHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local names = {'total', 'successful', 'failed', 'items', 'errors'}
for i, name in ipairs(names) do
  local new = tonumber(ARGV[7 + i])
  local old = tonumber(redis.call('HGET', KEYS[3], name) or '0')
  if new ~= old then
    redis.call('HINCRBY', KEYS[1], name, new - old)
    redis.call('HSET', KEYS[3], name, new)
  end
end
local start = redis.call('HGET', KEYS[1], 'start_ms')
if not start or tonumber(ARGV[6]) < tonumber(start) then
  redis.call('HSET', KEYS[1], 'start_ms', ARGV[6], 'start_time', ARGV[7])
end
if ARGV[5] == '1' and redis.call('HGET', KEYS[3], 'ended_failed') ~= '1' then
  redis.call('HSET', KEYS[3], 'ended_failed', '1')
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], now)
end
local live = 0
local seen = redis.call('HGETALL', KEYS[2])
for i = 1, #seen, 2 do
  if seen[i] ~= ARGV[1] and now - tonumber(seen[i + 1]) <= tonumber(ARGV[2]) then
    live = live + 1
  end
end
local queued = -1
if #KEYS >= 4 then
  local kind = redis.call('TYPE', KEYS[4])['ok']
  if kind == 'list' then queued = redis.call('LLEN', KEYS[4])
  elseif kind == 'zset' then queued = redis.call('ZCARD', KEYS[4])
  elseif kind == 'set' then queued = redis.call('SCARD', KEYS[4])
  elseif kind == 'none' then queued = 0 end
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3])) end
local totals = redis.call('HMGET', KEYS[1], 'total', 'successful', 'failed', 'items',
  'errors', 'start_ms', 'start_time', 'failures')
return {totals[1], totals[2], totals[3], totals[4], totals[5], totals[6], totals[7],
  totals[8], live, queued}
"""


@dataclass(frozen=True)
class Counts:
    total: int = 0
    successful: int = 0
    failed: int = 0
    items: int = 0
    errors: int = 0

    @property
    def crawled(self) -> int:
        return self.successful + self.failed


@dataclass(frozen=True)
class ExecutionView:
    """The execution's numbers as one exchange read them."""

    counts: Counts
    start_ms: int
    start_time: str
    failures: int  # workers that ended in failure (not a shutdown)
    live_others: int  # other workers that beat within the liveness window
    queued: int | None  # requests left in the shared queue; None: not known


def is_scrapy_redis(scheduler: Any) -> bool:
    return type(scheduler).__module__.split(".", 1)[0] == "scrapy_redis"


def queue_key(scheduler: Any) -> str | None:
    """The Redis key of a scrapy-redis scheduler's request queue."""
    key = getattr(getattr(scheduler, "queue", None), "key", None)
    return key if isinstance(key, str) and key else None


def connect(settings: BaseSettings, url: str | None, timeout: float) -> Any:
    """A Redis client: ``url`` (``HEARTBEAT_REDIS_URL``), else scrapy-redis's
    own settings (``REDIS_URL``, ``REDIS_HOST``/``REDIS_PORT``,
    ``REDIS_PARAMS``), with our bounded timeouts and no retries (the next beat
    is the retry). Raises ImportError without redis-py."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    bounded = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if url:
        return redis.Redis.from_url(url, **bounded)
    try:
        from scrapy_redis import connection, defaults
    except ImportError:  # HEARTBEAT_SHARED = True with no scrapy-redis: its settings, read alike
        params: dict[str, Any] = {"host": "localhost", "port": 6379}
        params.update(settings.getdict("REDIS_PARAMS"))
        for name, param in (("REDIS_URL", "url"), ("REDIS_HOST", "host"), ("REDIS_PORT", "port")):
            if settings.get(name):
                params[param] = settings.get(name)
        params.update(bounded)
        given = params.pop("url", None)
        return redis.Redis.from_url(given, **params) if given else redis.Redis(**params)
    # What scrapy_redis.connection.get_redis_from_settings() builds, with our timeouts.
    params = {**defaults.REDIS_PARAMS, **settings.getdict("REDIS_PARAMS")}
    for source, dest in connection.SETTINGS_PARAMS_MAP.items():
        if settings.get(source):
            params[dest] = settings.get(source)
    params.update(bounded)
    return connection.get_redis(**params)


def new_worker_id(container_id: str) -> str:
    return f"{container_id}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class SharedCounters:
    """One worker's view of its execution's counters in Redis."""

    def __init__(
        self,
        client: Any,
        execution_id: str,
        worker_id: str,
        *,
        ttl: int,
        stale_after: float,
        queue: str | None = None,
        crawler: Crawler | None = None,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.ttl = ttl
        self.stale_ms = int(stale_after * 1000)
        prefix = f"heartbeat:{{{execution_id}}}"
        self.keys = [f"{prefix}:totals", f"{prefix}:workers", f"{prefix}:worker:{worker_id}"]
        if queue is not None:
            self.keys.append(queue)
        self._script = client.register_script(_EXCHANGE)
        self._extra = {"crawler": crawler} if crawler is not None else {}
        self._down = False

    def exchange(
        self,
        mine: Counts,
        start_ms: int,
        start_time: str,
        *,
        closing: bool = False,
        failed: bool = False,
    ) -> ExecutionView | None:
        """Write this worker's totals, read the execution's; None when Redis
        cannot be reached (one WARNING per outage). Worker thread only."""
        args = [
            self.worker_id,
            self.stale_ms,
            self.ttl,
            int(closing),
            int(failed),
            start_ms,
            start_time,
            *(getattr(mine, name) for name in COUNTER_NAMES),
        ]
        try:
            reply = self._script(keys=self.keys, args=args, client=self.client)
        except Exception as exc:  # redis.RedisError, and whatever a broken reply raises
            if not self._down:
                self._down = True
                logger.warning(
                    "scrapy-heartbeat: shared counters in Redis unavailable (%(error)s); "
                    "beats report this worker's own numbers until Redis is back",
                    {"error": _describe(exc)},
                    extra=self._extra,
                )
            return None
        if self._down:
            self._down = False
            logger.info("scrapy-heartbeat: shared counters in Redis are back", extra=self._extra)
        values = [_text(v) for v in reply]
        total, successful, failed_urls, items, errors = (int(v or 0) for v in values[:5])
        queued = int(values[9])
        # A URL one worker accepted may be downloaded by another before the
        # first one's next beat: until then total lags; it is never below crawled.
        total = max(total, successful + failed_urls)
        return ExecutionView(
            counts=Counts(total, successful, failed_urls, items, errors),
            start_ms=int(values[5] or start_ms),
            start_time=values[6] or start_time,
            failures=int(values[7] or 0),
            live_others=int(values[8]),
            queued=None if queued < 0 else queued,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            self.client.close()
            # A client made with Redis(**params), not from_url, leaves its
            # pool's sockets open (a ResourceWarning at exit).
            self.client.connection_pool.disconnect()


def final_status(
    own: str, reason: str, view: ExecutionView, local_queued: int | None
) -> tuple[str, bool]:
    """The status a closing worker sends, and whether it is only this worker
    that finished (others still crawl). ``own``: the status this worker's own
    close would give (``completed``, ``failed`` or ``paused``)."""
    if view.live_others:
        return "running", True
    if view.failures:
        return "failed", False
    if own == "completed":
        return "completed", False
    queued = view.queued if view.queued is not None else local_queued
    if reason == "shutdown" and queued == 0 and view.counts.crawled == view.counts.total:
        return "completed", False  # stopped by the orchestrator once the work was done
    return own, False


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None or value is False else str(value)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
