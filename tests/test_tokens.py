"""An execution's token (``scrapy_heartbeat.execution_token``, ``scrapy-heartbeat
token``) and the crawler's ``HEARTBEAT_TOKEN``, as pure functions and as a
user runs the command."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest

from scrapy_heartbeat import execution_token
from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.settings import crawler_token, load_config
from tests.conftest import EXECUTION_ID
from tests.test_cli import cli

KEY = "k" * 40


def test_the_token_is_the_documented_hmac_of_the_lower_case_id() -> None:
    """What a platform written in another language computes."""
    expected = hmac.new(KEY.encode(), EXECUTION_ID.lower().encode(), hashlib.sha256).hexdigest()
    assert execution_token(KEY, EXECUTION_ID) == expected
    assert execution_token(KEY, EXECUTION_ID.upper()) == expected
    assert execution_token(f" {KEY}\n", f"{EXECUTION_ID}\n") == expected  # a secret file's newline
    assert execution_token(KEY.encode(), EXECUTION_ID) == expected
    assert execution_token("j" * 40, EXECUTION_ID) != expected


@pytest.mark.parametrize(
    ("key", "execution_id", "says"),
    [
        ("", EXECUTION_ID, "key is empty"),
        ("   \n", EXECUTION_ID, "key is empty"),
        ("short-key", EXECUTION_ID, "shorter than 32 characters"),
        (KEY, "not-a-uuid", "'not-a-uuid' is not a UUID"),
        (KEY, "{" + EXECUTION_ID + "}", "is not a UUID"),
    ],
)
def test_unusable_keys_and_ids_are_refused(key: str, execution_id: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        execution_token(key, execution_id)
    assert key.strip() == "" or key not in str(refused.value)


def test_token_command_prints_the_execution_token() -> None:
    by_env = cli("token", EXECUTION_ID.upper(), env={"HEARTBEAT_SIGNING_KEY": KEY})
    by_flag = cli("token", "--signing-key", KEY, EXECUTION_ID)
    assert (by_env.returncode, by_env.stderr) == (0, "")
    assert by_env.stdout == execution_token(KEY, EXECUTION_ID) + "\n"
    assert by_flag.stdout == by_env.stdout


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ((EXECUTION_ID,), {}, "set the HEARTBEAT_SIGNING_KEY environment variable"),
        ((EXECUTION_ID,), {"HEARTBEAT_SIGNING_KEY": ""}, "HEARTBEAT_SIGNING_KEY is empty"),
        (("--signing-key", "tiny", EXECUTION_ID), {}, "--signing-key is shorter than 32"),
        (("not-an-id",), {"HEARTBEAT_SIGNING_KEY": KEY}, "'not-an-id' is not a UUID"),
    ],
)
def test_token_command_refuses_in_one_line(
    args: tuple[str, ...], env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEARTBEAT_SIGNING_KEY", raising=False)
    done = cli("token", *args, env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert says in done.stderr
    assert "tiny" not in done.stderr


def test_crawler_token_setting_else_environment() -> None:
    warnings: list[str] = []
    env = {"HEARTBEAT_TOKEN": "from-env"}
    assert crawler_token("from-setting", env, warnings) == "from-setting"
    assert crawler_token(None, env, warnings) == "from-env"
    assert crawler_token(" padded\n", {}, warnings) == "padded"
    assert warnings == []


def test_an_empty_crawler_token_counts_as_unset_with_one_warning() -> None:
    warnings: list[str] = []
    assert crawler_token("", {"HEARTBEAT_TOKEN": "from-env"}, warnings) == "from-env"
    assert warnings == []
    assert crawler_token("  ", {"HEARTBEAT_TOKEN": ""}, warnings) is None
    assert warnings == [
        "the HEARTBEAT_TOKEN setting and the HEARTBEAT_TOKEN environment variable are empty "
        "(is the secret it comes from unset?); sending beats without a token"
    ]


@pytest.mark.parametrize("token", ["two words", "caf\u00e9", "line\nbreak", 12345])
def test_a_token_http_cannot_carry_disables_reporting(token: object) -> None:
    settings = {"HEARTBEAT_API_BASE_URL": "http://127.0.0.1:1", "HEARTBEAT_TOKEN": token}
    with pytest.raises(ConfigError, match="HEARTBEAT_TOKEN setting") as refused:
        load_config(settings.get, {})
    assert str(token) not in str(refused.value)


def test_empty_token_setting_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = {"HEARTBEAT_API_BASE_URL": "http://127.0.0.1:1", "HEARTBEAT_TOKEN": ""}
    with caplog.at_level(logging.WARNING, logger="scrapy_heartbeat"):
        config = load_config(settings.get, {})
    assert config is not None and config.token is None
    assert [r.getMessage() for r in caplog.records] == [
        "scrapy-heartbeat: the HEARTBEAT_TOKEN setting is empty (is the secret it comes from "
        "unset?); sending beats without a token"
    ]
