"""What a paused ``JOBDIR`` crawl keeps for its resumed run.

Scrapy pauses a ``JOBDIR`` crawl on Ctrl-C or SIGTERM and resumes it when the
same command runs again; its ``SpiderState`` saves ``spider.state`` in the
``JOBDIR`` at every close. This is the heartbeat's counterpart: the counters,
``start_time`` and running time so far, and the owner of the markers in the
requests queued on disk, so that the resumed run continues them instead of
starting from 0/0. Saved at every close (a small JSON file, written whole and
then renamed into place); a run killed before its close leaves the previous
state, and the resumed run then adopts what it finds queued.

The file is outside input: anything in it that this version would not have
written (another shape, wrong types, sizes no crawl reaches, another
execution's state) is refused whole with one ERROR, and the run counts from 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from scrapy_heartbeat.counts import COUNTER_NAMES, MAX_COUNT, MAX_TIME_LENGTH, Counts
from scrapy_heartbeat.redact import utf8_text

logger = logging.getLogger(__name__)

FILENAME = "heartbeat.state.json"
#: A state this version writes is a few hundred bytes.
MAX_FILE_BYTES = 64 * 1024
#: Owner and worker ids are a UUID or ``container/pid/nonce``.
MAX_ID_LENGTH = 600
#: The largest counter loaded: far beyond any crawl, far below what a
#: receiver stores, so a resumed run can still count on.
MAX_SAVED = MAX_COUNT // 1024
#: A hundred years of running time.
MAX_RUNTIME = 100 * 365 * 86400.0


@dataclass(frozen=True)
class JobState:
    owner: str
    execution_id: str
    start_time: str
    runtime_seconds: float = 0.0
    counts: Counts = field(default_factory=Counts)
    runs: int = 0  # runs that saved this state, the last included
    worker: str = ""  # the worker id, with shared counters

    def to_json(self) -> dict[str, Any]:
        """The file's form: every counter a key of its own."""
        flat: dict[str, Any] = {
            "owner": self.owner,
            "execution_id": self.execution_id,
            "start_time": self.start_time,
            "runtime_seconds": self.runtime_seconds,
        }
        flat.update({name: getattr(self.counts, name) for name in COUNTER_NAMES})
        flat.update(runs=self.runs, worker=self.worker)
        return flat

    @classmethod
    def from_json(cls, raw: Any) -> JobState:
        """The state ``raw`` holds; ValueError naming the first field that
        this version would not have written."""
        if not isinstance(raw, dict):
            raise ValueError(f"it holds a {type(raw).__name__}, not an object")
        counts = Counts(**{name: _count(raw, name) for name in COUNTER_NAMES})
        if counts.crawled > counts.total:
            raise ValueError("more URLs crawled than there are")
        return cls(
            owner=_text(raw, "owner", MAX_ID_LENGTH),
            execution_id=_text(raw, "execution_id", MAX_ID_LENGTH),
            start_time=_time(raw, "start_time"),
            runtime_seconds=_runtime(raw.get("runtime_seconds", 0.0)),
            counts=counts,
            runs=_count(raw, "runs"),
            worker=_text(raw, "worker", MAX_ID_LENGTH, required=False),
        )


def load(jobdir: str, execution_id: str) -> JobState | None:
    """The state the previous run of ``execution_id`` saved in ``jobdir``,
    or None: no previous run, or a file refused (one ERROR; the run then
    counts from 0)."""
    path = Path(jobdir, FILENAME)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"it is larger than {MAX_FILE_BYTES} bytes")
        state = JobState.from_json(json.loads(path.read_text(encoding="utf-8")))
        if state.execution_id.lower() != execution_id.lower():
            raise ValueError(f"it was saved for execution {state.execution_id}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        logger.error(
            "scrapy-heartbeat: ignoring %(path)s (%(reason)s); counting this execution from 0. "
            "Delete the file, or keep the JOBDIR for the execution that wrote it",
            {"path": path, "reason": _reason(exc)},
        )
        return None
    logger.info(
        "scrapy-heartbeat: resuming the counters of JOBDIR %(jobdir)s: %(crawled)d/%(total)d "
        "URLs, %(items)d items, %(runtime)gs of running time since %(start)s",
        {
            "jobdir": jobdir,
            "crawled": state.counts.crawled,
            "total": state.counts.total,
            "items": state.counts.items,
            "runtime": state.runtime_seconds,
            "start": state.start_time,
        },
    )
    return state


def save(jobdir: str, state: JobState) -> None:
    """Write ``state`` into ``jobdir``; a failure is logged, never raised."""
    path = Path(jobdir, FILENAME)
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(state.to_json(), ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, path)
    except (OSError, ValueError) as exc:  # ValueError: text that is not UTF-8
        logger.error("scrapy-heartbeat: cannot save %s (%s)", path, exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return "it is not JSON"
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8"
    return str(exc) if isinstance(exc, ValueError) else type(exc).__name__


def _count(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAVED:
        raise ValueError(f"{name} is not a whole number from 0 to {MAX_SAVED}")
    return value


def _text(raw: dict[str, Any], name: str, limit: int, required: bool = True) -> str:
    value = raw.get(name, None if required else "")
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        raise ValueError(f"{name} is not a text of 1 to {limit} characters")
    if not value.isprintable() or utf8_text(value) != value:
        raise ValueError(f"{name} holds characters that are not printable UTF-8")
    return value


def _time(raw: dict[str, Any], name: str) -> str:
    value = _text(raw, name, MAX_TIME_LENGTH)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 time") from None
    if moment.tzinfo is not None and moment > datetime.now(timezone.utc) + timedelta(days=1):
        raise ValueError(f"{name} is in the future")
    return value


def _runtime(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= MAX_RUNTIME
    ):
        raise ValueError(f"runtime_seconds is not a number of seconds from 0 to {MAX_RUNTIME:g}")
    return float(value)
