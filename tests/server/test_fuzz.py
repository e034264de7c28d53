"""Arbitrary JSON and bytes at the receiver: always a well-formed 200 or 4xx,
never a 500, and never a stored row for an invalid body."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapy_heartbeat.server import validate_body
from tests.server.beats import beat
from tests.server.serving import HEARTBEAT, Serve

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=20,
)
# bodies near the contract: a valid beat with fields replaced by arbitrary values
near_valid = st.builds(
    lambda field, value, sub: (
        {**beat(), field: value}
        if sub is None
        else {**beat(), "progress": {**beat()["progress"], sub: value}}
    ),
    st.sampled_from(["execution_id", "container_id", "timestamp", "status", "progress", "extra"]),
    json_values,
    st.none() | st.sampled_from(["total_urls", "percentage", "current_url", "runtime_seconds"]),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_receiver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    directory = tmp_path_factory.mktemp("fuzz")
    db = None
    if request.param == "postgresql":
        db = request.getfixturevalue("postgres_server").database()
    r = Serve.start(directory, db=db)
    yield r
    r.stop()


def storable(value: Any) -> bool:
    """What a receiver can store and give back as JSON: finite numbers,
    integers within 64 bits, valid Unicode; an oracle of the test's own."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return abs(value) <= 2**63 - 1
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(storable(v) for v in value)
    assert isinstance(value, dict)
    return all(storable(k) and storable(v) for k, v in value.items())


def accepted(body: Any) -> bool:
    return validate_body(body) is None and storable(body)


def _check(r: Serve, session: requests.Session, data: bytes, valid: bool) -> None:
    before = r.rows()
    response = session.post(
        r.url + HEARTBEAT,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    reply = response.json()
    if valid:
        assert response.status_code == 200
        assert reply["status"] == "ok"
        assert r.rows() == before + 1
    else:
        assert 400 <= response.status_code < 500
        assert reply["status"] == "error"
        assert isinstance(reply["message"], str)
        assert r.rows() == before


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=json_values | near_valid)
def test_arbitrary_json(fuzz_receiver: Serve, body: object) -> None:
    with requests.Session() as session:
        _check(fuzz_receiver, session, json.dumps(body).encode(), accepted(body))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(fuzz_receiver: Serve, data: bytes) -> None:
    try:
        valid = accepted(json.loads(data))
    except (ValueError, RecursionError):
        valid = False
    with requests.Session() as session:
        _check(fuzz_receiver, session, data, valid)


def test_fuzzing_reached_valid_bodies(fuzz_receiver: Serve) -> None:
    # Runs after the two properties (same module, same receiver): the
    # near-valid strategy must have produced accepted bodies, or the
    # "valid means stored" half of the property was never exercised.
    assert fuzz_receiver.rows() > 0
