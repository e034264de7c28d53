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
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy_heartbeat._scrapy import engine_of, is_scrapy_redis, queue_key, scheduler_of
from scrapy_heartbeat.counts import COUNTER_NAMES, MAX_COUNT, MAX_TIME_LENGTH, Counts
from scrapy_heartbeat.ids import new_worker_id
from scrapy_heartbeat.redact import describe

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from scrapy_heartbeat.settings import HeartbeatConfig

logger = logging.getLogger(__name__)

#: A worker silent for this many of its intervals is gone.
STALE_INTERVALS = 3

_EXCHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local names = {NAMES}
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
local totals = redis.call('HMGET', KEYS[1], NAMES, 'start_ms', 'start_time', 'failures')
return {totals[1], totals[2], totals[3], totals[4], totals[5], totals[6], totals[7],
  totals[8], live, queued}
""".replace("NAMES", ", ".join(f"'{name}'" for name in COUNTER_NAMES))


@dataclass(frozen=True)
class ExecutionView:
    """The execution's numbers as one exchange read them."""

    counts: Counts
    start_ms: int
    start_time: str
    failures: int  # workers that ended in failure (not a shutdown)
    live_others: int  # other workers that beat within the liveness window
    queued: int | None  # requests left in the shared queue; None: not known


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
        # One execution is one id, however its workers spell the hex digits
        # (the receiver lower-cases it too).
        prefix = f"heartbeat:{{{execution_id.lower()}}}"
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
        within: float | None = None,
    ) -> ExecutionView | None:
        """Write this worker's totals, read the execution's; None when Redis
        cannot be reached, or does not answer ``within`` seconds (one WARNING
        per outage). Worker thread only."""
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
            reply = self._call(args, within)
            view = _view(reply, start_ms, start_time)
        except Exception as exc:  # redis.RedisError, a stall, what Redis holds that is not ours
            if not self._down:
                self._down = True
                logger.warning(
                    "scrapy-heartbeat: shared counters in Redis unavailable (%(error)s); "
                    "beats report this worker's own numbers until Redis is back",
                    {"error": describe(exc)},
                    extra=self._extra,
                )
            return None
        if self._down:
            self._down = False
            logger.info("scrapy-heartbeat: shared counters in Redis are back", extra=self._extra)
        return view

    def _call(self, args: list[Any], within: float | None) -> Any:
        if within is None:
            return self._script(keys=self.keys, args=args, client=self.client)
        # The close's budget is shared with the final beat: a Redis that
        # hangs must not spend it all. The call goes on in its own thread,
        # abandoned (its socket times out by itself).
        calling: Future[Any] = Future()

        def call() -> None:
            try:
                calling.set_result(self._script(keys=self.keys, args=args, client=self.client))
            except BaseException as exc:
                calling.set_exception(exc)

        threading.Thread(target=call, name="scrapy-heartbeat-redis", daemon=True).start()
        try:
            return calling.result(timeout=within)
        except FutureTimeout:
            raise TimeoutError(f"no answer within {within:.3g}s") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            self.client.close()
            # A client made with Redis(**params), not from_url, leaves its
            # pool's sockets open (a ResourceWarning at exit).
            self.client.connection_pool.disconnect()


def _view(reply: Any, start_ms: int, start_time: str) -> ExecutionView:
    """The exchange's reply; ValueError for one this script would not give
    (a key another program wrote over)."""
    values = [_text(v) for v in reply]
    if len(values) != 10:
        raise ValueError(f"a reply of {len(values)} values")
    total, successful, failed, items, errors = (_count(v) for v in values[:5])
    queued = int(values[9])
    # A URL one worker accepted may be downloaded by another before the
    # first one's next beat: until then total lags; it is never below crawled.
    total = max(total, successful + failed)
    return ExecutionView(
        counts=Counts(total, successful, failed, items, errors),
        start_ms=int(values[5] or start_ms),
        start_time=values[6][:MAX_TIME_LENGTH] or start_time,
        failures=_count(values[7]),
        live_others=_count(values[8]),
        queued=None if queued < 0 else queued,
    )


def _count(value: str) -> int:
    """A counter Redis holds; garbage is a ValueError, a negative number 0."""
    return min(max(int(value or 0), 0), MAX_COUNT)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None or value is False else str(value)


def redis_timeout(config: HeartbeatConfig) -> float:
    """Each Redis call's bound, seconds. An exchange takes a millisecond; one
    that hangs must leave the final beat most of the shutdown's budget
    (``docker stop`` at ``HEARTBEAT_SHUTDOWN_TIMEOUT``), even when it began
    just before the SIGTERM."""
    return max(0.1, min(config.timeout, config.shutdown_timeout / 4, 5.0))


def shared_wanted(crawler: Crawler, config: HeartbeatConfig) -> bool:
    """Whether this worker is one of a shared execution: ``HEARTBEAT_SHARED``,
    else scrapy-redis's scheduler or a ``HEARTBEAT_REDIS_URL`` (even one
    refused: the user meant a fleet)."""
    if config.shared is not None:
        return config.shared
    scheduler = scheduler_of(engine_of(crawler))
    return is_scrapy_redis(scheduler) or config.redis_url is not None or config.redis_url_refused


def open_shared_counters(
    crawler: Crawler, config: HeartbeatConfig, execution_id: str, worker: str
) -> SharedCounters | None:
    """Execution-wide counters, with scrapy-redis's scheduler (in its Redis)
    or ``HEARTBEAT_REDIS_URL``, for a worker :func:`shared_wanted` says is
    one of a shared execution; None when impossible (logged). ``worker``: a
    resumed worker's id, or ""."""
    if config.redis_url_refused:
        return None  # logged by the settings
    scheduler = scheduler_of(engine_of(crawler))
    on_redis_queue = is_scrapy_redis(scheduler)
    try:
        client = connect(crawler.settings, config.redis_url, redis_timeout(config))
        shared = SharedCounters(
            client,
            execution_id,
            worker or new_worker_id(config.container_id),
            ttl=config.redis_ttl,
            stale_after=STALE_INTERVALS * config.interval,
            queue=queue_key(scheduler) if on_redis_queue else None,
            crawler=crawler,
        )
    except ImportError:
        logger.error(
            "scrapy-heartbeat: shared counters need redis-py; pip install "
            "'scrapy-heartbeat[redis]', or set HEARTBEAT_SHARED = False "
            "(each worker reports its own numbers meanwhile)",
            extra={"crawler": crawler},
        )
        return None
    except Exception as exc:  # a bad REDIS_PARAMS, say: report this worker's own numbers
        logger.error(
            "scrapy-heartbeat: cannot set up shared counters in Redis (%(error)s); "
            "check REDIS_URL/REDIS_PARAMS or HEARTBEAT_REDIS_URL, or set HEARTBEAT_SHARED = "
            "False (each worker reports its own numbers meanwhile)",
            {"error": describe(exc)},
            extra={"crawler": crawler},
        )
        return None
    logger.info(
        "scrapy-heartbeat: execution-wide counters in Redis, as worker %(worker)s",
        {"worker": shared.worker_id},
        extra={"crawler": crawler},
    )
    return shared
