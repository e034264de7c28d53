"""Every touch of Scrapy's internals, in one place.

Scrapy has no signal for what the counting needs, so this crawler's own
engine components are observed, on the instance (nothing outside this crawler
changes, and their answers pass through untouched). What this relies on, to
check at each Scrapy upgrade (all present from 2.13 to 2.19):

* ``engine.scheduler`` (``engine.slot.scheduler`` / ``engine._slot.scheduler``
  before 2.14) and the scheduler's ``enqueue_request(request) -> bool`` and
  ``next_request()``; its ``__len__`` for what is left queued;
* ``engine._handle_downloader_output(result, request)``, private: what each
  download ended with, after every downloader middleware: the final
  response, a follow-up request (a retry or redirect hop), or the exception
  no middleware handled, including one raised from a middleware's
  ``process_response`` (for example "max redirections reached"). One plain
  call per download; the fallback, a callback on the Deferred of the
  downloader's ``fetch`` (:func:`observe_downloader`), costs more (see
  ``bench/event_cost.py``);
* ``engine.downloader.active``: the requests being downloaded now;
* ``engine._slot.closing``: set before ``spider_closed`` is sent;
* ``engine.paused``: set by ``engine.pause()`` (the telnet console's
  ``engine.pause()``, or a spider's own).

``request_scheduled`` fires *before* the dupe filter and before handlers such
as Scrapy 2.19's ``OffsiteMiddleware`` have had their say, so it cannot tell
acceptance: hence the scheduler's own answer.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.core.scheduler import Scheduler
from twisted.internet.defer import Deferred

from scrapy_heartbeat.progress import META_KEY

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from scrapy_heartbeat.progress import ProgressTracker

logger = logging.getLogger(__name__)


def engine_of(crawler: Crawler) -> Any:
    """The crawler's engine, or None: a crawler driven without one (Scrapy's
    own tests send spider_opened by hand) has none yet."""
    try:
        return getattr(crawler, "engine", None)
    except RuntimeError:  # Scrapy 2.19: "Crawler.engine is not set yet"
        return None


def crawl_running(crawler: Crawler) -> bool:
    """Whether the crawler's engine holds its spider open and is not
    closing it. Scrapy sends ``spider_closed`` once the close began (and
    awaits what its handlers return); after the close the engine has no slot."""
    engine = engine_of(crawler)
    for name in ("_slot", "slot"):
        slot = getattr(engine, name, None)
        if slot is not None:
            return getattr(slot, "closing", None) is None
    return False


def engine_paused(crawler: Crawler) -> bool:
    return bool(getattr(engine_of(crawler), "paused", False))


def is_scrapy_redis(scheduler: Any) -> bool:
    return type(scheduler).__module__.split(".", 1)[0] == "scrapy_redis"


def queue_key(scheduler: Any) -> str | None:
    """The Redis key of a scrapy-redis scheduler's request queue."""
    key = getattr(getattr(scheduler, "queue", None), "key", None)
    return key if isinstance(key, str) and key else None


def local_queued(crawler: Crawler) -> int | None:
    """Requests left in this process's own scheduler; None if not known
    (no engine, a shared queue, a scheduler without a length)."""
    scheduler = scheduler_of(engine_of(crawler))
    if scheduler is None or is_scrapy_redis(scheduler):
        return None
    try:
        return len(scheduler)
    except Exception:  # a closed disk queue, a scheduler without __len__
        return None


def scheduler_of(engine: Any) -> Any:
    """The engine's scheduler, or None."""
    scheduler = getattr(engine, "scheduler", None)  # public in newer Scrapy
    for slot in ("_slot", "slot"):  # Scrapy 2.13; an empty scheduler is falsy
        if scheduler is None:
            scheduler = getattr(getattr(engine, slot, None), "scheduler", None)
    return scheduler


def observe_crawl(engine: Any, tracker: ProgressTracker, jobdir: bool) -> list[str]:
    """Observe this crawler's engine components for ``tracker`` (see the
    module's docstring); returns what could not be observed, to be logged.
    ``jobdir``: the crawl has a ``JOBDIR``."""
    problems = []
    scheduler = scheduler_of(engine)
    # Scrapy's own scheduler keeps what it queues in memory, unless it has a
    # JOBDIR; any other (scrapy-redis, say) may copy it elsewhere, and hand
    # out requests another process queued.
    persists = jobdir or type(scheduler) is not Scheduler
    if scheduler is None or not observe_scheduler(scheduler, tracker, persists):
        problems.append("cannot observe the scheduler; total_urls will stay 0")
    elif not observe_dequeue(scheduler, tracker, persists) and persists:
        problems.append(
            "cannot observe the scheduler's next_request; requests another process "
            "queued will not be counted"
        )
    downloader = getattr(engine, "downloader", None)
    active = getattr(downloader, "active", None)  # the requests it is downloading
    if isinstance(active, Collection):
        tracker.downloading = active
    by_engine = observe_engine(engine, tracker)
    if not by_engine:
        logger.debug(
            "scrapy-heartbeat: the engine has no _handle_downloader_output; "
            "observing outcomes on the downloader's fetch"
        )
    if not by_engine and (downloader is None or not observe_downloader(downloader, tracker)):
        problems.append("cannot observe the downloader; crawled_urls will stay 0")
    return problems


def observe_scheduler(scheduler: Any, tracker: ProgressTracker, persists: bool) -> bool:
    """Report the scheduler's answers to ``tracker``; False if it can't be done.

    Most requests a page yields are duplicates the scheduler turns down; one
    without our marker means nothing to the tracker, so it costs one look.
    ``persists``: the scheduler copies what it queues (``JOBDIR``, a shared
    queue), so markers must be set before it does.
    """
    original: Callable[[Request], bool] | None = getattr(scheduler, "enqueue_request", None)
    if original is None:
        return False

    @functools.wraps(original)
    def enqueue_request(request: Request) -> bool:
        accepted = original(request)
        try:
            if accepted or META_KEY in request.meta:
                tracker.request_enqueued(request, bool(accepted))
        except Exception:  # pragma: no cover - defensive: never break the crawl
            logger.exception("scrapy-heartbeat: could not count %s", request)
        return accepted

    @functools.wraps(original)
    def enqueue_copied_request(request: Request) -> bool:
        chain = None
        try:
            chain = tracker.before_enqueue(request)
        except Exception:  # pragma: no cover - defensive: never break the crawl
            logger.exception("scrapy-heartbeat: could not count %s", request)
        accepted = original(request)
        try:
            tracker.after_enqueue(request, bool(accepted), chain)
        except Exception:  # pragma: no cover - defensive: never break the crawl
            logger.exception("scrapy-heartbeat: could not count %s", request)
        return accepted

    return _replace(
        scheduler, "enqueue_request", enqueue_copied_request if persists else enqueue_request
    )


def observe_engine(engine: Any, tracker: ProgressTracker) -> bool:
    """Report what each download of the crawl ended with to ``tracker``;
    False if this engine has no ``_handle_downloader_output(result, request)``
    (Scrapy 2.13 to 2.19 have it), for :func:`observe_downloader` to do it."""
    original: Callable[[Any, Request], Any] | None = getattr(
        engine, "_handle_downloader_output", None
    )
    if original is None:
        return False
    finished = tracker.download_finished

    @functools.wraps(original)
    def _handle_downloader_output(result: Any, request: Request) -> Any:
        finished(result, request)  # never raises
        return original(result, request)

    return _replace(engine, "_handle_downloader_output", _handle_downloader_output)


def observe_dequeue(scheduler: Any, tracker: ProgressTracker, persists: bool) -> bool:
    """Tell ``tracker`` of each request the scheduler hands out; with
    ``persists``, its queue may hold what another process wrote (an earlier
    run's ``JOBDIR``, a shared queue), to be adopted. False if it can't be
    done."""
    original: Callable[[], Request | None] | None = getattr(scheduler, "next_request", None)
    if original is None:
        return False
    dequeued = tracker.dequeued

    @functools.wraps(original)
    def next_request() -> Request | None:
        request = original()
        if request is not None:
            try:
                dequeued(request, persists)
            except Exception:  # pragma: no cover - defensive: never break the crawl
                logger.exception("scrapy-heartbeat: could not count %s", request)
        return request

    return _replace(scheduler, "next_request", next_request)


def observe_downloader(downloader: Any, tracker: ProgressTracker) -> bool:
    """Report each download's outcome with a callback on the Deferred of the
    downloader's ``fetch``, where :func:`observe_engine` can't; False if it
    can't be done. ``fetch`` keeps its signature (the engine inspects it)."""
    original: Callable[..., Any] | None = getattr(downloader, "fetch", None)
    if original is None:
        return False
    warned = False
    finished = tracker.download_finished

    @functools.wraps(original)
    def fetch(request: Request, *args: Any, **kwargs: Any) -> Any:
        nonlocal warned
        result = original(request, *args, **kwargs)
        if isinstance(result, Deferred):
            result.addBoth(finished, request)
        elif not warned:
            warned = True
            logger.warning(
                "scrapy-heartbeat: the downloader's fetch() returned %s, not a Deferred; "
                "crawled_urls will stay 0 (please report your Scrapy version)",
                type(result).__name__,
            )
        return result

    return _replace(downloader, "fetch", fetch)


def _replace(component: Any, name: str, method: Callable[..., Any]) -> bool:
    try:
        setattr(component, name, method)
    except (AttributeError, TypeError):
        return False
    return True


#: Scrapy's own commands that are not crawls: they download for a person
#: debugging (or not at all) and report nothing. Any other command, a
#: project's own included, is taken for a crawl.
DEBUGGING_COMMANDS = frozenset(
    {"fetch", "parse", "shell", "check", "bench", "view", "list", "settings", "version",
     "genspider", "startproject", "edit"}
)  # fmt: skip
#: Modules that run a Scrapy command: ``python -m scrapy.cmdline fetch``,
#: scrapyd's ``python -m scrapyd.runner crawl``.
_COMMAND_MODULES = frozenset({"scrapy", "scrapy.cmdline", "scrapyd.runner"})
#: Interpreter options that take a value (``python -W error -m scrapy``).
_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "--check-hash-based-pycs"})


def scrapy_command(argv: list[str]) -> str | None:
    """The Scrapy command this process was started as (``crawl``,
    ``fetch`` ...), from the interpreter's own command line
    (``sys.orig_argv``: Scrapy pops the command name out of ``sys.argv``);
    None when it was not started as a Scrapy command (a script of the user's
    own, a test runner, a scheduler's process)."""
    args = iter(argv[1:])
    rest: list[str] | None = None
    for arg in args:
        if arg == "-m":
            module = next(args, "")
            rest = list(args) if module in _COMMAND_MODULES else None
            break
        if arg in _OPTIONS_WITH_VALUE:
            next(args, None)
        elif arg == "-c" or not arg.startswith("-"):
            name = Path(arg).name.lower()
            is_scrapy = name in ("scrapy", "scrapy.exe", "scrapy-script.py")
            rest = list(args) if is_scrapy else None
            break
    if rest is None:
        return None
    # The first argument that is not an option, as Scrapy's own cmdline reads it.
    return next((arg for arg in rest if not arg.startswith("-")), None)


def command_running() -> str | None:
    """The Scrapy command whose ``run`` is on the call stack, else None:
    a command started from code (``scrapy.cmdline.execute(["scrapy",
    "fetch", url])`` in a script) leaves no trace in the command line."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "run":
            path = Path(code.co_filename)
            if path.parent.name == "commands" and path.parent.parent.name == "scrapy":
                return path.stem
        frame = frame.f_back  # type: ignore[assignment]
    return None


def not_a_crawl() -> str | None:
    """The Scrapy command this process runs when it is not a crawl
    (``fetch``, ``shell`` ...), else None: from the interpreter's command
    line, or else from the call stack."""
    command = scrapy_command(getattr(sys, "orig_argv", [])) or command_running()
    return command if command in DEBUGGING_COMMANDS else None
