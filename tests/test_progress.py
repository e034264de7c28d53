"""The counting rules as pure transitions, with real Scrapy requests."""

from __future__ import annotations

import json
import pickle

from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from scrapy.http import HtmlResponse
from scrapy.http.request import NO_CALLBACK

from scrapy_heartbeat.progress import META_KEY, ProgressTracker


def accept(t: ProgressTracker, request: Request, accepted: bool = True) -> None:
    t.request_enqueued(request, accepted)


def respond(t: ProgressTracker, request: Request, status: int = 200) -> None:
    t.download_finished(HtmlResponse(request.url, status=status, request=request), request)


def counts(t: ProgressTracker) -> tuple[int, int, int]:
    return t.total, t.successful, t.failed


def test_new_url_counted_on_acceptance_only() -> None:
    t = ProgressTracker()
    accept(t, Request("http://a/1"), accepted=False)  # dupe filtered
    assert counts(t) == (0, 0, 0)
    accept(t, Request("http://a/2"))
    assert counts(t) == (1, 0, 0)


def test_retry_is_the_same_logical_url() -> None:
    t = ProgressTracker()
    first = Request("http://a/1")
    accept(t, first)
    retry = first.copy()
    retry.meta["retry_times"] = 1
    retry.dont_filter = True
    t.download_finished(retry, first)  # RetryMiddleware returned a retry
    accept(t, retry)
    respond(t, retry, 200)
    assert counts(t) == (1, 1, 0)


def test_redirect_into_a_seen_url_is_successful() -> None:
    t = ProgressTracker()
    first = Request("http://a/1")
    accept(t, first)
    hop = first.replace(url="http://a/seen")
    hop.meta["redirect_times"] = 1
    t.download_finished(hop, first)
    accept(t, hop, accepted=False)
    assert counts(t) == (1, 1, 0)
    t.settle(final=True)
    assert counts(t) == (1, 1, 0)


def test_redirect_ignored_before_the_scheduler_is_skipped() -> None:
    t = ProgressTracker()
    first = Request("http://a/1")
    accept(t, first)
    hop = first.replace(url="http://offsite/")
    hop.meta["redirect_times"] = 1
    t.download_finished(hop, first)
    # OffsiteMiddleware ignores the hop: the scheduler never hears of it
    t.settle()
    assert counts(t) == (1, 0, 0)  # a suspect after one look
    t.settle()
    assert counts(t) == (0, 0, 0)


def test_ignored_download_is_skipped_and_errors_fail() -> None:
    t = ProgressTracker()
    forbidden, broken = Request("http://a/robots-forbidden"), Request("http://a/refused")
    for r in (forbidden, broken):
        accept(t, r)
    t.download_finished(IgnoreRequest(), forbidden)
    t.download_finished(ConnectionRefusedError(), broken)
    assert counts(t) == (1, 0, 1)


def test_status_400_and_up_fails() -> None:
    t = ProgressTracker()
    for status in (200, 304, 399, 400, 404, 500):
        r = Request(f"http://a/{status}")
        accept(t, r)
        respond(t, r, status)
    assert counts(t) == (6, 3, 3)


def test_a_chain_waiting_for_a_later_hop_is_not_settled() -> None:
    t = ProgressTracker()
    r = Request("http://a/loop")
    accept(t, r)
    t.settle()  # queued or downloading: nothing to settle
    hop = r.replace(url="http://a/next")
    hop.meta["redirect_times"] = 1
    t.download_finished(hop, r)
    t.settle()  # waiting for hop 1: suspect
    accept(t, hop)
    hop2 = hop.replace(url="http://a/last")
    hop2.meta["redirect_times"] = 2
    t.download_finished(hop2, hop)
    t.settle()  # waiting again, for hop 2 this time: a suspect, not confirmed
    assert counts(t) == (1, 0, 0)
    accept(t, hop2)
    respond(t, hop2)
    t.settle(final=True)
    assert counts(t) == (1, 1, 0)


def test_final_settle_needs_one_look() -> None:
    t = ProgressTracker()
    r = Request("http://a/loop")
    accept(t, r)
    hop = r.replace(url="http://offsite/")
    hop.meta["redirect_times"] = 1
    t.download_finished(hop, r)
    t.settle(final=True)
    assert counts(t) == (0, 0, 0)


def test_user_copied_meta_is_a_new_url() -> None:
    t = ProgressTracker()
    first = Request("http://a/1")
    accept(t, first)
    respond(t, first)
    follow = Request("http://a/2", meta=first.meta)  # the classic meta=response.meta
    accept(t, follow)
    respond(t, follow)
    assert counts(t) == (2, 2, 0)


def test_retry_from_a_callback_reopens_the_url() -> None:
    t = ProgressTracker()
    first = Request("http://a/captcha")
    accept(t, first)
    respond(t, first, 200)
    # what scrapy.downloadermiddlewares.retry.get_retry_request() builds
    retry = first.copy()
    retry.meta["retry_times"] = first.meta.get("retry_times", 0) + 1
    retry.dont_filter = True
    accept(t, retry)
    assert counts(t) == (1, 0, 0)
    respond(t, retry, 200)
    assert counts(t) == (1, 1, 0)


def test_current_url_is_one_under_way_else_the_last_finished() -> None:
    t = ProgressTracker()
    assert t.current_url() is None
    first, second = Request("http://a/1"), Request("http://a/2")
    accept(t, first)
    accept(t, second)
    t.downloading = {second}  # the downloader's active set
    assert t.current_url() == "http://a/2"
    respond(t, first)
    assert t.current_url() == "http://a/2"
    t.downloading = set()
    assert t.current_url() == "http://a/1"
    other = Request("http://b/robots.txt", callback=NO_CALLBACK)
    t.download_finished(HtmlResponse(other.url, request=other), other)  # not ours
    assert t.current_url() == "http://a/1"


def test_internal_requests_are_not_counted() -> None:
    t = ProgressTracker()
    accept(t, Request("http://a/robots.txt", callback=NO_CALLBACK))
    assert counts(t) == (0, 0, 0)


def test_two_trackers_never_count_each_others_requests() -> None:
    a, b = ProgressTracker(), ProgressTracker()
    r = Request("http://a/1")
    accept(a, r)
    b.download_finished(HtmlResponse(r.url, status=200, request=r), r)
    assert counts(b) == (0, 0, 0)
    assert counts(a) == (1, 0, 0)


def test_marker_is_plain_data_any_process_reads() -> None:
    t = ProgressTracker()
    r = Request("http://a/1")
    accept(t, r)
    marker = r.meta[META_KEY]
    assert type(marker) is tuple
    assert all(type(part) in (str, int) for part in marker)
    # what a process without this package sees: nothing of ours to import
    assert b"scrapy_heartbeat" not in pickle.dumps(r.to_dict(), protocol=pickle.HIGHEST_PROTOCOL)
    assert json.loads(json.dumps(r.meta))[META_KEY] == list(marker)


def test_a_foreign_or_missing_marker_is_adopted_once() -> None:
    t = ProgressTracker()
    r = Request("http://a/1")
    accept(t, r)
    restored = pickle.loads(pickle.dumps(r.meta[META_KEY]))
    # requests restored from a queue another process wrote
    later = ProgressTracker()
    r2 = Request("http://a/1", meta={META_KEY: restored})
    unmarked = Request("http://a/2")  # queued by a worker without the package
    respond(later, r2)
    assert counts(later) == (0, 0, 0)  # not adopted: not counted
    for request in (r2, unmarked):
        later.adopt(request)
        later.adopt(request)  # adopted once
        respond(later, request)
    assert counts(later) == (2, 2, 0)
    internal = Request("http://a/robots.txt", callback=NO_CALLBACK)
    later.adopt(internal)
    assert counts(later) == (2, 2, 0)


def test_a_shared_owner_continues_another_process_chains() -> None:
    """Workers of one execution share an owner: what one queued, another
    downloads and counts, without adopting it a second time."""
    a, b = ProgressTracker("exec-1"), ProgressTracker("exec-1")
    first = queue_on_disk(a, Request("http://a/1"))
    b.adopt(first)
    retry = first.copy()
    retry.meta["retry_times"] = 1
    retry.dont_filter = True
    b.download_finished(retry, first)
    hop = queue_on_disk(b, retry)
    a.adopt(hop)
    respond(a, hop, 500)
    assert counts(a) == (1, 0, 1)
    assert counts(b) == (0, 0, 0)


def test_markers_of_older_versions_unpickle_and_are_adopted() -> None:
    """Before 0.2 the marker was a ``LogicalUrl`` object, pickled by
    reference: ``(progress.LogicalUrl, (owner, hops, outcome))``."""
    old = pickle.loads(
        b"\x80\x04\x95<\x00\x00\x00\x00\x00\x00\x00\x8c\x19scrapy_heartbeat.progress"
        b"\x94\x8c\nLogicalUrl\x94\x93\x94\x8c\x05owner\x94K\x00K\x00\x87\x94R\x94."
    )
    t = ProgressTracker()
    r = Request("http://a/1", meta={META_KEY: old})
    t.adopt(r)
    respond(t, r)
    assert counts(t) == (1, 1, 0)


def queue_on_disk(t: ProgressTracker, request: Request, accepted: bool = True) -> Request:
    """What a JOBDIR scheduler does: queue a copy; the copy is what comes out."""
    chain = t.before_enqueue(request)
    meta = pickle.loads(pickle.dumps(request.meta))
    t.after_enqueue(request, accepted, chain)
    return request.replace(meta=meta)


def test_a_disk_queue_copy_carries_the_token_and_its_state() -> None:
    t = ProgressTracker()
    assert queue_on_disk(t, Request("http://a/dupe"), accepted=False)
    first = queue_on_disk(t, Request("http://a/captcha"))
    respond(t, first)
    assert counts(t) == (1, 1, 0)
    retry = first.copy()  # get_retry_request() in a callback
    retry.meta["retry_times"] = 1
    retry.dont_filter = True
    popped = queue_on_disk(t, retry)
    assert counts(t) == (1, 0, 0)
    hop = popped.replace(url="http://a/elsewhere")  # the retry is redirected
    hop.meta["redirect_times"] = 1
    t.download_finished(hop, popped)
    popped_hop = queue_on_disk(t, hop)  # carries the chain at its new hop count
    t.settle(final=True)  # the hop reached the scheduler: not skipped
    assert counts(t) == (1, 0, 0)
    respond(t, popped_hop)
    assert counts(t) == (1, 1, 0)


def test_memory_is_not_held_per_finished_url() -> None:
    t = ProgressTracker()
    for n in range(1000):
        r = Request(f"http://a/{n}")
        accept(t, r)
        respond(t, r)
    assert counts(t) == (1000, 1000, 0)
    t.settle()
    assert not t._awaiting
    assert not t._suspects
