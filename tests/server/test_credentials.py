"""Scoped credentials against a real receiver: a beat takes only its own
execution's token, reads and ``/metrics`` only the read token, which never
writes; ``serve`` refuses unusable or mixed credentials at start."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scrapy_heartbeat import execution_token
from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.server.credentials import credentials_from
from tests.conftest import EXECUTION_ID
from tests.server.beats import beat
from tests.server.serving import EXECUTIONS, Serve

KEY = "signing-key-of-the-test-receiver-0123456789"
READ = "read-token-of-the-test-receiver"
SCOPED = ("--signing-key", KEY, "--read-token", READ)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def scoped(serve: Callable[..., Serve]) -> Serve:
    return serve(*SCOPED)


def test_a_beat_takes_its_own_executions_token(scoped: Serve) -> None:
    other = str(uuid.uuid4())
    own = execution_token(KEY, EXECUTION_ID)
    assert scoped.post(beat(), headers=bearer(own)).status_code == 200
    # However the sender spells the id, one execution has one token.
    upper = beat(execution_id=EXECUTION_ID.upper())
    assert scoped.post(upper, headers=bearer(own)).status_code == 200
    refused = [
        scoped.post(beat(execution_id=other), headers=bearer(own)),  # another execution
        scoped.post(beat(), headers=bearer(READ)),  # the read token never writes
        scoped.post(beat(), headers=bearer(KEY)),  # nor does the key itself
        scoped.post(beat(), headers=bearer(own.upper())),
        scoped.post(beat(), headers={"Authorization": "Bearer "}),
        scoped.post(beat()),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
    assert all(r.headers["WWW-Authenticate"] == 'Bearer realm="heartbeat"' for r in refused)
    assert refused[0].json() == {
        "status": "error",
        "message": "missing or wrong Authorization: Bearer token for this execution_id; a beat "
        "takes its execution's own token (scrapy-heartbeat token EXECUTION_ID)",
    }
    assert scoped.rows() == 2
    assert scoped.get(f"{EXECUTIONS}/{other}", headers=bearer(READ)).status_code == 404


def test_reads_and_metrics_take_only_the_read_token(scoped: Serve) -> None:
    own = execution_token(KEY, EXECUTION_ID)
    assert scoped.post(beat(), headers=bearer(own)).status_code == 200
    for path in (EXECUTIONS, f"{EXECUTIONS}/{EXECUTION_ID}", "/metrics"):
        assert scoped.get(path, headers=bearer(READ)).status_code == 200, path
        for wrong in (own, KEY, READ.upper(), ""):
            assert scoped.get(path, headers=bearer(wrong)).status_code == 401, (path, wrong)
    assert scoped.get(EXECUTIONS).json()["message"] == (
        "missing or wrong Authorization: Bearer token; reads take the receiver's read token"
    )
    assert scoped.get("/").status_code == 200  # the page is public; its data is not


def test_the_read_token_cannot_write_anywhere(scoped: Serve) -> None:
    for path in (EXECUTIONS, f"{EXECUTIONS}/{EXECUTION_ID}", "/metrics"):
        answer = requests.post(scoped.url + path, json=beat(), headers=bearer(READ), timeout=10)
        assert answer.status_code == 405, path
    assert scoped.post(beat(), headers=bearer(READ)).status_code == 401
    assert scoped.rows() == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    execution_id=st.uuids().map(str),
    other=st.uuids().map(str),
    garbage=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
)
def test_over_the_wire_only_the_right_token_is_accepted(
    scoped: Serve, execution_id: str, other: str, garbage: str
) -> None:
    body = beat(execution_id=execution_id)
    right = execution_token(KEY, execution_id)
    wrong = {execution_token(KEY, other), garbage, right[:-1], right + "0", READ} - {right}
    for token in wrong:
        assert scoped.post(body, headers=bearer(token)).status_code == 401, token
    assert scoped.post(body, headers=bearer(right)).status_code == 200


@settings(max_examples=300)
@given(
    key=st.text(min_size=32, max_size=80),
    execution_id=st.uuids().map(str),
    other=st.uuids().map(str),
    token=st.binary(max_size=80),
)
def test_only_the_token_of_the_key_and_the_id_opens_a_beat(
    key: str, execution_id: str, other: str, token: bytes
) -> None:
    """Over random keys, ids and tokens, without a receiver per key."""
    try:
        credentials = credentials_from(None, key, "reader", {})
    except ConfigError:  # blank enough to be shorter than 32 once stripped
        assume(False)
    right = execution_token(key, execution_id)
    assert credentials.may_beat(f"Bearer {right}".encode(), execution_id)
    assert credentials.may_beat(f"bearer  {right} ".encode(), execution_id)
    assert not credentials.may_beat(f"Bearer {right}".encode(), other) or other == execution_id
    accepted = credentials.may_beat(b"Bearer " + token, execution_id)
    assert accepted == (token.strip() == right.encode())
    assert not credentials.may_read(f"Bearer {right}".encode())


def test_simple_mode_keeps_one_token_for_everything(serve: Callable[..., Serve]) -> None:
    simple = serve("--token", "the-one-token")
    other = beat(execution_id=str(uuid.uuid4()))
    assert simple.post(other, headers=bearer("the-one-token")).status_code == 200
    assert simple.get(EXECUTIONS, headers=bearer("the-one-token")).status_code == 200
    assert simple.get("/metrics", headers=bearer("the-one-token")).status_code == 200
    assert (
        simple.post(other, headers=bearer(execution_token(KEY, other["execution_id"]))).status_code
        == 401
    )


def start(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``serve`` expected to refuse to start: it must exit at once."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("HEARTBEAT_")}
    child.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "scrapy_heartbeat", "serve", "--port", "0",
         "--db", str(tmp_path / "hb.sqlite3"), *args],
        capture_output=True, text=True, env=child, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("--token", ""), {}, "--token is empty"),
        (("--token", "  "), {}, "--token is empty"),
        ((), {"HEARTBEAT_TOKEN": ""}, "HEARTBEAT_TOKEN is empty"),
        (("--token", "two words"), {}, "--token holds spaces"),
        (
            (),
            {"HEARTBEAT_SIGNING_KEY": "", "HEARTBEAT_READ_TOKEN": READ},
            "HEARTBEAT_SIGNING_KEY is empty",
        ),
        (
            ("--signing-key", "tiny-key", "--read-token", READ),
            {},
            "--signing-key is shorter than 32",
        ),
        (("--read-token", "", "--signing-key", KEY), {}, "--read-token is empty"),
        (("--signing-key", KEY), {}, "--signing-key without --read-token"),
        (("--read-token", READ), {}, "--read-token without --signing-key"),
        (
            ("--token", "t0ken", *SCOPED),
            {},
            "--token (one token for everything) cannot be combined with --signing-key",
        ),
        (SCOPED, {"HEARTBEAT_TOKEN": "t0ken"}, "HEARTBEAT_TOKEN (one token for everything) cannot"),
        (("--signing-key", KEY, "--read-token", KEY), {}, "--read-token is the signing key"),
    ],
)
def test_serve_refuses_unusable_credentials_in_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    done = start(tmp_path, *args, env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert says in done.stderr
    assert "tiny-key" not in done.stderr and KEY not in done.stderr  # no secret quoted
    assert not (tmp_path / "hb.sqlite3").exists()  # refused before anything was opened


def test_credentials_from_the_environment() -> None:
    env = {"HEARTBEAT_SIGNING_KEY": KEY, "HEARTBEAT_READ_TOKEN": READ}
    scoped = credentials_from(None, None, None, env)
    assert (scoped.mode, scoped.signing_key, scoped.read_token) == (
        "scoped",
        KEY.encode(),
        READ.encode(),
    )
    # An option wins over its variable.
    assert credentials_from(None, None, "other-reader", env).read_token == b"other-reader"
    assert credentials_from(None, None, None, {}).mode == "open"
    assert credentials_from(None, None, None, {"HEARTBEAT_TOKEN": "t"}).mode == "simple"
