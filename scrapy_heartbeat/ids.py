"""Execution and worker ids: where a crawl's execution id comes from, and
the form each id takes."""

from __future__ import annotations

import os
import uuid
from typing import Any

from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.payload import is_uuid


def check_execution_id(value: Any, source: str) -> str:
    """Return ``value`` stripped if it is a UUID, else raise :class:`ConfigError`."""
    text = value.strip() if isinstance(value, str) else value
    if not is_uuid(text):
        shown = value if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
        raise ConfigError(
            f"{source}={shown!r} is not a UUID; set it to the platform's execution "
            "id, e.g. '550e8400-e29b-41d4-a716-446655440000'"
        )
    assert isinstance(text, str)
    return text


def scrapyd_job_id(value: Any) -> str | None:
    """scrapyd's ``_job`` spider argument (a uuid1 as 32 hex digits) in the
    canonical 8-4-4-4-12 form, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(hex=value.strip()))
    except ValueError:
        return None


def new_execution_id() -> str:
    return str(uuid.uuid4())


def new_worker_id(container_id: str) -> str:
    """A worker of a shared execution: its container, process and a nonce
    (a restarted process is a new worker)."""
    return f"{container_id}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def execution_id_for(configured: str | None, spider: Any) -> tuple[str, str | None]:
    """The crawl's execution id, and what to log about where it came from
    (None: it was configured). In order: ``HEARTBEAT_EXECUTION_ID`` or
    ``EXECUTION_ID`` (``configured``), the spider argument ``execution_id``,
    scrapyd's job id, a new UUID. Raises :class:`ConfigError` for a spider
    argument that is not a UUID."""
    if configured:
        return configured, None
    from_spider = getattr(spider, "execution_id", None)
    if from_spider is not None:
        return check_execution_id(from_spider, "spider argument execution_id"), None
    job = scrapyd_job_id(getattr(spider, "_job", None))
    if job is not None:
        return job, (
            "no HEARTBEAT_EXECUTION_ID or EXECUTION_ID; using scrapyd's job id "
            "(spider argument _job) as the execution id:"
        )
    return new_execution_id(), (
        "no HEARTBEAT_EXECUTION_ID, EXECUTION_ID or spider argument execution_id; generated"
    )
