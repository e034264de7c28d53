"""What a paused ``JOBDIR`` crawl keeps for its resumed run.

Scrapy pauses a ``JOBDIR`` crawl on Ctrl-C or SIGTERM and resumes it when the
same command runs again; its ``SpiderState`` saves ``spider.state`` in the
``JOBDIR`` at every close. This is the heartbeat's counterpart: the counters,
``start_time`` and running time so far, and the owner of the markers in the
requests queued on disk, so that the resumed run continues them instead of
starting from 0/0. Saved at every close (a small JSON file, written whole and
then renamed into place); a run killed before its close leaves the previous
state, and the resumed run then adopts what it finds queued.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

logger = logging.getLogger(__name__)

FILENAME = "heartbeat.state.json"


@dataclass
class JobState:
    owner: str
    execution_id: str
    start_time: str
    runtime_seconds: float = 0.0
    total: int = 0
    successful: int = 0
    failed: int = 0
    items: int = 0
    errors: int = 0
    runs: int = 0  # runs that saved this state, the last included
    worker: str = ""  # the worker id, with shared counters


def load(jobdir: str) -> JobState | None:
    """The state the previous run saved in ``jobdir``, or None (no previous
    run, or a file this version cannot read: logged, and the run starts
    afresh)."""
    path = Path(jobdir, FILENAME)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.error("scrapy-heartbeat: cannot read %s (%s); counting from 0", path, exc)
        return None
    try:
        known = {f.name for f in fields(JobState)}
        state = JobState(**{k: v for k, v in raw.items() if k in known})
        for name in ("total", "successful", "failed", "items", "errors", "runs"):
            if not isinstance(getattr(state, name), int) or getattr(state, name) < 0:
                raise TypeError(name)
        if not isinstance(state.runtime_seconds, (int, float)) or state.runtime_seconds < 0:
            raise TypeError("runtime_seconds")
    except TypeError as exc:
        logger.error(
            "scrapy-heartbeat: %s is not a state this version wrote (%s); counting from 0",
            path,
            exc,
        )
        return None
    return state


def save(jobdir: str, state: JobState) -> None:
    """Write ``state`` into ``jobdir``; a failure is logged, never raised."""
    path = Path(jobdir, FILENAME)
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(asdict(state), ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        logger.error("scrapy-heartbeat: cannot save %s (%s)", path, exc)
