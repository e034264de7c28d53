"""What the receiver keeps of a beat's ``progress``, read back through the
HTTP read API, over random progress objects on both backends: bounded in
size, every valid spec field kept (a string cut to its bound at most),
every other field dropped, and the client told how many; and the earliest
``start_time`` any beat sent, kept when later beats carry none."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapy_heartbeat.payload import COUNTER_FIELDS
from scrapy_heartbeat.server import open_store
from scrapy_heartbeat.server.progress import (
    MAX_PROGRESS_BYTES,
    MAX_STRING_BYTES,
    SPEC_FIELDS,
    start_of,
)
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


def started(start_time: str | None, **kw: Any) -> dict[str, Any]:
    """A beat whose progress has ``start_time`` (None: has none)."""
    body = beat(**kw)
    body["progress"].pop("start_time")
    if start_time is not None:
        body["progress"]["start_time"] = start_time
    return body


def test_the_earliest_start_time_stays_when_later_beats_lack_one(receiver: Serve) -> None:
    """Kept for the execution and each container, in the list and the
    detail; ordered as times, not as text (11:00+02:00 is before 09:30Z)."""
    eid = str(uuid.uuid4())
    for container, start in [
        ("a", "2024-01-01T09:30:00Z"),
        ("b", "2024-01-01T11:00:00+02:00"),  # the earliest
        ("b", "2024-01-01T12:00:00+00:00"),
        ("a", "yesterday"),  # no time: left aside
        ("a", None),  # the execution's last beat
    ]:
        assert receiver.post(started(start, execution_id=eid, container_id=container)).ok
    detail = receiver.get(f"{EXECUTIONS}/{eid}").json()
    assert "start_time" not in detail["progress"]
    assert detail["start_time"] == "2024-01-01T11:00:00+02:00"
    by_container = {c["container_id"]: c["start_time"] for c in detail["containers"]}
    assert by_container == {"a": "2024-01-01T09:30:00Z", "b": "2024-01-01T11:00:00+02:00"}
    listed = receiver.get(EXECUTIONS).json()["executions"]
    assert [e["start_time"] for e in listed if e["execution_id"] == eid] == [
        "2024-01-01T11:00:00+02:00"
    ]


def test_without_any_start_time_there_is_none(receiver: Serve) -> None:
    eid = str(uuid.uuid4())
    for start in (None, "2024-01-01T10:00:00.1Z", "2024-01-01T10:00:00\x00"):
        assert receiver.post(started(start, execution_id=eid)).ok
    detail = receiver.get(f"{EXECUTIONS}/{eid}").json()
    assert detail["start_time"] is None and detail["containers"][0]["start_time"] is None


def test_a_database_without_the_start_columns_gets_them(
    db: str, serve: Callable[..., Serve]
) -> None:
    """A database a receiver made without them: they are added at start,
    and filled from the next beat."""
    store = open_store(db)
    store.add(started(None))
    store._write(
        *(
            (f"ALTER TABLE {table} DROP COLUMN {column}", ())
            for table in ("executions", "containers")
            for column in ("start_time", "started_at")
        )
    )
    store.close()
    receiver = serve(db=db)
    assert receiver.post(started("2024-01-01T10:00:00Z")).ok
    assert receiver.post(started(None)).ok
    detail = receiver.get(f"{EXECUTIONS}/{beat()['execution_id']}").json()
    assert detail["beats"] == 3 and detail["start_time"] == "2024-01-01T10:00:00Z"


@given(st.text(characters, max_size=80))
def test_any_start_time_is_a_time_or_none(text: str) -> None:
    found = start_of({"start_time": text})
    assert found is None or (found[0] == text and math.isfinite(found[1]))


#: No offset (taken as UTC), or one of whole minutes, as ISO 8601 writes them.
offsets = st.none() | st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-1439, 1439)
)


@given(st.datetimes(), offsets, st.booleans())
def test_an_iso_time_reads_as_its_instant(
    when: datetime, offset: timezone | None, whole_seconds: bool
) -> None:
    when = when.replace(tzinfo=offset, microsecond=0 if whole_seconds else when.microsecond)
    text = when.isoformat(timespec="seconds" if whole_seconds else "microseconds")
    expected = when.replace(tzinfo=offset or timezone.utc).timestamp()
    assert start_of({"start_time": text}) == (text, expected)
    zulu = text.replace("+00:00", "Z")
    assert start_of({"start_time": zulu}) == (zulu, expected)
