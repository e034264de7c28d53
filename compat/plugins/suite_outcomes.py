"""A pytest plugin (``-p suite_outcomes``) for ``make test-scrapy``'s runs of
Scrapy's test suite, in both modes alike.

* In the process that reports (pytest-xdist's controller, or pytest alone):
  writes each test's outcome, by node id, to ``SUITE_OUTCOMES`` (JSON) at the
  end of the session: ``passed``, ``failed`` (the call failed), ``error``
  (its setup or teardown failed), ``skipped``, ``xfailed``, ``xpassed``, and
  ``collect-error`` for a module that could not be collected, each with the
  failure's message and the test's duration.
* In the process that runs the tests, with ``SCRAPY_HEARTBEAT_COMPAT_TRACE``
  set: appends which test ran in which process and when, so that an
  execution the receiver stored can be traced to the test that ran it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "failed": 3, "error": 4}


def _trace(**fields: Any) -> None:
    path = os.environ.get("SCRAPY_HEARTBEAT_COMPAT_TRACE")
    if not path:
        return
    fields.update(pid=os.getpid(), t=time.time())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(fields, default=str) + "\n").encode())
    finally:
        os.close(fd)


def _message(report: Any) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = getattr(crash, "message", None) or str(getattr(report, "longreprtext", "") or "")
    return text.strip()[-2000:]


class Outcomes:
    def __init__(self, path: str) -> None:
        self.path = path
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        entry = self.tests.setdefault(
            report.nodeid, {"outcome": "passed", "duration": 0.0, "message": ""}
        )
        entry["duration"] += getattr(report, "duration", 0.0) or 0.0
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "skipped"
        else:
            outcome = "passed"
        if _RANK[outcome] > _RANK[entry["outcome"]]:
            entry["outcome"] = outcome
            if outcome in ("failed", "error"):
                entry["message"] = f"[{report.when}] {_message(report)}"
            elif outcome == "skipped":
                entry["message"] = _message(report)[:300]

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.tests[report.nodeid] = {
                "outcome": "collect-error",
                "duration": 0.0,
                "message": _message(report),
            }

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump({"exitstatus": int(exitstatus), "tests": self.tests}, f, indent=1)


class TestTrace:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:
        start = time.time()
        yield
        _trace(event="test", nodeid=item.nodeid, start=start, end=time.time())


def pytest_configure(config: Any) -> None:
    path = os.environ.get("SUITE_OUTCOMES")
    if path and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Outcomes(path), "suite-outcomes")
    if os.environ.get("SCRAPY_HEARTBEAT_COMPAT_TRACE"):
        config.pluginmanager.register(TestTrace(), "suite-test-trace")
