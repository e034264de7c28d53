"""A running ``scrapy-heartbeat serve`` for the tests, in a process of its
own on 127.0.0.1 port 0, its stderr in a file. The ``serve`` fixture
(``conftest.py``) starts and stops them; tests outside this package use
:meth:`Serve.start` and :meth:`Serve.stop`."""

from __future__ import annotations

import itertools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from scrapy_heartbeat.demo import spawn_receiver
from scrapy_heartbeat.payload import HEARTBEAT_PATH
from scrapy_heartbeat.server import open_store

HEARTBEAT = HEARTBEAT_PATH
EXECUTIONS = "/api/v1/monitoring/executions"


@dataclass
class Serve:
    url: str
    db: str  # a SQLite file, or a postgresql:// URL
    log: Path  # its stderr
    process: subprocess.Popen[str]

    @classmethod
    def start(cls, directory: Path, *args: str, db: str | None = None) -> Serve:
        """``serve`` with ``args`` on ``db``, by default a SQLite file in
        ``directory``; its log there too."""
        db = db or str(directory / "hb.sqlite3")
        log = next(
            path for n in itertools.count() if not (path := directory / f"serve{n}.log").exists()
        )
        with log.open("w") as err:
            process, url = spawn_receiver(db, *args, stderr=err)
        assert url.startswith("http://127.0.0.1:"), url
        return cls(url, db, log, process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return requests.post(self.url + HEARTBEAT, data=data, headers=headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def rows(self) -> int:
        """Heartbeats in its database."""
        store = open_store(self.db)
        try:
            return store.count()
        finally:
            store.close()

    def stderr(self) -> str:
        return self.log.read_text()
