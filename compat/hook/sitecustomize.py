"""Enable scrapy-heartbeat in every crawler of every Python process that
starts with this directory on PYTHONPATH (``make test-scrapy``'s second run
of Scrapy's test suite, and every process those tests spawn: PYTHONPATH and
API_BASE_URL are inherited).

Nothing is imported at start-up: an import hook waits for
``scrapy.settings.default_settings`` and, once Scrapy has executed it, adds
the extension to ``EXTENSIONS_BASE`` at 500 under the class's own import path,
``scrapy_heartbeat.extension.HeartbeatExtension``: Scrapy matches a ``_BASE``
key with an override only by that path, so under the re-exported
``scrapy_heartbeat.HeartbeatExtension`` the extension could not be turned
off by class (two of Scrapy's settings tests fail that way). No setting is
added (Scrapy's tests compare ``default_settings`` with its ``__all__``): the
container is named after the process through ``HOSTNAME``
(``pid-<pid>``, set again in each process and after a fork), so that each
execution the receiver stores can be traced to the process that ran it.
The receiver's address comes from the environment
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
_EXTENSION = "scrapy_heartbeat.extension.HeartbeatExtension"
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


def _name_container() -> None:
    os.environ["HOSTNAME"] = f"pid-{os.getpid()}"  # the extension's container_id


def _patch(module: object) -> None:
    extensions = dict(getattr(module, "EXTENSIONS_BASE", {}))
    extensions[_EXTENSION] = 500
    module.EXTENSIONS_BASE = extensions  # type: ignore[attr-defined]


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
    _name_container()
    _trace("fork", ppid=os.getppid())  # the parent's exit handler is inherited


def _trace_reaped() -> None:
    """Log each child's exit status as ``subprocess`` reaps it."""
    import subprocess

    handle = getattr(subprocess.Popen, "_handle_exitstatus", None)
    if handle is None:  # pragma: no cover - another CPython: no reaping trace
        return

    def _handle_exitstatus(self, sts, *args, **kwargs):  # type: ignore[no-untyped-def]
        handle(self, sts, *args, **kwargs)
        _trace("reaped", child=self.pid, returncode=self.returncode)

    subprocess.Popen._handle_exitstatus = _handle_exitstatus  # type: ignore[attr-defined]


if os.environ.get("SCRAPY_HEARTBEAT_COMPAT") == "1":
    _name_container()
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
        _trace_reaped()
