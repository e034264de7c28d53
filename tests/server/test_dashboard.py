"""The dashboard in headless Chromium (Debian's ``chromium`` package): rows
render, stale executions stand out, and markup inside heartbeat values stays
inert text."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import html as lxml_html

from scrapy_heartbeat import execution_token
from scrapy_heartbeat.server import open_store
from tests.server.beats import beat
from tests.server.serving import Serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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


def render(url: str) -> lxml_html.HtmlElement:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=4000",
                "--dump-dom",
                url,
            ],
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
    assert rows[stale_id].cssselect("a")[0].get("href") == f"?execution={stale_id}"
    assert rows[stale_id].cssselect("td")[9].text_content().endswith(" s ago")
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
    assert with_token.get_element_by_id("summary").text_content().startswith("1 executions")
    assert "token was refused" in wrong.get_element_by_id("summary").text_content()


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
    assert "50 / 100 URLs (42 ok, 3 failed), 15 items, 1 errors; last beat " in state
    assert "; 12 beats" in state
    crawled = page.cssselect("#chart-crawled polyline")[0].get("points").split()
    assert len(crawled) == 12  # one point per beat
    # Per minute: a history of a second has no whole minute yet.
    assert not page.cssselect("#chart-rate polyline")
    rate = page.get_element_by_id("caption-rate").text_content()
    assert rate == "pages per minute over time: not enough beats yet"
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
