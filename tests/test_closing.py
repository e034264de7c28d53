"""How a crawl ends, as pure rules: the final status and the close's budget."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time

import pytest

from scrapy_heartbeat.client import HeartbeatResult
from scrapy_heartbeat.closing import CloseBudget, status_on_close
from scrapy_heartbeat.settings import load_config

COMPLETED = frozenset({"finished", "closespider_itemcount"})


@pytest.mark.parametrize(
    ("reason", "start_failed", "jobdir", "status"),
    [
        ("finished", False, False, "completed"),
        ("closespider_itemcount", False, True, "completed"),
        ("finished", True, False, "failed"),  # start() raised; Scrapy says finished
        ("shutdown", False, True, "paused"),
        ("shutdown", True, True, "failed"),
        ("shutdown", False, False, "failed"),
        ("closespider_errorcount", False, True, "failed"),
        ("cancelled", False, False, "failed"),
    ],
)
def test_the_final_status(reason: str, start_failed: bool, jobdir: bool, status: str) -> None:
    assert status_on_close(reason, COMPLETED, start_failed, jobdir) == status


def _config(**settings: object):  # type: ignore[no-untyped-def]
    config = load_config({"HEARTBEAT_API_BASE_URL": "http://p", **settings}.get, {})
    assert config is not None
    return config


def test_the_budget_after_sigterm_is_the_shorter_one() -> None:
    config = _config(HEARTBEAT_CLOSE_TIMEOUT=30, HEARTBEAT_SHUTDOWN_TIMEOUT=5)
    assert CloseBudget.for_reason(config, "shutdown") == CloseBudget(
        5, "HEARTBEAT_SHUTDOWN_TIMEOUT"
    )
    assert CloseBudget.for_reason(config, "finished") == CloseBudget(30, "HEARTBEAT_CLOSE_TIMEOUT")
    longer = _config(HEARTBEAT_CLOSE_TIMEOUT=2, HEARTBEAT_SHUTDOWN_TIMEOUT=5)
    assert CloseBudget.for_reason(longer, "shutdown").seconds == 2
    budget = CloseBudget(5, "HEARTBEAT_SHUTDOWN_TIMEOUT")
    assert budget.for_sender == pytest.approx(4.75)  # the sender gives up first


def test_the_backstop_ends_the_close_at_the_budget_whatever_the_sender_does() -> None:
    budget = CloseBudget(0.3, "HEARTBEAT_CLOSE_TIMEOUT")
    never: concurrent.futures.Future[HeartbeatResult] = concurrent.futures.Future()
    began = time.monotonic()
    result = asyncio.run(budget.backstop(never))
    assert time.monotonic() - began < 1.0
    assert dataclasses.astuple(result)[:2] == (
        "failed",
        "no answer (HEARTBEAT_CLOSE_TIMEOUT=0.3s reached)",
    )
    done: concurrent.futures.Future[HeartbeatResult] = concurrent.futures.Future()
    done.set_result(HeartbeatResult("ok", beat_status="completed"))
    assert asyncio.run(budget.backstop(done)).beat_status == "completed"
