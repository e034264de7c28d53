"""The JOBDIR state file is outside input: whatever it holds, loading it
either gives back a state this version would have written or refuses it
whole with one ERROR."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapy_heartbeat import jobstate
from scrapy_heartbeat.counts import MAX_COUNT, Counts
from scrapy_heartbeat.jobstate import FILENAME, JobState

EXECUTION = "550e8400-e29b-41d4-a716-446655440000"
GOOD = JobState(
    owner=EXECUTION,
    execution_id=EXECUTION,
    start_time="2026-01-02T03:04:05+00:00",
    runtime_seconds=12.5,
    counts=Counts(10, 7, 1, 6, 2),
    runs=1,
    worker="box/1/abcd1234",
)


def _load(directory: Path, content: str | bytes) -> JobState | None:
    path = directory / FILENAME
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return jobstate.load(str(directory), EXECUTION)


def test_a_saved_state_loads_back_whole(tmp_path: Path) -> None:
    jobstate.save(str(tmp_path), GOOD)
    assert jobstate.load(str(tmp_path), EXECUTION) == GOOD
    assert jobstate.load(str(tmp_path), EXECUTION.upper()) == GOOD  # one id, either case


def test_no_file_is_no_state(tmp_path: Path) -> None:
    assert jobstate.load(str(tmp_path), EXECUTION) is None


def _with(**changes: Any) -> str:
    return json.dumps({**GOOD.to_json(), **changes})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[]", "not an object"),
        ("null", "not an object"),
        ("[" * 20_000 + "]" * 20_000, "nested too deeply"),
        ("{", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (_with(start_time=5), "start_time"),
        (_with(start_time="x" * 70_000), "larger than"),
        (_with(start_time="yesterday"), "start_time"),
        (_with(total=10**20), "total"),
        (_with(total=2**63 - 1), "total"),  # a resumed run could not count on
        (_with(successful=50, failed=50), "more URLs crawled than there are"),
        (_with(start_time="9999-12-31T23:59:59+00:00"), "in the future"),
        (_with(owner="x\ud800"), "not printable UTF-8"),
        (_with(worker="w\u0000"), "not printable UTF-8"),
        (_with(successful=-1), "successful"),
        (_with(items=True), "items"),
        (_with(runtime_seconds=float("inf")), "runtime_seconds"),
        (_with(owner=""), "owner"),
        (_with(worker=["w"]), "worker"),
        (_with(execution_id="660e8400-e29b-41d4-a716-446655440000"), "saved for execution"),
    ],
)
def test_what_this_version_would_not_write_is_refused_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | bytes, reason: str
) -> None:
    with caplog.at_level(logging.ERROR):
        assert _load(tmp_path, content) is None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and reason in errors[0], errors
    assert "counting this execution from 0" in errors[0]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=30,
)
_fields = st.fixed_dictionaries(
    {},
    optional={name: _json for name in GOOD.to_json()},
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.one_of(_json, _fields, st.binary(max_size=200).map(lambda b: b)))
def test_any_content_loads_as_a_valid_state_or_nothing(tmp_path: Path, raw: Any) -> None:
    content = raw if isinstance(raw, bytes) else json.dumps(raw)
    state = _load(tmp_path, content)
    if state is not None:  # what loads is what this version writes
        assert JobState.from_json(state.to_json()) == state
        assert state.execution_id.lower() == EXECUTION
        assert all(0 <= getattr(state.counts, n) <= MAX_COUNT for n in ("total", "items"))
