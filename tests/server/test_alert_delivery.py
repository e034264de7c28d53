"""Each attempt to deliver an alert bounded whole, against real local
webhook servers that misbehave: hanging, trickling, down, replying without
end, redirecting. ``serve`` runs in a process of its own, with short
deadlines, backoffs and ages (its options) so that the tests are quick."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.crawl import wait_for
from tests.server.beats import worker_beat
from tests.server.serving import Serve
from tests.servers import HeartbeatServer, free_port

#: Attempts cut at 1 s, retried 0.2 s, 0.4 s ... later, given up at 3 s old.
QUICK = (
    "--check-every", "0.2", "--alert-timeout", "1", "--alert-lease", "3",
    "--alert-backoff", "0.2", "--alert-max-age", "3",
)  # fmt: skip
SECRET_PATH = "/services/T0/B0/XXXXSECRET"


def secret_url(base: str) -> str:
    """``base`` with credentials in its userinfo, path and query."""
    return base.replace("http://", "http://alice:Pa55word@") + SECRET_PATH + "?token=t0k3n"


def shown(hook: HeartbeatServer) -> str:
    return f"{hook.url}/…"


def finish(s: Serve, count: int) -> list[str]:
    """``count`` executions that complete: a ``completed`` alert each."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for eid in ids:
        assert s.post(worker_beat(eid, "completed", crawled=3)).status_code == 200
    return ids


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hanging_and_trickling_webhooks_hold_no_attempt_past_its_deadline(
    serve: Callable[..., Serve],
) -> None:
    healthy = HeartbeatServer()
    hanging = HeartbeatServer(behaviour="hang")
    trickle_head = HeartbeatServer(behaviour="trickle_head:0.5")  # a byte every 0.5 s
    trickle_body = HeartbeatServer(behaviour="trickle_body:0.5")  # 200, then the body so
    down = f"http://127.0.0.1:{free_port()}"
    hooks = [healthy, hanging, trickle_head, trickle_body]
    try:
        webhooks = [secret_url(h.url) for h in hooks] + [secret_url(down)]
        s = serve(*QUICK, *(arg for url in webhooks for arg in ("--webhook", url)))
        ids = finish(s, 3)
        wait_for(lambda: len(healthy.received) == 3, 20, "healthy alerts")
        # A 200 is delivered as its status line arrives: the body is not waited for.
        wait_for(lambda: len(trickle_body.received) == 3, 10, "trickling body alerts")
        assert {b["execution_id"] for b in trickle_body.bodies()} == set(ids)
        # The others: attempts cut at 1 s, retried, then one WARNING per event.
        for hook, problem in [
            (shown(hanging), "no complete reply within 1 s"),
            (shown(trickle_head), "no complete reply within 1 s"),
            (f"{down}/…", "ConnectionRefusedError"),
        ]:
            given_up = f"alert to {hook} not delivered after "
            wait_for(lambda h=given_up: s.stderr().count(h) == 3, 30, f"{hook} given up")  # type: ignore[misc]
            lines = [line for line in s.stderr().splitlines() if given_up in line]
            assert all(problem in line for line in lines), lines
            assert {eid for eid in ids if any(eid in line for line in lines)} == set(ids)
        # Each event was tried more than once within its 3 s, each attempt cut.
        assert len(hanging.received) >= 6 and len(trickle_head.received) >= 6
        time.sleep(1)
        assert s.stderr().count("not delivered after") == 9  # one line per event, never more
        log = s.stderr()
        for secret in ("alice", "Pa55word", "XXXXSECRET", "t0k3n", "services"):
            assert secret not in log
        assert "Traceback" not in log
        # Credentials in the URL are sent as Basic auth, the path and query as given.
        assert healthy.received[0].path == SECRET_PATH + "?token=t0k3n"
        assert healthy.received[0].headers["Authorization"] == "Basic YWxpY2U6UGE1NXdvcmQ="
    finally:
        for hook in hooks:
            hook.stop()


def test_a_reply_without_end_is_not_read(serve: Callable[..., Serve]) -> None:
    """Replies of hundreds of MB (a 200, a 500, headers without end): the
    receiver reads at most 64 KiB of each, so its memory stays put."""
    endless_ok = HeartbeatServer(behaviour="endless")
    endless_error = HeartbeatServer(behaviour="endless:500")
    endless_head = HeartbeatServer(behaviour="endless_head")
    hooks = [endless_ok, endless_error, endless_head]
    try:
        s = serve(*QUICK, *(arg for h in hooks for arg in ("--webhook", h.url + "/hook")))
        time.sleep(1)
        before = rss_kib(s.process.pid)
        finish(s, 5)
        wait_for(lambda: len(endless_ok.received) == 5, 20, "delivered")
        wait_for(lambda: s.stderr().count("not delivered after") == 10, 30, "given up")
        grown = rss_kib(s.process.pid) - before
        assert grown < 32 * 1024, f"RSS grew {grown} KiB"
        lines = s.stderr().splitlines()
        assert sum(f"{shown(endless_error)} not delivered" in x for x in lines) == 5
        assert all("HTTP 500" in x for x in lines if f"{shown(endless_error)} not" in x)
        over = [x for x in lines if f"{shown(endless_head)} not delivered" in x]
        assert len(over) == 5 and all("a reply past 64 KiB" in x for x in over), over
        time.sleep(0.5)
        assert len(endless_ok.received) == 5  # delivered once each: the body did not matter
    finally:
        for hook in hooks:
            hook.stop()


def test_redirects_are_never_followed(serve: Callable[..., Serve]) -> None:
    """307/308 would POST the alert again to wherever ``Location`` says,
    301-303 turn it into a GET whose 200 looks delivered: none is followed,
    each is one failed attempt, given up, its line naming only the origin
    of where it pointed."""
    target = HeartbeatServer()
    codes = (301, 302, 303, 307, 308)
    location = secret_url(target.url)
    redirecting = [HeartbeatServer(behaviour=f"moved:{code}:{location}") for code in codes]
    try:
        s = serve(*QUICK, *(arg for h in redirecting for arg in ("--webhook", h.url + "/hook")))
        eid = finish(s, 1)[0]
        wait_for(lambda: s.stderr().count("not delivered after 1 attempt(s)") == 5, 20, "lines")
        for code, hook in zip(codes, redirecting, strict=True):
            assert len(hook.received) == 1
            [line] = [x for x in s.stderr().splitlines() if f"alert to {shown(hook)} " in x]
            assert f"HTTP {code} redirect to {target.url}/… (not followed)" in line, line
            assert f"execution {eid} completed" in line
        assert target.received == []
        assert "Pa55word" not in s.stderr() and "XXXXSECRET" not in s.stderr()
    finally:
        target.stop()
        for hook in redirecting:
            hook.stop()


def test_a_stop_during_an_attempt_is_not_the_webhooks_failure(
    serve: Callable[..., Serve],
) -> None:
    """SIGTERM while alerts wait on a hanging webhook: the cut attempts are
    handed back, never logged as the webhook failing."""
    hanging = HeartbeatServer(behaviour="hang")
    try:
        s = serve(
            "--check-every", "0.2", "--webhook", hanging.url + "/hook",
            "--alert-timeout", "30", "--alert-lease", "60",
        )  # fmt: skip
        finish(s, 3)
        wait_for(lambda: len(hanging.received) >= 1, 20, "an attempt under way")
        s.stop()
        assert s.process.returncode == 0
        assert "failed" not in s.stderr(), s.stderr()[-2000:]
    finally:
        hanging.stop()
