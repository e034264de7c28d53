"""Enable scrapy-heartbeat in every crawler of every Python process that
starts with this directory on PYTHONPATH (``make test-scrapy``'s second run
of Scrapy's test suite, and every process those tests spawn: PYTHONPATH and
API_BASE_URL are inherited).

Nothing is imported at start-up: an import hook waits for
``scrapy.settings.default_settings`` and, once Scrapy has executed it, adds
``"scrapy_heartbeat.HeartbeatExtension": 500`` to ``EXTENSIONS_BASE`` and
names the container after the process (``HEARTBEAT_CONTAINER_ID =
"pid-<pid>"``), so that each execution the receiver stores can be traced to
the process that ran it. The receiver's address comes from the environment
(``API_BASE_URL``), as on the platform.

With ``SCRAPY_HEARTBEAT_COMPAT_TRACE`` set, each process also appends to that
file (JSON lines): its start (pid, parent, the pytest test it was started
under, argv), the exit status of every child it reaped through
``subprocess`` (how a SIGKILL is told apart), and its exit if the
interpreter ran its exit handlers (a process killed by a signal never
writes it). Only observation: no behaviour of Scrapy or of the extension
changes.
"""

from __future__ import annotations

import atexit
import importlib.abc
import json
import os
import sys
import time

_TARGET = "scrapy.settings.default_settings"
_EXTENSION = "scrapy_heartbeat.HeartbeatExtension"
_TRACE = os.environ.get("SCRAPY_HEARTBEAT_COMPAT_TRACE")


def _trace(event: str, **fields: object) -> None:
    if not _TRACE:
        return
    fields.update(event=event, pid=os.getpid(), t=time.time())
    line = json.dumps(fields, default=str) + "\n"
    try:
        fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write: lines of processes never interleave
        finally:
            os.close(fd)
    except OSError:
        pass


def _container_id() -> str:
    return f"pid-{os.getpid()}"


def _patch(module: object) -> None:
    extensions = dict(getattr(module, "EXTENSIONS_BASE", {}))
    extensions[_EXTENSION] = 500
    module.EXTENSIONS_BASE = extensions  # type: ignore[attr-defined]
    module.HEARTBEAT_CONTAINER_ID = _container_id()  # type: ignore[attr-defined]


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self.loader.create_module(spec)

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        self.loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def _after_fork() -> None:
    module = sys.modules.get(_TARGET)
    if module is not None:
        module.HEARTBEAT_CONTAINER_ID = _container_id()  # type: ignore[attr-defined]
    _trace("fork", ppid=os.getppid())
    atexit.register(_trace, "exit")


def _trace_reaped() -> None:
    """Log each child's exit status as ``subprocess`` reaps it."""
    import subprocess

    handle = subprocess.Popen._handle_exitstatus  # type: ignore[attr-defined]

    def _handle_exitstatus(self, sts, *args, **kwargs):  # type: ignore[no-untyped-def]
        handle(self, sts, *args, **kwargs)
        _trace("reaped", child=self.pid, returncode=self.returncode)

    subprocess.Popen._handle_exitstatus = _handle_exitstatus  # type: ignore[attr-defined]


if os.environ.get("SCRAPY_HEARTBEAT_COMPAT") == "1":
    sys.meta_path.insert(0, _Finder())
    if _TARGET in sys.modules:  # pragma: no cover - imported before site ran
        _patch(sys.modules[_TARGET])
    os.register_at_fork(after_in_child=_after_fork)
    if _TRACE:
        _trace(
            "start",
            ppid=os.getppid(),
            test=os.environ.get("PYTEST_CURRENT_TEST"),
            argv=sys.argv,
            orig_argv=getattr(sys, "orig_argv", None),
        )
        atexit.register(_trace, "exit")
        try:
            _trace_reaped()
        except Exception:  # pragma: no cover - a newer CPython: no reaping trace
            pass
