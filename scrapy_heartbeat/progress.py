"""Counting logical URLs exactly, with O(1) memory per URL.

A *logical URL* is a request the scheduler accepts. Its retries and redirect
hops are the same logical URL: they carry its :data:`Marker` in
``request.meta`` (Scrapy copies meta into retries and redirects) and one more
``retry_times`` + ``redirect_times`` than the marker has seen. The marker is
a tuple of built-in types, so it travels with the request wherever it is
pickled (a ``JOBDIR`` disk queue, a scrapy-redis queue) and any process reads
it, with or without this package. Memory is held only by the markers of
requests still queued or in flight, never by a set of seen URLs.

Scrapy has no signal for what we need: :mod:`scrapy_heartbeat._scrapy`
observes this crawler's engine components and calls the tracker's
observation points below.

A scheduler that copies what it queues (to a ``JOBDIR`` disk queue, to a
queue shared with other processes) gets each request with its marker already
set (:meth:`ProgressTracker.before_enqueue`), so the copy carries it; a
request another process queued (with a marker we do not own, or none) is
adopted as the scheduler hands it out (its ``next_request``).

A follow-up request that a ``request_scheduled`` handler drops never reaches
the scheduler; :meth:`ProgressTracker.settle` counts its chain as skipped, like
every other ``IgnoreRequest``. A downloader middleware would cost more than
any of this, as Scrapy wraps each middleware call in a coroutine (see the
README's "Performance").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.http.request import NO_CALLBACK
from twisted.python.failure import Failure

from scrapy_heartbeat.counts import Counts

if TYPE_CHECKING:
    from scrapy import Request

logger = logging.getLogger(__name__)

META_KEY = "_heartbeat_url"

PENDING, SUCCESSFUL, FAILED, SKIPPED = 0, 1, 2, 3

#: What one logical URL's requests carry in ``request.meta``: ``(owner, hops,
#: outcome)``. Plain data, so any process unpickles it (or reads it back from
#: JSON, as a list), with or without this package, and one without it ignores
#: it. ``owner`` scopes it: a process, a JOBDIR job, or a shared execution.
Marker = tuple[str, int, int]


def LogicalUrl(owner: str = "", hops: int = 0, outcome: int = PENDING) -> Marker:
    """Versions before 0.2 pickled a ``LogicalUrl`` object into meta: a request
    they queued (on disk, in Redis) unpickles to a marker no tracker owns, and
    is adopted as it comes off the queue."""
    return ("", hops, outcome)


def hop_count(meta: dict[str, Any]) -> int:
    """How many retries and redirects led to the request with this ``meta``."""
    retries, redirects = meta.get("retry_times"), meta.get("redirect_times")
    if retries is None and redirects is None:
        return 0
    try:
        return int(retries or 0) + int(redirects or 0)
    except (TypeError, ValueError):
        return 0


def read_marker(value: Any) -> Marker | None:
    """``value`` as a well-formed marker, else None (a JSON serializer gives a
    list; a foreign value is not ours to trust)."""
    if isinstance(value, (tuple, list)) and len(value) == 3:
        owner, hops, outcome = value
        if isinstance(owner, str) and isinstance(hops, int) and isinstance(outcome, int):
            return (owner, hops, outcome)
    return None


class ProgressTracker:
    """The crawl's counters and the rules that move them. One per crawler.

    ``owner`` names the markers this tracker trusts as its own: by default
    this process only; a JOBDIR job or a shared execution passes an id that
    outlives the process, so a resumed run or another worker continues them.
    """

    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner or uuid.uuid4().hex
        self.total = 0
        self.successful = 0
        self.failed = 0
        self.items = 0
        self.errors = 0
        self.start_failed = False  # the spider's start() raised
        self.overwritten_seen = False  # a download whose marker was replaced
        self.last_download: Request | None = None  # of ours, the last that finished
        self.downloading: Collection[Request] = ()  # the downloader's active requests
        self._awaiting: set[Request] = set()  # follow-up requests the scheduler has not seen
        # Our requests the scheduler handed out and whose download has not
        # ended, with their marker then: a downloader middleware that replaces
        # the marker cannot make them uncountable. As many as are in flight.
        self._handed_out: dict[Request, Marker] = {}
        self._suspects: set[Request] = set()  # awaiting at the last settle()

    @property
    def crawled(self) -> int:
        return self.successful + self.failed

    def counts(self, items: int) -> Counts:
        """The counters now, with ``items`` counted elsewhere (CoreStats)."""
        return Counts(self.total, self.successful, self.failed, items, self.errors)

    def restore(self, counts: Counts) -> None:
        """Continue from ``counts`` (a resumed ``JOBDIR`` run)."""
        self.total, self.successful, self.failed = counts.total, counts.successful, counts.failed
        self.items, self.errors = counts.items, counts.errors

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
        chain = self._hop(request) if META_KEY in meta else None
        if chain is not None:
            self._hop_answered(meta, chain, accepted)
        elif accepted:  # a new URL (a duplicate, not accepted, costs nothing more)
            meta[META_KEY] = (self.owner, hop_count(meta), PENDING)
            self.total += 1

    def before_enqueue(self, request: Request) -> Marker | None:
        """For a scheduler that copies requests as it queues them (to a JOBDIR
        disk queue, to a shared queue): give ``request`` its marker first, so
        that the copy carries it. Returns the marker of the chain a hop
        continues, for :meth:`after_enqueue`."""
        if request.callback is NO_CALLBACK:
            return None
        meta = request.meta
        chain = self._hop(request)
        if chain is None:  # a new URL, if the scheduler accepts it
            meta[META_KEY] = (self.owner, hop_count(meta), PENDING)
        elif chain[2] != PENDING:
            self._reopen(meta, chain)  # get_retry_request() in a callback: the copy is pending
        return chain

    def after_enqueue(self, request: Request, accepted: bool, chain: Marker | None) -> None:
        """The scheduler's answer, after :meth:`before_enqueue`."""
        if request.callback is NO_CALLBACK:
            return
        if chain is not None:
            if not accepted:
                self._hop_answered(request.meta, request.meta[META_KEY], accepted)
        elif accepted:
            self.total += 1

    def dequeued(self, request: Request, adopt: bool) -> None:
        """The scheduler hands ``request`` out to be downloaded. ``adopt``:
        its queue is one another process may have written (see :meth:`adopt`)."""
        if adopt:
            self.adopt(request)
        marker = request.meta.get(META_KEY)
        if marker.__class__ is tuple and len(marker) == 3 and marker[0] == self.owner:
            self._handed_out[request] = marker

    def adopt(self, request: Request) -> None:
        """Count a request that came off a queue another process wrote (a
        JOBDIR queue of an earlier run, a shared queue): one with no marker
        (queued without this package), or with a marker we do not own. Our
        scheduler never accepted it, so it is new to our ``total_urls``; its
        hops then carry our marker."""
        if request.callback is NO_CALLBACK:
            return
        meta = request.meta
        marker = meta.get(META_KEY)
        if marker.__class__ is not tuple or len(marker) != 3:
            marker = read_marker(marker)
            if marker is not None:
                meta[META_KEY] = marker  # the list a JSON serializer made
        if marker is None or marker[0] != self.owner:
            meta[META_KEY] = (self.owner, hop_count(meta), PENDING)
            self.total += 1

    def download_finished(self, result: Any, request: Request) -> Any:
        """What the download of ``request`` ended with: a response, a
        follow-up request (a retry or redirect hop), or an exception (or its
        ``Failure``). Returns ``result``, to serve as a Deferred callback."""
        try:
            meta = request.meta
            handed = self._handed_out.pop(request, None)
            chain = meta.get(META_KEY)
            if chain.__class__ is not tuple or len(chain) != 3 or chain[0] != self.owner:
                if handed is None:
                    if chain is not None or META_KEY in meta:
                        self._overwritten(chain)
                    return result  # not ours: an internal or a direct engine download
                self._replaced(chain)
                chain = handed  # a downloader middleware replaced it: counted all the same
                meta[META_KEY] = chain
            self.last_download = request
            if chain[2] != PENDING:
                return result
            if isinstance(result, Response):
                if result.status < 400:  # the common case, inlined: once per page
                    meta[META_KEY] = (chain[0], chain[1], SUCCESSFUL)
                    self.successful += 1
                else:
                    self._resolve(meta, chain, FAILED)
            elif isinstance(result, (Failure, BaseException)):
                error = result.value if isinstance(result, Failure) else result
                self._resolve(meta, chain, SKIPPED if isinstance(error, IgnoreRequest) else FAILED)
            else:  # a follow-up request: the chain goes on if the scheduler hears of it
                self._awaiting.add(result)
        except Exception:  # pragma: no cover - defensive: never break the crawl
            logger.exception("scrapy-heartbeat: could not count %s", request)
        return result

    def settle(self, final: bool = False) -> None:
        """Skip the chains whose follow-up request never reached the scheduler.

        A handler of ``request_scheduled`` (Scrapy 2.19's ``OffsiteMiddleware``)
        can drop a redirect hop before the scheduler hears of it. A chain is
        skipped when its hop is still unseen at two consecutive calls, or at
        one call when ``final`` (the crawl is over).
        """
        confirmed = self._awaiting if final else self._awaiting & self._suspects
        self.total -= len(confirmed)
        self._awaiting -= confirmed
        self._suspects = set(self._awaiting)

    def _overwritten(self, value: Any) -> None:
        """A download the scheduler never handed out (a direct engine
        download) whose marker was replaced: its URL cannot be counted. Said
        once per crawl, as the counts will be low."""
        if not self.overwritten_seen:
            self.overwritten_seen = True
            logger.warning(
                "scrapy-heartbeat: request.meta[%(key)r] holds %(value).80r, not this "
                "package's marker (a spider or middleware replaced it); such requests are "
                "not counted. Leave that key as it is",
                {"key": META_KEY, "value": value},
            )

    def _replaced(self, value: Any) -> None:
        """A downloader middleware replaced the marker of a request the
        scheduler handed out: counted from the marker it had then; said once."""
        if not self.overwritten_seen:
            self.overwritten_seen = True
            logger.warning(
                "scrapy-heartbeat: a downloader middleware replaced request.meta[%(key)r] "
                "with %(value).80r; the request is counted all the same and the marker put "
                "back. Leave that key as it is",
                {"key": META_KEY, "value": value},
            )

    # -- transitions ----------------------------------------------------------

    def _hop(self, request: Request) -> Marker | None:
        """The marker of the chain ``request`` continues (a retry or redirect
        hop: our marker and one hop more), moved on to this hop in its meta;
        None for a new URL."""
        meta = request.meta
        chain = meta.get(META_KEY)
        if chain.__class__ is tuple and len(chain) == 3 and chain[0] == self.owner:
            hops = hop_count(meta)  # else meta copied from a response: a new URL
            if hops == chain[1] + 1:
                self._awaiting.discard(request)
                chain = (chain[0], hops, chain[2])
                meta[META_KEY] = chain
                return chain
        return None

    def _hop_answered(self, meta: dict[str, Any], chain: Marker, accepted: bool) -> None:
        if accepted:
            if chain[2] != PENDING:
                self._reopen(meta, chain)  # e.g. get_retry_request() in a callback
        elif chain[2] == PENDING:
            self._resolve(meta, chain, SUCCESSFUL)  # a hop into an already-seen URL

    def _resolve(self, meta: dict[str, Any], chain: Marker, outcome: int) -> None:
        # The marker of the request that ended the chain records its outcome:
        # a retry a callback builds from its response copies it.
        meta[META_KEY] = (chain[0], chain[1], outcome)
        if outcome == SUCCESSFUL:
            self.successful += 1
        elif outcome == FAILED:
            self.failed += 1
        else:
            self.total -= 1

    def _reopen(self, meta: dict[str, Any], chain: Marker) -> None:
        outcome = chain[2]
        if outcome == SUCCESSFUL:
            self.successful -= 1
        elif outcome == FAILED:
            self.failed -= 1
        elif outcome == SKIPPED:
            self.total += 1
        meta[META_KEY] = (chain[0], chain[1], PENDING)
