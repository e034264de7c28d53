"""What the receiver keeps of a beat's ``progress``, read back through the
HTTP read API, over random progress objects on both backends: bounded in
size, every valid spec field kept (a string cut to its bound at most),
every other field dropped, and the client told how many."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapy_heartbeat.payload import COUNTER_FIELDS
from scrapy_heartbeat.server.progress import MAX_PROGRESS_BYTES, MAX_STRING_BYTES, SPEC_FIELDS
from tests.server.beats import beat
from tests.server.serving import EXECUTIONS, HEARTBEAT, Serve

#: Any valid Unicode (no lone surrogate, which is refused), short or long.
characters = st.characters(exclude_categories=["Cs"])
texts = st.text(characters, max_size=40) | st.text(characters, min_size=1500, max_size=2500)
finite = st.floats(allow_nan=False, allow_infinity=False)
spec_values: dict[str, Any] = {
    **{name: st.integers(0, 2**63 - 1) for name in COUNTER_FIELDS},
    **{name: texts for name in MAX_STRING_BYTES},
    "percentage": st.floats(0, 100),
    "runtime_seconds": finite.filter(lambda x: x >= 0),
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | finite | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=10,
)
progresses = st.builds(
    lambda spec, other: {**other, **spec},
    st.fixed_dictionaries({}, optional=spec_values),
    st.dictionaries(texts.filter(lambda k: k not in SPEC_FIELDS), json_values, max_size=6),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def receiver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    db = None
    if request.param == "postgresql":
        db = request.getfixturevalue("postgres_server").database()
    r = Serve.start(tmp_path_factory.mktemp("progress"), db=db)
    yield r
    r.stop()


def stored_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def assert_kept(sent: dict[str, Any], stored: dict[str, Any]) -> None:
    assert stored_size(stored) <= MAX_PROGRESS_BYTES
    assert set(stored) == set(sent) & SPEC_FIELDS  # every spec field, nothing else
    for name, value in stored.items():
        if name not in MAX_STRING_BYTES:
            assert value == sent[name], name
            continue
        limit = MAX_STRING_BYTES[name]
        assert sent[name].startswith(value), name
        assert stored_size(value) - 2 <= limit, name
        if value != sent[name]:  # cut: to its bound, not far below it
            assert stored_size(value) - 2 > limit - 6, name


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.too_slow,
    ],
)
@given(progress=progresses)
def test_what_is_stored_of_progress_is_bounded_and_keeps_the_spec(
    receiver: Serve, progress: dict[str, Any]
) -> None:
    eid = str(uuid.uuid4())
    data = json.dumps(beat(execution_id=eid, progress=progress), ensure_ascii=False)
    reply = requests.post(
        receiver.url + HEARTBEAT,
        data=data.encode("utf-8"),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    dropped = len(set(progress) - SPEC_FIELDS)
    assert reply.headers.get("Heartbeat-Progress-Dropped") == (str(dropped) if dropped else None)
    detail = receiver.get(f"{EXECUTIONS}/{eid}").json()
    for stored in (detail["progress"], detail["containers"][0]["progress"]):
        assert_kept(progress, stored)
    [history] = detail["history"]
    assert_kept(progress, history["progress"])


def test_a_long_current_url_is_cut_and_the_client_told(receiver: Serve) -> None:
    url = "https://example.com/?q=" + "é" * 5000
    progress = {**beat()["progress"], "current_url": url, "debug_dump": ["x" * 100] * 100}
    eid = str(uuid.uuid4())
    reply = receiver.post(beat(execution_id=eid, progress=progress))
    assert reply.status_code == 200
    assert set(reply.json()) == {"status", "timestamp", "execution_id"}  # the spec's reply
    assert reply.headers["Heartbeat-Progress-Dropped"] == "1"
    assert reply.headers["Heartbeat-Progress-Truncated"] == "current_url"
    stored = receiver.get(f"{EXECUTIONS}/{eid}").json()["progress"]
    assert stored["current_url"] == url[: len(stored["current_url"])]
    assert 2046 <= len(stored["current_url"].encode()) <= 2048
    assert "debug_dump" not in stored
    assert {k: v for k, v in stored.items() if k != "current_url"} == {
        k: v for k, v in beat()["progress"].items() if k != "current_url"
    }


def test_a_spec_field_of_the_wrong_type_is_still_refused(receiver: Serve) -> None:
    """Trimming is for what the spec leaves open; a spec field it types is
    checked as before."""
    progress = {**beat()["progress"], "current_url": ["not", "a", "string"]}
    reply = receiver.post(beat(execution_id=str(uuid.uuid4()), progress=progress))
    assert reply.status_code == 400
    assert "'progress.current_url'" in reply.json()["message"]
