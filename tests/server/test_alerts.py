"""Alerts over real HTTP: ``scrapy-heartbeat serve`` deciding liveness and
POSTing events to real local webhook servers (one healthy, one down, one
that hangs)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from tests.crawl import wait_for
from tests.server.beats import worker_beat
from tests.server.serving import EXECUTIONS, Serve
from tests.servers import HeartbeatServer, free_port


def events(hook: HeartbeatServer) -> list[tuple[str, str | None, str]]:
    return [(b["execution_id"], b["old_state"], b["new_state"]) for b in hook.bodies()]


def test_alerts_reach_a_webhook_once_per_transition_while_others_are_down_or_hang(
    serve: Callable[..., Serve],
    db: str,
) -> None:
    healthy, hanging = HeartbeatServer(), HeartbeatServer(behaviour="hang")
    down = f"http://127.0.0.1:{free_port()}/hook"
    try:
        s = serve(
            "--check-every", "0.2", "--lost-after", "2", "--alert-retries", "1",
            "--alert-timeout", "2", "--alert-backoff", "0.2",
            "--webhook", hanging.url + "/hook",
            "--webhook", down,
            "--webhook", healthy.url + "/hook",
            db=db,
        )  # fmt: skip
        died, failing, done = (str(uuid.uuid4()) for _ in range(3))
        for i in range(3):  # every 0.3 s, then silence: late, then lost
            assert (
                s.post(worker_beat(died, crawled=i, container_id="<!channel> & co")).status_code
                == 200
            )
            time.sleep(0.3)
        assert s.post(worker_beat(failing)).status_code == 200
        assert s.post(worker_beat(failing, "failed")).status_code == 200
        assert s.post(worker_beat(done, "completed", crawled=100)).status_code == 200
        wait_for(lambda: len(healthy.bodies()) >= 3, 30, "three alerts")
        time.sleep(1)  # no more should come: late and running are not alerted by default
        got = {(eid, new): old for eid, old, new in events(healthy)}
        assert len(got) == len(healthy.bodies()) == 3  # once per transition
        assert set(got) == {(died, "lost"), (failing, "failed"), (done, "completed")}
        assert got[died, "lost"] == "late"
        # Settled between its two beats, or after both.
        assert got[failing, "failed"] in (None, "running")
        lost = next(b for b in healthy.bodies() if b["new_state"] == "lost")
        assert lost["status"] == "running"  # what the client said stays as it said it
        assert lost["progress"]["crawled_urls"] == 2
        assert lost["text"].startswith(f"scrapy-heartbeat: execution {died} is LOST (was late)")
        assert "&lt;!channel&gt; &amp; co" in lost["text"] and "<!channel>" not in lost["text"]
        assert "2/100 URLs" in lost["text"]
        uuid.UUID(lost["event_id"])
        assert {r.path for r in healthy.received} == {"/hook"}

        # The hanging webhook got its first event and holds it; beats are
        # still answered, and stored.
        assert len(hanging.received) >= 1
        assert s.post(worker_beat(died, crawled=5)).status_code == 200
        assert s.get(f"{EXECUTIONS}/{died}").json()["liveness"] == "running"  # revived

        # The webhook that is down: one line per event, after its retries,
        # naming it by its origin only.
        shown = down.removesuffix("/hook") + "/…"
        given_up = f"alert to {shown} not delivered after 2 attempt(s)"
        wait_for(lambda: s.stderr().count(given_up) >= 3, 30, "log")
        lines = [line for line in s.stderr().splitlines() if given_up in line]
        assert all("given up: ConnectionRefusedError" in line for line in lines), lines
        assert "/hook" not in s.stderr()
        assert s.stderr().count("Traceback") == 0
    finally:
        healthy.stop()
        hanging.stop()


def test_alert_on_chooses_the_transitions(serve: Callable[..., Serve], db: str) -> None:
    hook = HeartbeatServer()
    try:
        s = serve(
            "--check-every", "0.2", "--stall-after", "0.6", "--alert-on", "stalled,running",
            "--webhook", hook.url,
            db=db,
        )  # fmt: skip
        eid = str(uuid.uuid4())
        for _ in range(8):  # beating, counters stuck
            s.post(worker_beat(eid, crawled=3))
            time.sleep(0.2)
        wait_for(lambda: (eid, "running", "stalled") in events(hook), 20, "stalled alert")
        assert (
            s.get(EXECUTIONS, params={"status": "stalled"}).json()["executions"][0]["execution_id"]
            == eid
        )
        s.post(worker_beat(eid, crawled=4))
        wait_for(lambda: (eid, "stalled", "running") in events(hook), 20, "recovery alert")
        s.post(worker_beat(eid, "completed", crawled=4))
        time.sleep(1)
        assert [e for e in events(hook) if e[2] == "completed"] == []
        assert (eid, None, "running") in events(hook)
    finally:
        hook.stop()


def test_bad_alert_options_name_the_fix() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scrapy_heartbeat", "serve", "--alert-on", "lost,dead"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--alert-on: unknown state 'dead'; use a comma-separated list of running," in (
        result.stderr
    )
