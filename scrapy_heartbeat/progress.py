"""Counting logical URLs exactly, with O(1) memory per URL.

A *logical URL* is a request the scheduler accepts. Its retries and redirect
hops are the same logical URL: they carry the same :class:`LogicalUrl` token in
``request.meta`` (Scrapy copies meta into retries and redirects) and one more
``retry_times`` + ``redirect_times`` than the token has seen. Memory is held
only by tokens of requests still queued or in flight, never by a set of seen
URLs.

Scrapy has no signal for what we need, so this crawler's own engine
components are observed, on the instance (nothing outside this crawler
changes, and their answers pass through untouched):

* the scheduler's ``enqueue_request`` (:func:`observe_scheduler`) says which
  requests are accepted: ``request_scheduled`` fires *before* the dupe filter
  and before handlers such as Scrapy 2.19's ``OffsiteMiddleware`` have had
  their say, so it cannot tell acceptance;
* the engine's ``_handle_downloader_output`` (:func:`observe_engine`) gets
  what each download of the crawl ended with, after every downloader
  middleware: the final response, a follow-up request (a retry or redirect
  hop), or the exception no middleware handled, including one raised from a
  middleware's ``process_response`` (for example "max redirections reached").
  It is private, but the same from Scrapy 2.13 to 2.19, and one plain call
  per download; the alternative, a wrapper of the downloader's ``fetch`` and
  a callback on its Deferred (:func:`observe_downloader`), costs more (see
  ``bench/event_cost.py``) and is used only where the engine has no such
  method.

A scheduler that copies what it queues (to a ``JOBDIR`` disk queue, to a
queue shared with other processes) gets each request with its token already
set (:meth:`ProgressTracker.before_enqueue`), so the copy carries it; a
request another process queued is adopted as its download starts (the
downloader's ``fetch``).

A follow-up request that a ``request_scheduled`` handler drops never reaches
the scheduler; :meth:`ProgressTracker.settle` counts its chain as skipped, like
every other ``IgnoreRequest``. A downloader middleware would cost more than
any of this, as Scrapy wraps each middleware call in a coroutine (see the
README's "Performance").
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from scrapy.core.scheduler import Scheduler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.http.request import NO_CALLBACK
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from scrapy import Request

logger = logging.getLogger(__name__)

META_KEY = "_heartbeat_url"

PENDING, SUCCESSFUL, FAILED, SKIPPED = 0, 1, 2, 3


class LogicalUrl:
    """The token one logical URL's requests share through ``request.meta``."""

    __slots__ = ("hops", "outcome", "owner")

    def __init__(self, owner: str, hops: int, outcome: int = PENDING) -> None:
        self.owner = owner
        self.hops = hops
        self.outcome = outcome

    def __reduce__(self) -> tuple[Any, ...]:
        # Disk queues (JOBDIR) pickle meta.
        return (LogicalUrl, (self.owner, self.hops, self.outcome))

    def __repr__(self) -> str:
        return f"<LogicalUrl hops={self.hops} outcome={self.outcome}>"


def hop_count(meta: dict[str, Any]) -> int:
    """How many retries and redirects led to the request with this ``meta``."""
    retries, redirects = meta.get("retry_times"), meta.get("redirect_times")
    if retries is None and redirects is None:
        return 0
    try:
        return int(retries or 0) + int(redirects or 0)
    except (TypeError, ValueError):
        return 0


class ProgressTracker:
    """The crawl's counters and the rules that move them. One per crawler."""

    def __init__(self) -> None:
        self.owner = uuid.uuid4().hex
        self.total = 0
        self.successful = 0
        self.failed = 0
        self.items = 0
        self.errors = 0
        self.start_failed = False  # the spider's start() raised
        self.last_download: Request | None = None  # of ours, the last that finished
        self.downloading: Collection[Request] = ()  # the downloader's active requests
        self._awaiting: set[LogicalUrl] = set()  # chains whose download returned a hop
        self._suspects: dict[LogicalUrl, int] = {}  # awaiting at the last settle(): hops

    @property
    def crawled(self) -> int:
        return self.successful + self.failed

    def current_url(self) -> str | None:
        """A URL being downloaded now (any of the downloader's ``active``
        requests), else the last of ours whose download finished."""
        for request in self.downloading:
            return request.url
        return None if self.last_download is None else self.last_download.url

    # -- observation points -------------------------------------------------

    def request_enqueued(self, request: Request, accepted: bool) -> None:
        """The scheduler's answer for ``request``."""
        if request.callback is NO_CALLBACK:
            return  # a Scrapy-internal download
        meta = request.meta
        chain = self._hop(meta) if META_KEY in meta else None
        if chain is not None:
            self._hop_answered(chain, accepted)
        elif accepted:  # a new URL (a duplicate, not accepted, costs nothing more)
            meta[META_KEY] = LogicalUrl(self.owner, hop_count(meta))
            self.total += 1

    def before_enqueue(self, request: Request) -> LogicalUrl | None:
        """For a scheduler that copies requests as it queues them (to a JOBDIR
        disk queue, to a shared queue): give ``request`` its token first, so
        that the copy carries it. Returns the chain a hop continues, for
        :meth:`after_enqueue`."""
        if request.callback is NO_CALLBACK:
            return None
        meta = request.meta
        chain = self._hop(meta)
        if chain is None:  # a new URL, if the scheduler accepts it
            meta[META_KEY] = LogicalUrl(self.owner, hop_count(meta))
        elif chain.outcome != PENDING:
            self._reopen(chain)  # get_retry_request() in a callback: the copy must be pending
        return chain

    def after_enqueue(self, request: Request, accepted: bool, chain: LogicalUrl | None) -> None:
        """The scheduler's answer, after :meth:`before_enqueue`."""
        if request.callback is NO_CALLBACK:
            return
        if chain is not None:
            self._hop_answered(chain, accepted)
        elif accepted:
            self.total += 1

    def adopt(self, request: Request) -> None:
        """Count a request another process queued (a JOBDIR queue written by
        an earlier run, a shared queue): its token is not ours, and our
        scheduler never accepted it. Called as its download starts, so that
        its hops inherit our token."""
        meta = request.meta
        token = meta.get(META_KEY)
        if isinstance(token, LogicalUrl) and token.owner != self.owner:
            meta[META_KEY] = LogicalUrl(self.owner, hop_count(meta))
            self.total += 1

    def download_finished(self, result: Any, request: Request) -> Any:
        """What the download of ``request`` ended with: a response, a
        follow-up request (a retry or redirect hop), or an exception (or its
        ``Failure``). Returns ``result``, to serve as a Deferred callback."""
        try:
            chain = request.meta.get(META_KEY)
            if chain.__class__ is not LogicalUrl or chain.owner != self.owner:
                return result  # not ours: an internal or a direct engine download
            self.last_download = request
            if chain.outcome != PENDING:
                return result
            if isinstance(result, Response):
                if result.status < 400:  # the common case, inlined: once per page
                    chain.outcome = SUCCESSFUL
                    self.successful += 1
                else:
                    self._resolve(chain, FAILED)
            elif isinstance(result, (Failure, BaseException)):
                error = result.value if isinstance(result, Failure) else result
                self._resolve(chain, SKIPPED if isinstance(error, IgnoreRequest) else FAILED)
            else:  # a follow-up request: the chain goes on if the scheduler hears of it
                self._awaiting.add(chain)
        except Exception:  # pragma: no cover - defensive: never break the crawl
            logger.exception("scrapy-heartbeat: could not count %s", request)
        return result

    def settle(self, final: bool = False) -> None:
        """Skip the chains whose follow-up request never reached the scheduler.

        A handler of ``request_scheduled`` (Scrapy 2.19's ``OffsiteMiddleware``)
        can drop a redirect hop before the scheduler hears of it. A chain is
        skipped when it waits for the same hop at two consecutive calls, or at
        one call when ``final`` (the crawl is over).
        """
        if final:
            confirmed = list(self._awaiting)
        else:
            confirmed = [c for c in self._awaiting if self._suspects.get(c) == c.hops]
        for chain in confirmed:
            self._awaiting.discard(chain)
            if chain.outcome == PENDING:
                self._resolve(chain, SKIPPED)
        self._suspects = {c: c.hops for c in self._awaiting}

    # -- transitions ----------------------------------------------------------

    def _hop(self, meta: dict[str, Any]) -> LogicalUrl | None:
        """The chain the request with this ``meta`` continues (a retry or
        redirect hop: our token and one hop more), moved on to this hop; None
        for a new URL."""
        chain = meta.get(META_KEY)
        if chain.__class__ is LogicalUrl and chain.owner == self.owner:
            hops = hop_count(meta)  # else meta copied from a response: a new URL
            if hops == chain.hops + 1:
                chain.hops = hops
                self._awaiting.discard(chain)
                return chain
        return None

    def _hop_answered(self, chain: LogicalUrl, accepted: bool) -> None:
        if accepted:
            if chain.outcome != PENDING:
                self._reopen(chain)  # e.g. get_retry_request() in a callback
        elif chain.outcome == PENDING:
            self._resolve(chain, SUCCESSFUL)  # a hop into an already-seen URL

    def _resolve(self, chain: LogicalUrl, outcome: int) -> None:
        chain.outcome = outcome
        if outcome == SUCCESSFUL:
            self.successful += 1
        elif outcome == FAILED:
            self.failed += 1
        else:
            self.total -= 1

    def _reopen(self, chain: LogicalUrl) -> None:
        if chain.outcome == SUCCESSFUL:
            self.successful -= 1
        elif chain.outcome == FAILED:
            self.failed -= 1
        elif chain.outcome == SKIPPED:
            self.total += 1
        chain.outcome = PENDING


def observe_crawl(engine: Any, tracker: ProgressTracker, jobdir: bool) -> list[str]:
    """Observe this crawler's engine components for ``tracker`` (see the
    module's docstring); returns what could not be observed, to be logged.
    ``jobdir``: the crawl has a ``JOBDIR``."""
    problems = []
    scheduler = getattr(engine, "scheduler", None)  # public in newer Scrapy
    for slot in ("_slot", "slot"):  # Scrapy 2.13; an empty scheduler is falsy
        if scheduler is None:
            scheduler = getattr(getattr(engine, slot, None), "scheduler", None)
    # Scrapy's own scheduler keeps what it queues in memory, unless it has a
    # JOBDIR; any other (scrapy-redis, say) may copy it elsewhere, and hand
    # out requests another process queued.
    persists = jobdir or type(scheduler) is not Scheduler
    if scheduler is None or not observe_scheduler(scheduler, tracker, persists):
        problems.append("cannot observe the scheduler; total_urls will stay 0")
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
    if (persists or not by_engine) and (
        downloader is None
        or not observe_downloader(downloader, tracker, adopt=persists, outcomes=not by_engine)
    ):
        problems.append(
            "cannot observe the downloader; "
            + (
                "requests restored from JOBDIR or a shared queue will not be counted"
                if by_engine
                else "crawled_urls will stay 0"
            )
        )
    return problems


def observe_scheduler(scheduler: Any, tracker: ProgressTracker, persists: bool) -> bool:
    """Report the scheduler's answers to ``tracker``; False if it can't be done.

    Most requests a page yields are duplicates the scheduler turns down; one
    without our token means nothing to the tracker, so it costs one look.
    ``persists``: the scheduler copies what it queues (``JOBDIR``, a shared
    queue), so tokens must be set before it does.
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


def observe_downloader(
    downloader: Any, tracker: ProgressTracker, *, adopt: bool, outcomes: bool
) -> bool:
    """Observe downloads as they start, on the downloader's ``fetch``; False
    if it can't be done. ``adopt``: the scheduler may hand out requests
    another process queued (a ``JOBDIR`` queue, a shared queue), to be
    adopted as they start. ``outcomes``: report each download's outcome with a
    callback on its Deferred (where :func:`observe_engine` can't). ``fetch``
    keeps its signature (the engine inspects it)."""
    original: Callable[..., Any] | None = getattr(downloader, "fetch", None)
    if original is None:
        return False
    warned = False
    finished = tracker.download_finished

    @functools.wraps(original)
    def fetch(request: Request, *args: Any, **kwargs: Any) -> Any:
        nonlocal warned
        if adopt:
            tracker.adopt(request)
        result = original(request, *args, **kwargs)
        if not outcomes:
            return result
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
