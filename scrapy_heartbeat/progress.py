"""Counting logical URLs exactly, with O(1) memory per URL.

A *logical URL* is a request the scheduler accepts. Its retries and redirect
hops are the same logical URL: they carry the same :class:`LogicalUrl` token in
``request.meta`` (Scrapy copies meta into retries and redirects) and one more
``retry_times`` + ``redirect_times`` than the token has seen. Memory is held
only by tokens of requests still queued or in flight, never by a set of seen
URLs.

Scrapy does not say everything we need, so two observation points are used:

* the scheduler's own answer (:func:`observe_scheduler` wraps
  ``enqueue_request`` on this crawler's scheduler instance): ``request_scheduled``
  fires *before* the dupe filter and before handlers such as Scrapy 2.19's
  ``OffsiteMiddleware`` have had their say, so it cannot tell acceptance;
* the outermost downloader middleware
  (:class:`~scrapy_heartbeat.middleware.HeartbeatDownloaderMiddleware`) sees
  each request handed to the downloader, each chain's final response, and its
  final exception once retries are exhausted: Scrapy has no signal for a
  final download error.

Some chains end where no middleware looks: an exception raised from another
middleware's ``process_response`` (for example "max redirections reached"),
or a redirect hop that a ``request_scheduled`` handler (``OffsiteMiddleware``)
ignored before the scheduler heard of it. :meth:`settle` finds them by their
last request having left ``downloader.active`` with no hop accepted, and
counts them as skipped, like every other ``IgnoreRequest``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest
from scrapy.http.request import NO_CALLBACK

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.http import Response

logger = logging.getLogger(__name__)

META_KEY = "_heartbeat_url"

PENDING, SUCCESSFUL, FAILED, SKIPPED = 0, 1, 2, 3


class LogicalUrl:
    """The token one logical URL's requests share through ``request.meta``."""

    __slots__ = ("hops", "outcome", "owner", "request")

    def __init__(self, owner: str, hops: int, outcome: int = PENDING) -> None:
        self.owner = owner
        self.hops = hops
        self.outcome = outcome
        self.request: Request | None = None  # the request now in the downloader

    def __reduce__(self) -> tuple[Any, ...]:
        # Disk queues (JOBDIR) pickle meta; the in-flight request stays behind.
        return (LogicalUrl, (self.owner, self.hops, self.outcome))

    def __repr__(self) -> str:
        return f"<LogicalUrl hops={self.hops} outcome={self.outcome}>"


def hop_count(request: Request) -> int:
    meta = request.meta
    try:
        return int(meta.get("retry_times", 0) or 0) + int(meta.get("redirect_times", 0) or 0)
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
        self.current_url: str | None = None
        self._downloading: set[LogicalUrl] = set()
        self._suspects: set[LogicalUrl] = set()

    @property
    def crawled(self) -> int:
        return self.successful + self.failed

    # -- observation points -------------------------------------------------

    def request_enqueued(self, request: Request, accepted: bool) -> None:
        if request.callback is NO_CALLBACK:
            return  # a Scrapy-internal download
        chain = self._token(request)
        if chain is not None:  # a retry or redirect hop, or meta copied from a response
            hops = hop_count(request)
            if hops == chain.hops + 1:
                self._continue(chain, hops)
                if accepted:
                    if chain.outcome != PENDING:
                        self._reopen(chain)  # e.g. get_retry_request() in a callback
                elif chain.outcome == PENDING:
                    self._resolve(chain, SUCCESSFUL)  # a hop into an already-seen URL
                return
        if accepted:  # a new URL (a duplicate, not accepted, costs nothing more)
            request.meta[META_KEY] = LogicalUrl(self.owner, hop_count(request))
            self.total += 1

    def download_started(self, request: Request) -> None:
        self.current_url = request.url
        chain = self._token(request)
        if chain is None:
            foreign = request.meta.get(META_KEY)
            if not isinstance(foreign, LogicalUrl):
                return
            # Restored from a JOBDIR queue written by an earlier process.
            chain = LogicalUrl(self.owner, hop_count(request))
            request.meta[META_KEY] = chain
            self.total += 1
        if chain.outcome == PENDING:
            chain.request = request
            self._downloading.add(chain)

    def download_finished(
        self,
        request: Request,
        response: Response | None = None,
        exception: BaseException | None = None,
    ) -> None:
        chain = self._token(request)
        if chain is None:
            return
        self._stop_downloading(chain)
        if chain.outcome != PENDING:
            return
        if exception is not None:
            ignored = isinstance(exception, IgnoreRequest)
            self._resolve(chain, SKIPPED if ignored else FAILED)
        elif response is not None:
            self._resolve(chain, SUCCESSFUL if response.status < 400 else FAILED)

    def settle(self, active: Container[Request] | None, final: bool = False) -> None:
        """Resolve what Scrapy ended without telling us (see the module doc).

        A chain is skipped when its request is no longer in ``active`` at two
        consecutive calls, or at one call when ``final`` (the crawl is over).
        """
        if active is None:
            return
        lost = {c for c in self._downloading if c.request not in active}
        confirmed = lost if final else lost & self._suspects
        for chain in confirmed:
            self._stop_downloading(chain)
            if chain.outcome == PENDING:
                self._resolve(chain, SKIPPED)
        self._suspects = lost - confirmed

    # -- transitions ----------------------------------------------------------

    def _token(self, request: Request) -> LogicalUrl | None:
        token = request.meta.get(META_KEY)
        if isinstance(token, LogicalUrl) and token.owner == self.owner:
            return token
        return None

    def _continue(self, chain: LogicalUrl, hops: int) -> None:
        chain.hops = hops
        self._stop_downloading(chain)

    def _stop_downloading(self, chain: LogicalUrl) -> None:
        chain.request = None
        self._downloading.discard(chain)
        self._suspects.discard(chain)

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


def observe_scheduler(scheduler: Any, tracker: ProgressTracker) -> bool:
    """Report the scheduler's answers to ``tracker``; False if it can't be done.

    Only this crawler's scheduler *instance* is wrapped, so any scheduler class
    works and nothing outside this crawler changes. The scheduler's answer is
    returned untouched, and a failure of ours never reaches the engine.
    """
    original: Callable[[Request], bool] | None = getattr(scheduler, "enqueue_request", None)
    if original is None:
        return False

    def enqueue_request(request: Request) -> bool:
        accepted = original(request)
        try:
            tracker.request_enqueued(request, bool(accepted))
        except Exception:  # pragma: no cover - defensive: never break the crawl
            logger.exception("scrapy-heartbeat: could not count %s", request)
        return accepted

    try:
        scheduler.enqueue_request = enqueue_request
    except (AttributeError, TypeError):
        return False
    return True
