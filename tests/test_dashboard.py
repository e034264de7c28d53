"""The dashboard in headless Chromium (Debian's ``chromium`` package): rows
render, stale executions stand out, and markup inside heartbeat values stays
inert text."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import html as lxml_html

from tests.test_receiver import Receiver, beat, start_receiver, stop_receiver

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INJECTED_URL = "https://example.com/<img src=x onerror=\"document.title='pwned'\">"
INJECTED_STAGE = "<script>document.title='pwned'</script>"
INJECTED_CONTAINER = "<b id=bold>bold</b>"

if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must install Debian's chromium package (see .ci/run)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = start_receiver(tmp_path)
    yield r
    stop_receiver(r)


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


def test_dashboard_rows_stale_and_inert_markup(receiver: Receiver) -> None:
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
    assert "stale" in rows[stale_id].text_content()
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


def test_with_a_token_the_dashboard_asks_for_it(tmp_path: Path) -> None:
    """Not "0 executions": the page says it needs the token, and with it
    (here from the page's #token= fragment) shows the executions."""
    receiver = start_receiver(tmp_path, "--token", "s3cret-token")
    try:
        headers = {"Authorization": "Bearer s3cret-token"}
        assert receiver.post(beat(), headers=headers).status_code == 200
        without = render(receiver.url + "/")
        with_token = render(receiver.url + "/#token=s3cret-token")
        wrong = render(receiver.url + "/#token=wrong")
    finally:
        stop_receiver(receiver)
    summary = without.get_element_by_id("summary").text_content()
    assert "needs its token" in summary
    assert without.get_element_by_id("token-form").get("hidden") is None
    assert not without.cssselect("#rows tr")
    assert [tr.get("data-execution-id") for tr in with_token.cssselect("#rows tr")] == [
        beat()["execution_id"]
    ]
    assert with_token.get_element_by_id("summary").text_content().startswith("1 executions")
    assert "token was refused" in wrong.get_element_by_id("summary").text_content()
