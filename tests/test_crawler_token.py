"""The crawler's ``HEARTBEAT_TOKEN`` against ``serve --signing-key``: real
crawls and ``scrapy-heartbeat send``, as a platform's container runs them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from scrapy_heartbeat import HeartbeatClient, execution_token
from scrapy_heartbeat.settings import load_config
from tests.conftest import EXECUTION_ID
from tests.crawl import CrawlResult, run_crawl
from tests.server.serving import EXECUTIONS, Serve
from tests.servers import SiteServer
from tests.test_cli import cli

KEY = "signing-key-of-the-test-receiver-0123456789"
READ = "read-token-of-the-test-receiver"
TOKEN = execution_token(KEY, EXECUTION_ID)
WRONG = execution_token(KEY, "00000000-0000-4000-8000-000000000000")


@pytest.fixture
def scoped(tmp_path: Path) -> Iterator[Serve]:
    receiver = Serve.start(tmp_path, "--signing-key", KEY, "--read-token", READ)
    yield receiver
    receiver.stop()


def stored(receiver: Serve) -> dict[str, object]:
    answer = receiver.get(
        f"{EXECUTIONS}/{EXECUTION_ID}", headers={"Authorization": f"Bearer {READ}"}
    )
    return dict(answer.json())


def crawl(receiver: Serve, site: SiteServer, token: str, **settings: object) -> CrawlResult:
    return run_crawl(
        "tests.spiders.PagesSpider",
        {
            "EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500},
            "HEARTBEAT_API_BASE_URL": receiver.url,
            "HEARTBEAT_EXECUTION_ID": EXECUTION_ID,
            "HEARTBEAT_INTERVAL": 0.2,
            "HEARTBEAT_MIN_INTERVAL": 0.1,
            **settings,
        },
        args={"site": site.url, "pages": "15"},
        env={"HEARTBEAT_TOKEN": token},
    )


def test_a_crawl_with_its_token_delivers_and_a_wrong_one_changes_nothing(
    scoped: Serve, pages_site: SiteServer
) -> None:
    wrong = crawl(scoped, pages_site, WRONG)
    assert scoped.rows() == 0
    right = crawl(scoped, pages_site, TOKEN, HEARTBEAT_DEBUG=True)
    for result in (wrong, right):
        assert result.returncode == 0, result.log[-3000:]
        assert len(result.items) == 15
    assert stored(scoped)["status"] == "completed"
    assert right.stats.get("heartbeat/rejected") is None
    refusals = [line for line in wrong.log.splitlines() if "rejected by the server" in line]
    assert refusals[0].endswith(
        "Heartbeat rejected by the server: missing or wrong Authorization: Bearer token for "
        "this execution_id; a beat takes its execution's own token (scrapy-heartbeat token "
        "EXECUTION_ID) (further failures are summarised every 10)"
    )
    for result in (wrong, right):
        assert TOKEN not in result.log and WRONG not in result.log


def test_the_token_wins_over_an_authorization_header_with_one_warning(
    scoped: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {
        "HEARTBEAT_API_BASE_URL": scoped.url.replace("http://", "http://user:pw@"),
        "HEARTBEAT_HEADERS": {"authorization": f"Bearer {WRONG}"},
        "HEARTBEAT_TOKEN": TOKEN,
    }
    config = load_config(settings.get, {})
    assert config is not None
    with caplog.at_level(logging.WARNING, logger="scrapy_heartbeat"):
        client = HeartbeatClient.from_config(config, EXECUTION_ID)
    with client:
        assert client.send("running").ok
    assert [r.getMessage() for r in caplog.records] == [
        "scrapy-heartbeat: HEARTBEAT_TOKEN and an Authorization header in HEARTBEAT_HEADERS "
        "are both set; the token is sent, the header is not",
        "scrapy-heartbeat: HEARTBEAT_API_BASE_URL has credentials, and HEARTBEAT_TOKEN wins; "
        "the URL's credentials are not sent",
    ]


def test_a_refusal_never_shows_the_token_sent_or_overridden(scoped: Serve) -> None:
    """The receiver echoing what it was sent must not put it in our logs."""
    with HeartbeatClient(
        scoped.url, "00000000-0000-4000-8000-000000000000", "c", token=TOKEN,
        headers={"Authorization": f"Bearer {WRONG}"},
    ) as client:  # fmt: skip
        assert client.header_authorization_ignored
        scrubbed = client._scrub(f"refused Bearer {TOKEN} and {WRONG}")
    assert scrubbed == "refused *** and ***"


def test_send_takes_heartbeat_token_from_the_environment(scoped: Serve) -> None:
    env = {"API_BASE_URL": scoped.url, "EXECUTION_ID": EXECUTION_ID}
    accepted = cli("send", "--status", "running", env={**env, "HEARTBEAT_TOKEN": TOKEN})
    refused = cli("send", env={**env, "HEARTBEAT_TOKEN": WRONG})
    empty = cli("send", env={**env, "HEARTBEAT_TOKEN": ""})
    header = cli(
        "send", "--header", f"Authorization: Bearer {WRONG}", env={**env, "HEARTBEAT_TOKEN": TOKEN}
    )
    assert (accepted.returncode, accepted.stderr) == (0, "")
    assert refused.returncode == 1
    assert "for this execution_id" in refused.stderr and WRONG not in refused.stderr
    assert empty.returncode == 1
    assert empty.stderr.splitlines()[0] == (
        "scrapy-heartbeat send: the HEARTBEAT_TOKEN environment variable is empty (is the "
        "secret it comes from unset?); sending beats without a token"
    )
    assert header.returncode == 0
    assert header.stderr == (
        "scrapy-heartbeat send: HEARTBEAT_TOKEN and --header 'Authorization: ...' are both "
        "set; the token is sent, the header is not\n"
    )
    assert stored(scoped)["container_id"]
