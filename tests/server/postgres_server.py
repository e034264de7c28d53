"""Debian's real PostgreSQL server for the tests: a cluster made by
``initdb`` in a temporary directory, serving 127.0.0.1 on a free port, run
as the ``postgres`` user when the tests run as root (PostgreSQL refuses to
run as root). Each test gets a database of its own (:meth:`database`)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests.servers import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = _bin_dir()
        self.port = free_port()
        # Not under pytest's tmp dirs: the postgres user must reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="heartbeat-pg-"))
        # As root, run as postgres: the process is postgres itself, so that a
        # signal reaches it (runuser would turn SIGINT into SIGTERM).
        self._as: dict[str, Any] = {"cwd": self.directory}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
        self.bin_dir = bin_dir
        self.data = data = self.directory / "data"
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "heartbeat",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self._as,
        )  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart, with the data it had)."""
        self.process = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._as,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop(remove=True)
                    raise RuntimeError("PostgreSQL did not start") from None
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://heartbeat@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self, remove: bool = True) -> None:
        """Stop; ``remove=False`` keeps the data, for :meth:`start`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # a "fast" shutdown: ends clients
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self.process = None
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
