"""The dashboard in headless Chromium (Debian's ``chromium`` package): rows
render, stale executions stand out, and markup inside heartbeat values stays
inert text."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import html as lxml_html

from scrapy_heartbeat import execution_token
from scrapy_heartbeat.server import open_store
from tests.server.beats import beat
from tests.server.browser import CHROMIUM, QUIET, evaluate, screenshot
from tests.server.serving import EXECUTIONS, Serve

INJECTED_URL = "https://example.com/<img src=x onerror=\"document.title='pwned'\">"
INJECTED_STAGE = "<script>document.title='pwned'</script>"
INJECTED_CONTAINER = "<b id=bold>bold</b>"


@pytest.fixture(autouse=True)
def chromium() -> None:
    """Never skipped: ``make test`` installs Debian's chromium first."""
    assert CHROMIUM is not None, "Debian's chromium is not installed: run make system-deps"


@pytest.fixture
def receiver(serve: Callable[..., Serve]) -> Serve:
    # The counts are as of the last liveness check: checked often here.
    return serve("--check-every", "0.2")


def render(url: str, tz: str = "UTC") -> lxml_html.HtmlElement:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                *QUIET,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=4000",
                "--dump-dom",
                url,
            ],
            env={**os.environ, "TZ": tz},  # times shown in the browser's zone
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return lxml_html.fromstring(result.stdout)


def test_dashboard_rows_stale_and_inert_markup(receiver: Serve) -> None:
    stale_id, hostile_id = str(uuid.uuid4()), str(uuid.uuid4())
    for _ in range(2):  # two beats 0.2 s apart: the observed interval is 0.2 s
        receiver.post(beat(execution_id=stale_id))
        time.sleep(0.2)
    time.sleep(0.5)  # now silent for over twice its interval
    receiver.post(beat(container_id="worker-2"))  # a second container of this execution
    receiver.post(beat(status="completed", progress={**beat()["progress"], "percentage": 100.0}))
    hostile = beat(execution_id=hostile_id, container_id=INJECTED_CONTAINER)
    hostile["progress"].update(current_url=INJECTED_URL, current_stage=INJECTED_STAGE)
    assert receiver.post(hostile).status_code == 200

    page = render(receiver.url + "/")

    assert page.find("body").get("data-loaded") == "true", "the page's script did not run"
    assert page.findtext(".//title") == "scrapy-heartbeat: executions"  # no script ran
    rows = {tr.get("data-execution-id"): tr for tr in page.cssselect("#rows tr")}
    assert set(rows) == {stale_id, hostile_id, beat()["execution_id"]}
    assert rows[stale_id].get("class") == "stale"
    assert rows[stale_id].cssselect(".late-badge")[0].text_content() == "late"
    link = rows[stale_id].cssselect("a")[0]
    assert link.get("href") == f"?execution={stale_id}" and link.get("title") == stale_id
    assert link.text_content() == stale_id[:8]
    assert rows[stale_id].cssselect("td")[11].text_content().endswith(" s ago")
    assert rows[hostile_id].get("class") in (None, "")
    cells = [td.text_content() for td in rows[hostile_id].cssselect("td")]
    assert INJECTED_URL in cells
    assert INJECTED_STAGE in cells
    assert INJECTED_CONTAINER + "1 container" in cells  # the id, then the count
    table = page.cssselect("table")[0]
    assert not table.cssselect("img, script, b#bold"), "markup from a heartbeat was parsed"
    done = rows[beat()["execution_id"]]
    assert "completed" in done.text_content()
    assert "width: 100%" in done.cssselect(".bar > div")[0].get("style")
    assert "45 / 100 (42 / 3)" in done.text_content()
    assert "2 containers" in done.text_content()  # and each is listed
    listed = {li.get("data-container-id"): li.text_content() for li in done.cssselect("li")}
    assert set(listed) == {"worker-2", beat()["container_id"]}
    assert listed["worker-2"].startswith("worker-2: running")
    assert "1 container" in rows[stale_id].text_content()
    summary = page.get_element_by_id("summary").text_content()
    assert summary.startswith("3 executions, 2 active, 1 stale")


def test_with_a_token_the_dashboard_asks_for_it(serve: Callable[..., Serve]) -> None:
    """Not "0 executions": the page says it needs the token, and with it
    (here from the page's #token= fragment) shows the executions."""
    receiver = serve("--token", "s3cret-token")
    headers = {"Authorization": "Bearer s3cret-token"}
    assert receiver.post(beat(), headers=headers).status_code == 200
    without = render(receiver.url + "/")
    with_token = render(receiver.url + "/#token=s3cret-token")
    wrong = render(receiver.url + "/#token=wrong")
    summary = without.get_element_by_id("summary").text_content()
    assert "needs its token" in summary
    assert without.get_element_by_id("token-form").get("hidden") is None
    assert not without.cssselect("#rows tr")
    assert [tr.get("data-execution-id") for tr in with_token.cssselect("#rows tr")] == [
        beat()["execution_id"]
    ]
    assert with_token.get_element_by_id("summary").text_content().startswith("1 execution,")
    assert "token was refused" in wrong.get_element_by_id("summary").text_content()


def test_the_token_of_the_fragment_leaves_the_address(serve: Callable[..., Serve]) -> None:
    """Read once from ``#token=``, the token is kept for the tab and dropped
    from the address bar: an address copied from the page does not carry it."""
    receiver = serve("--token", "s3cret-token")
    headers = {"Authorization": "Bearer s3cret-token"}
    assert receiver.post(beat(), headers=headers).status_code == 200
    seen = evaluate(
        receiver.url + f"/?execution={beat()['execution_id']}#token=s3cret-token",
        "[location.href, document.getElementById('title').textContent]",
    )
    assert seen == [
        receiver.url + f"/?execution={beat()['execution_id']}",
        f"Execution {beat()['execution_id']}",
    ]


def test_with_scoped_credentials_the_dashboard_takes_the_read_token(
    serve: Callable[..., Serve],
) -> None:
    """The page stays usable with the read token (the list and one
    execution's page); a crawler's token, which writes, shows nothing."""
    key, read = "dashboard-test-signing-key-0123456789", "dashboard-read-token"
    receiver = serve("--signing-key", key, "--read-token", read)
    crawler = execution_token(key, beat()["execution_id"])
    assert receiver.post(beat(), headers={"Authorization": f"Bearer {crawler}"}).status_code == 200
    listed = render(receiver.url + f"/#token={read}")
    one = render(receiver.url + f"/?execution={beat()['execution_id']}#token={read}")
    refused = render(receiver.url + f"/#token={crawler}")
    assert [tr.get("data-execution-id") for tr in listed.cssselect("#rows tr")] == [
        beat()["execution_id"]
    ]
    assert listed.get_element_by_id("token-form").get("hidden") is not None
    assert one.get_element_by_id("title").text_content() == f"Execution {beat()['execution_id']}"
    assert "token was refused" in refused.get_element_by_id("summary").text_content()
    assert "serve --read-token" in refused.get_element_by_id("summary").text_content()
    assert not refused.cssselect("#rows tr")


def test_the_page_of_one_execution(receiver: Serve) -> None:
    """Its progress and rate over time, its containers with their
    liveness, items and errors; markup sent by a container stays text."""
    eid = str(uuid.uuid4())
    for i in range(6):
        for container in ("worker-a", INJECTED_CONTAINER):
            body = beat(execution_id=eid, container_id=container)
            body["progress"].update(crawled_urls=10 * i, data_items=3 * i, error_count=1)
            body["progress"]["current_stage"] = INJECTED_STAGE
            assert receiver.post(body).status_code == 200
        time.sleep(0.1)
    page = render(receiver.url + f"/?execution={eid}")
    assert page.find("body").get("data-loaded") == "true"
    assert page.get_element_by_id("detail").get("hidden") is None
    assert page.get_element_by_id("list").get("hidden") is not None
    assert page.get_element_by_id("title").text_content() == f"Execution {eid}"
    state = page.get_element_by_id("detail-state").text_content()
    assert "50 / 100 URLs (42 ok, 3 failed), 15 items, 1 error; started " in state
    assert "; 12 beats" in state
    stage = f"; stage: \u2068{INJECTED_STAGE}\u2069; last beat "
    assert "; started 2024-01-01 10:00, runtime 30 min" + stage in state
    crawled = page.cssselect("#chart-crawled polyline")[0].get("points").split()
    assert len(crawled) == 12  # one point per beat
    caption = page.get_element_by_id("caption-crawled").text_content()
    assert re.fullmatch(r"URLs crawled over time \(max 50, over 0\.\d s\)", caption), caption
    # No whole minute yet: the average from the first beat to the last.
    rate = page.get_element_by_id("caption-rate").text_content()
    found = re.fullmatch(
        r"pages per minute: (\d+) on average over (\d\.\d) s "
        r"\(per minute once two minutes have passed\)",
        rate,
    )
    assert found, rate
    assert int(found[1]) == pytest.approx(50 * 60 / float(found[2]), rel=0.2)
    assert len(page.cssselect("#chart-rate polyline")[0].get("points").split()) == 2
    for chart, unit in (("#chart-crawled", "URLs crawled"), ("#chart-rate", "pages per minute")):
        assert [t.text for t in page.cssselect(chart + " .y-title")] == [unit]
        assert [t.text for t in page.cssselect(chart + " .x-title")] == [
            "time since the first beat"
        ]
        assert [t.text for t in page.cssselect(chart + " .x-tick")] == ["0", "1 s"]
        assert page.cssselect(chart + " .y-tick")[0].text == "0"
    assert [t.text for t in page.cssselect("#chart-crawled .y-tick")] == ["0", "25", "50"]
    assert "over 0 min" not in page.text_content()
    rows = {tr.get("data-container-id"): tr for tr in page.cssselect("#containers tr")}
    assert set(rows) == {"worker-a", INJECTED_CONTAINER}
    cells = [td.text_content() for td in rows["worker-a"].cssselect("td")]
    # Beating every 0.1 s, it is late by the time Chromium reads it: either way running.
    assert cells[0] == "worker-a" and cells[1].startswith("running")
    assert cells[2].endswith(" s ago")
    assert cells[3] == "6" and cells[5] == "50 / 100 (42 / 3)" and cells[6:8] == ["15", "1"]
    assert cells[8] == INJECTED_STAGE
    assert not page.cssselect("#detail img, #detail script, #detail b#bold")
    assert page.findtext(".//title") == "scrapy-heartbeat: execution"  # not 'pwned'

    missing = render(receiver.url + f"/?execution={uuid.uuid4()}")
    assert (
        "no heartbeat for this execution_id" in missing.get_element_by_id("summary").text_content()
    )


def test_the_list_filters_by_liveness(serve: Callable[..., Serve]) -> None:
    receiver = serve("--lost-after", "0.5")
    quiet, busy = str(uuid.uuid4()), str(uuid.uuid4())
    for _ in range(2):  # an interval of 0.2 s: late after 0.4 s, lost after 0.5 s
        receiver.post(beat(execution_id=quiet))
        time.sleep(0.2)
    time.sleep(1)
    receiver.post(beat(execution_id=busy))
    lost = render(receiver.url + "/?status=lost")
    everything = render(receiver.url + "/")
    assert [tr.get("data-execution-id") for tr in lost.cssselect("#rows tr")] == [quiet]
    assert lost.cssselect(".lost-badge")[0].text_content() == "lost"
    assert "; 1 lost shown;" in lost.get_element_by_id("summary").text_content()
    assert {tr.get("data-execution-id") for tr in everything.cssselect("#rows tr")} == {quiet, busy}


def test_the_list_is_one_page_and_the_counts_the_whole_fleet(
    tmp_path: Path, serve: Callable[..., Serve]
) -> None:
    store = open_store(str(tmp_path / "hb.sqlite3"))
    now = time.time()
    for n in range(130):
        store.add(beat(execution_id=str(uuid.uuid4())), now - n / 10)
    store.close()
    page = render(serve().url + "/")
    assert len(page.cssselect("#rows tr")) == 100
    summary = page.get_element_by_id("summary").text_content()
    assert summary.startswith("130 executions, 130 active, 0 stale; the newest 100 shown;")


def test_pages_per_minute_from_two_interleaved_containers(
    tmp_path: Path, serve: Callable[..., Serve]
) -> None:
    """Two containers beating execution-wide numbers 1 s apart: the rate is
    per minute from the most crawled, not a saw between their beats."""
    eid = str(uuid.uuid4())
    store = open_store(str(tmp_path / "hb.sqlite3"))
    start = time.time() - 600
    for i in range(20):  # 10 minutes at 30 s: 60 pages per beat, 120 a minute
        for n, container in enumerate(("a", "b")):
            body = beat(execution_id=eid, container_id=container)
            body["progress"]["crawled_urls"] = 60 * i
            store.add(body, start + 30 * i + n)
    store.close()
    receiver = serve()
    page = render(receiver.url + f"/?execution={eid}")
    caption = page.get_element_by_id("caption-rate").text_content()
    assert caption == "pages per minute over time (max 120, over 8 min)"  # minute 1 to 9
    points = page.cssselect("#chart-rate polyline")[0].get("points").split()
    assert len(points) == 9  # one per whole minute
    ticks = [t.text for t in page.cssselect("#chart-rate .x-tick")]
    assert ticks == ["0", "2 min", "4 min", "6 min", "8 min"]
    assert [t.text for t in page.cssselect("#chart-rate .y-tick")] == ["0", "100", "200"]
    crawled = [t.text for t in page.cssselect("#chart-crawled .x-tick")]
    assert crawled == ["0", "2 min", "4 min", "6 min", "8 min"]  # 9.5 min of beats


def test_a_row_says_when_it_started_how_long_it_ran_and_a_latency_in_seconds(
    tmp_path: Path, serve: Callable[..., Serve]
) -> None:
    """From the beats' own ``start_time`` (the earliest sent, though the
    last beat has none) and ``runtime_seconds``, else from when its first
    and last beats arrived; latency from whole-second timestamps shown
    without its noise."""
    own, garbled, slow = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    kept = str(uuid.uuid4())
    store = open_store(str(tmp_path / "hb.sqlite3"))
    now = time.time()
    store.add(beat(execution_id=own), now)  # start_time 2024-01-01T10:00:00, 1800 s
    for at in (now - 5400, now - 3600):  # no runtime, a start_time that is no time
        body = beat(execution_id=garbled, timestamp=int(at))
        body["progress"].update(start_time="yesterday-ish", runtime_seconds=None)
        store.add(body, at + 0.4)
    huge = beat(execution_id=slow, timestamp=int(now) - 7)
    huge["progress"].update(runtime_seconds=1e300, start_time="9" * 64)  # no time, no runtime
    store.add(huge, int(now) + 0.2)  # 7.2 s on the way
    for at, start in ((now - 600, "2024-01-01T09:00:00"), (now - 300, "2024-01-01T09:30:00")):
        body = beat(execution_id=kept)
        body["progress"]["start_time"] = start
        store.add(body, at)
    body = beat(execution_id=kept)
    del body["progress"]["start_time"]
    store.add(body, now - 1)
    store.close()
    page = render(serve().url + "/")
    rows = {tr.get("data-execution-id"): tr for tr in page.cssselect("#rows tr")}
    headers = [th.text_content() for th in page.cssselect("#list-table th")]
    cells = {
        eid: dict(zip(headers, (td.text_content() for td in tr.cssselect("td")), strict=True))
        for eid, tr in rows.items()
    }
    assert cells[own]["started"] == "2024-01-01 10:00"
    assert rows[own].cssselect("td")[headers.index("started")].get("title") == (
        "start_time 2024-01-01T10:00:00"
    )
    assert cells[own]["runtime"] == "30 min"
    assert cells[own]["stage"] == "爬取中 (45/100)"
    assert cells[own]["items"] == "1250" and cells[own]["errors"] == "0"
    assert cells[own]["URLs (ok / failed)"] == "45 / 100 (42 / 3)"
    first_beat = time.strftime("%Y-%m-%d %H:%M", time.gmtime(now - 5400 + 0.4))
    assert cells[garbled]["started"] == first_beat  # the first beat's arrival, in UTC here
    assert cells[garbled]["runtime"] == "30 min"  # from its first beat to its last
    assert cells[own]["latency"] == "< 1 s"  # under a second: the timestamp's rounding
    assert cells[slow]["latency"] == "7 s"
    assert cells[slow]["runtime"] == "0.0 s"  # one beat: no time between its first and last
    assert cells[slow]["started"] == time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(now) + 0.2))
    assert cells[kept]["started"] == "2024-01-01 09:00"
    assert rows[kept].cssselect("td")[headers.index("started")].get("title") == (
        "start_time 2024-01-01T09:00:00"
    )
    assert not re.search(r"\d\.\d+ s$", " ".join(c["latency"] for c in cells.values()))


def test_a_start_time_is_read_as_the_receiver_reads_it(receiver: Serve) -> None:
    """Without an offset a start_time is UTC, in New York too; what is not
    an ISO time (a browser makes 2000-01-01 of "0") is no start at all."""
    naive, zero = beat(), beat(execution_id=str(uuid.uuid4()))
    naive["progress"]["start_time"] = "2024-01-01T09:00:00"
    zero["progress"]["start_time"] = "0"
    assert receiver.post(naive).status_code == receiver.post(zero).status_code == 200
    page = render(receiver.url + "/", tz="America/New_York")
    headers = [th.text_content() for th in page.cssselect("#list-table th")]
    at = headers.index("started")
    rows = {tr.get("data-execution-id"): tr.cssselect("td") for tr in page.cssselect("#rows tr")}
    assert rows[naive["execution_id"]][at].text_content() == "2024-01-01 04:00"
    zero_started = rows[zero["execution_id"]][at]
    assert zero_started.get("title", "").startswith("first beat ")
    assert not zero_started.text_content().startswith("2000")


def test_a_stage_cannot_turn_the_words_after_it_around(receiver: Serve) -> None:
    """A right-to-left override in a stage stays inside it: isolated."""
    body = beat()
    body["progress"]["current_stage"] = "\u202eparsing 12"
    assert receiver.post(body).status_code == 200
    page = render(receiver.url + f"/?execution={body['execution_id']}")
    state = page.get_element_by_id("detail-state").text_content()
    assert "; stage: \u2068\u202eparsing 12\u2069; last beat " in state


def test_time_ordered_ids_are_told_apart_by_their_last_digits(receiver: Serve) -> None:
    """UUIDv7 ids of executions started in the same minute share their first
    8 digits: the list shows their last 8; other ids their first 8."""
    v7 = ["01936b2e-1f00-7000-8000-00000000a1b2", "01936b2e-2a00-7abc-9000-00000000c3d4"]
    v4 = str(uuid.uuid4())
    for eid in (*v7, v4):
        assert receiver.post(beat(execution_id=eid)).status_code == 200
    listed = render(receiver.url + "/")
    shown = {
        tr.get("data-execution-id"): tr.cssselect("td.id a")[0].text_content()
        for tr in listed.cssselect("#rows tr")
    }
    assert shown == {v7[0]: "…0000a1b2", v7[1]: "…0000c3d4", v4: v4[:8]}


def test_counts_a_beat_did_not_carry_are_dashes_not_zeros(receiver: Serve) -> None:
    body = beat()
    body["progress"] = {"crawled_urls": 7}
    assert receiver.post(body).status_code == 200
    listed = render(receiver.url + "/")
    headers = [th.text_content() for th in listed.cssselect("#list-table th")]
    [row] = listed.cssselect("#rows tr")
    cells = dict(zip(headers, (td.text_content() for td in row.cssselect("td")), strict=True))
    assert (cells["items"], cells["errors"]) == ("–", "–")
    one = render(receiver.url + f"/?execution={body['execution_id']}")
    state = one.get_element_by_id("detail-state").text_content()
    assert " 7 / – URLs (– ok, – failed), – items, – errors; " in state


def test_the_words_agree_with_their_numbers(receiver: Serve) -> None:
    body = beat()
    body["progress"].update(data_items=1, error_count=1)
    assert receiver.post(body).status_code == 200
    listed = render(receiver.url + "/")
    one = render(receiver.url + f"/?execution={beat()['execution_id']}")
    summary = listed.get_element_by_id("summary").text_content()
    assert summary.startswith("1 execution, 1 active, 0 stale; updated ")
    state = one.get_element_by_id("detail-state").text_content()
    assert "1 item, 1 error;" in state and state.endswith("; 1 beat")
    assert one.get_element_by_id("summary").text_content().startswith("1 container; updated ")


def test_counts_a_beat_left_out_are_a_dash_and_its_percentage_is_made(receiver: Serve) -> None:
    """``send --total-urls 10 --crawled-urls 3``: no percentage, nor
    successful and failed counts."""
    body = beat(progress={"total_urls": 10, "crawled_urls": 3})
    assert receiver.post(body).status_code == 200
    rows = render(receiver.url + "/").get_element_by_id("rows")
    counts = [cell.text_content() for cell in rows.find_class("count")]
    assert "3 / 10 (– / –)" in counts, counts
    assert "30.00%" in rows.text_content()


def test_an_empty_receiver_says_how_to_point_a_crawler_at_it(
    tmp_path: Path, receiver: Serve, serve: Callable[..., Serve]
) -> None:
    page = render(receiver.url + "/")
    assert page.get_element_by_id("empty").get("hidden") is None
    assert page.get_element_by_id("list-table").get("hidden") is not None
    settings = page.get_element_by_id("empty-settings").text_content()
    assert settings == (
        'EXTENSIONS = {"scrapy_heartbeat.HeartbeatExtension": 500}\n'
        f'HEARTBEAT_API_BASE_URL = "{receiver.url}"'
    )
    hint = page.get_element_by_id("empty").text_content()
    assert 'ADDONS = {"scrapy_heartbeat.HeartbeatAddon": 0}' in hint
    assert page.get_element_by_id("empty-token").get("hidden") is not None
    assert receiver.post(beat()).status_code == 200
    time.sleep(0.5)  # the summary's counts are as of the last check
    filled = render(receiver.url + "/")
    assert filled.get_element_by_id("empty").get("hidden") is not None
    # With credentials the crawler needs its token too.
    guarded = serve("--token", "s3cret-token", db=str(tmp_path / "guarded.sqlite3"))
    with_token = render(guarded.url + "/#token=s3cret-token")
    assert with_token.get_element_by_id("empty-token").get("hidden") is None
    assert "HEARTBEAT_TOKEN" in with_token.get_element_by_id("empty-token").text_content()


ROW_HEIGHTS = """[...document.querySelectorAll("#rows tr, #containers tr")].map(tr => ({
  id: tr.dataset.executionId || tr.dataset.containerId,
  height: tr.getBoundingClientRect().height,
  titles: [...tr.querySelectorAll("[title]")].map(e => e.title),
  cut: [...tr.querySelectorAll(".clip")].some(e =>
    e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight),  // one line clamped
}))"""


def test_a_long_url_stage_or_container_keeps_its_row_one_line_high(receiver: Serve) -> None:
    """Cut with an ellipsis, whole in a title, in the list and on the
    execution's page (measured as laid out by Chromium)."""
    short, long = str(uuid.uuid4()), str(uuid.uuid4())
    url = "https://example.com/" + "a" * 1500 + "?" + "&".join(f"k{n}=v" for n in range(60))
    stage, container = "stage " * 150, "c" * 255
    for worker in ("worker-1", "worker-2"):  # two containers each, both listed
        assert receiver.post(beat(execution_id=short, container_id=worker)).status_code == 200
    body = beat(execution_id=long, container_id=container)
    body["progress"].update(current_url=url, current_stage=stage)
    assert receiver.post(beat(execution_id=long, container_id="worker-1")).status_code == 200
    assert receiver.post(body).status_code == 200  # the execution's last
    listed = {row["id"]: row for row in evaluate(receiver.url + "/", ROW_HEIGHTS)}
    assert listed[long]["height"] <= listed[short]["height"] + 4, listed
    assert listed[long]["cut"]
    assert url in listed[long]["titles"] and stage in listed[long]["titles"]
    detail = {row["id"]: row for row in evaluate(receiver.url + f"/?execution={long}", ROW_HEIGHTS)}
    assert detail[container]["height"] <= detail["worker-1"]["height"] + 4, detail
    assert detail[container]["cut"] and url in detail[container]["titles"]
    assert container in detail[container]["titles"]


FITS = """(() => { const page = document.documentElement;
  return {page: page.scrollWidth, window: page.clientWidth,
    tables: [...document.querySelectorAll("table")].filter(t => t.offsetParent).map(t =>
      [t.id || t.parentElement.id, t.getBoundingClientRect().width, t.parentElement.clientWidth])};
})()"""


def test_the_list_and_an_execution_fit_the_window(
    tmp_path: Path, serve: Callable[..., Serve]
) -> None:
    """A running fleet, and a container whose id, stage and URL are at their
    bounds: no table is wider than its place, nor the page than the window
    (a window 1400 px wide, and one of 1024 px)."""
    db = str(tmp_path / "hb.sqlite3")
    (big, _, _), _ = fill_fleet(db, finished=False)
    receiver = serve(db=db)
    body = beat(container_id="c" * 255)
    body["progress"].update(
        current_url="https://example.com/" + "a" * 2000, current_stage="s" * 1000
    )
    assert receiver.post(body).status_code == 200
    for width in (1400, 1024):
        for url in (receiver.url + "/", receiver.url + f"/?execution={big}"):
            fits = evaluate(url, FITS, width=width)
            assert fits["page"] <= fits["window"] == width, (width, url, fits)
            assert fits["tables"], (width, url)
            for name, table, room in fits["tables"]:
                assert table <= room, (width, url, name, table, room)


TICKS = """[...document.querySelectorAll("svg .x-tick, svg .y-tick")].map(t => {
  const box = t.getBBox(), svg = t.ownerSVGElement;
  return {chart: svg.id, tick: t.textContent, left: box.x, right: box.x + box.width, top: box.y,
    bottom: box.y + box.height, width: svg.width.baseVal.value, height: svg.height.baseVal.value};
})"""


def test_the_charts_labels_lie_inside_them(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    """A span of whole steps (8 min) puts the last tick at the right edge;
    counts in the millions make long labels up the side."""
    eid = str(uuid.uuid4())
    store = open_store(str(tmp_path / "hb.sqlite3"))
    start = time.time() - 600
    for i in range(20):  # as in the test of pages per minute, a million times more
        for n, container in enumerate(("a", "b")):
            body = beat(execution_id=eid, container_id=container)
            body["progress"]["crawled_urls"] = 3_000_000 * i
            store.add(body, start + 30 * i + n)
    store.close()
    ticks = evaluate(serve().url + f"/?execution={eid}", TICKS, width=1440)
    labels = {
        chart: [t["tick"] for t in ticks if t["chart"] == chart]
        for chart in ("chart-crawled", "chart-rate")
    }
    assert labels["chart-rate"][-5:] == ["0", "2 min", "4 min", "6 min", "8 min"], labels
    assert labels["chart-crawled"][:3] == ["0", "50M", "100M"], labels
    assert labels["chart-rate"][:3] == ["0", "5M", "10M"], labels
    for t in ticks:
        assert 0 <= t["left"] < t["right"] <= t["width"], t
        assert 0 <= t["top"] < t["bottom"] <= t["height"], t


#: The documentation's screenshots, remade by every run of this test.
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "_static"
#: Small enough for the docs; wide enough for the list's columns.
SHOT_SIZE = (1600, 400)


#: The simulated fleet beats every 10 s (the shortest interval the
#: default ``HEARTBEAT_MIN_INTERVAL`` allows), for 20 minutes; books-c, one
#: of the big crawl's three containers, is killed 12 minutes in.
EVERY, RUN, KILLED = 10, 1200, 720
#: Receivers that start watching it tell a container lost, and a crawl
#: stalled, after 20 s of their own watch: two intervals, the least a lost
#: sender may be silent for (a receiver never blames a sender for the time
#: it was not listening).
WATCHING = ("--check-every", "0.2", "--lost-after", "20", "--stall-after", "20")

Fleet = tuple[str, str, str]


def fleet_beat(
    eid: str, container: str, status: str, crawled: int, *, ran: float, at: float
) -> dict[str, Any]:
    """A beat sent at ``at``, ``ran`` seconds into the crawl."""
    body = beat(execution_id=eid, container_id=container, status=status, timestamp=int(at))
    body["progress"].update(
        total_urls=1200,
        crawled_urls=crawled,
        successful_urls=crawled - crawled // 40,
        failed_urls=crawled // 40,
        data_items=crawled * 3,
        error_count=crawled // 300,
        percentage=round(crawled / 12, 2),
        current_stage=f"crawling ({crawled}/1200)",
        current_url=f"https://books.example/catalogue/page-{crawled}.html",
        runtime_seconds=int(ran),
        start_time=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(at - ran)),
    )
    return body


def fleet_round(fleet: Fleet, ran: float, at: float) -> list[tuple[dict[str, Any], float]]:
    """The beats the fleet sends ``ran`` seconds into its run, from ``at``
    on, and when each arrives: the big crawl (until books-c is killed, on
    three containers), one stuck at 300 URLs, one small."""
    big, stuck, small = fleet
    minutes = ran / 60
    crawls: list[tuple[str, str, int, float]] = [
        (big, container, int(30 * minutes + minutes**2), n)
        for n, container in enumerate(("books-a", "books-b", "books-c"))
        if container != "books-c" or ran < KILLED
    ]
    crawls += [
        (stuck, "news-1", min(300, int(40 * minutes)), 0.3),
        (small, "quotes-1", int(20 * minutes), 0.6),
    ]
    return [
        (fleet_beat(eid, container, "running", crawled, ran=ran + after, at=at + after), at + after)
        for eid, container, crawled, after in crawls
    ]


def fill_fleet(db: str, finished: bool) -> tuple[Fleet, float]:
    """The fleet's last 20 minutes; every crawl ended (but books-c, which
    sends no final beat) when ``finished``. Returns the three executions'
    ids, the big crawl's first, and when they started."""
    store = open_store(db)
    now = time.time()
    fleet: Fleet = (str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))
    for ran in range(0, RUN, EVERY):
        for body, received in fleet_round(fleet, ran, now - RUN + ran):
            store.add(body, received)
    if finished:
        big, stuck, small = fleet
        for eid, container, status, crawled in (
            (big, "books-b", "completed", 1200),
            (big, "books-a", "completed", 1200),
            (stuck, "news-1", "failed", 300),
            (small, "quotes-1", "completed", 400),
        ):
            store.add(fleet_beat(eid, container, status, crawled, ran=RUN, at=now), now)
    store.close()
    return fleet, now - RUN


def keep_beating(
    receiver: Serve, fleet: Fleet, start: float, stop: threading.Event, replies: list[int]
) -> None:
    """The running fleet's beats, every :data:`EVERY` seconds until
    ``stop``: books-c stays silent."""
    while True:
        now = time.time()
        for body, _ in fleet_round(fleet, now - start, now):
            replies.append(receiver.post(body).status_code)
        if stop.wait(EVERY):
            return


def liveness(receiver: Serve, eid: str) -> dict[str, str]:
    """The execution's liveness (under ``""``) and each container's."""
    found = receiver.get(f"{EXECUTIONS}/{eid}").json()
    return {
        "": found["liveness"],
        **{c["container_id"]: c["liveness"] for c in found["containers"]},
    }


def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the receivers did not conclude in time"
        time.sleep(0.5)


SHOWN = """[...document.querySelectorAll("#rows tr")].map(tr => ({
  id: tr.dataset.executionId, row: tr.className,
  containers: [...tr.querySelectorAll("li")].map(li => li.textContent),
}))"""


def test_screenshots_of_each_state_for_the_docs(
    tmp_path: Path, serve: Callable[..., Serve]
) -> None:
    """The docs show these: an empty receiver, a running fleet (its list and
    one execution's page) and a finished one. The running fleet keeps
    beating through the receiver, but for its killed container: once the
    receivers have watched for long enough, their own rules call that one
    lost, and the stuck crawl stalled. A picture that differs from the
    committed one is no failure: it is the new picture."""
    empty = serve(db=str(tmp_path / "empty.sqlite3"))
    fleet, start = fill_fleet(str(tmp_path / "running.sqlite3"), finished=False)
    running = serve(*WATCHING, db=str(tmp_path / "running.sqlite3"))
    ended, _ = fill_fleet(str(tmp_path / "finished.sqlite3"), finished=True)
    finished = serve(*WATCHING, db=str(tmp_path / "finished.sqlite3"))
    stop, replies = threading.Event(), list[int]()
    beating = threading.Thread(target=keep_beating, args=(running, fleet, start, stop, replies))
    beating.start()
    try:
        big, stuck, _ = fleet
        wait_for(
            lambda: liveness(running, big) == {"": "running", "books-a": "running",
                                               "books-b": "running", "books-c": "lost"}
            and liveness(running, stuck)[""] == "stalled"
            and liveness(finished, ended[0])["books-c"] == "lost"
        )  # fmt: skip
        shown = {row["id"]: row for row in evaluate(running.url + "/", SHOWN, *SHOT_SIZE)}
        assert any(c.startswith("(lost) books-c: running, ") for c in shown[big]["containers"])
        assert shown[stuck]["row"] == "stalled"
        SHOTS.mkdir(exist_ok=True)
        shots = {
            "dashboard-empty.png": (empty.url + "/", (900, 330)),
            "dashboard-running.png": (running.url + "/", SHOT_SIZE),
            "dashboard-execution.png": (running.url + f"/?execution={big}", (1440, 520)),
            "dashboard-finished.png": (finished.url + "/", SHOT_SIZE),
        }
        for name, (url, (width, height)) in shots.items():
            screenshot(url, SHOTS / name, width, height)
            png = (SHOTS / name).read_bytes()
            assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
            assert struct.unpack(">II", png[16:24]) == (width, height), name  # the IHDR chunk
    finally:
        stop.set()
        beating.join()
    assert replies and set(replies) == {200}
