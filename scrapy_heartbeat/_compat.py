"""One face over the three ways Scrapy runs: the asyncio reactor, a plain
Twisted reactor, and no reactor at all (``TWISTED_REACTOR_ENABLED = False``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol


class LoopingTask(Protocol):
    @property
    def running(self) -> bool: ...

    def start(self, interval: float, now: bool = True) -> Any: ...

    def stop(self) -> None: ...


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def started(coro: Coroutine[Any, Any, None]) -> Awaitable[None]:
    """Run ``coro`` from now on, as a task of the running asyncio loop, else
    as a Deferred: what it does happens whether or not anyone awaits the
    result (a signal sent with the synchronous ``send_catch_log`` never
    does), and dropping the result leaves no coroutine unawaited."""
    if _running_loop() is not None:
        return asyncio.ensure_future(coro)
    from twisted.internet.defer import Deferred

    return _waiting(Deferred.fromCoroutine(coro))


@types.coroutine
def _waiting(deferred: Any) -> Generator[Any, Any, None]:
    """Awaits ``deferred``. A generator, because Scrapy warns when a signal
    handler returns a Deferred, and Python when a coroutine is dropped
    unstarted; Twisted drives a generator as it does a coroutine."""
    yield from deferred


def twisted_reactor() -> Any:
    """The installed reactor (its zope interfaces do not type-check well)."""
    from twisted.internet import reactor

    return reactor


def looping_call(func: Callable[[], None]) -> LoopingTask:
    """Scrapy's ``create_looping_call`` (2.14+), else Twisted's LoopingCall."""
    try:
        from scrapy.utils.asyncio import create_looping_call
    except ImportError:  # Scrapy < 2.14
        from twisted.internet.task import LoopingCall

        return LoopingCall(func)
    return create_looping_call(func)


def loop_thread_caller() -> Callable[[Callable[[], None]], None]:
    """A function that runs a callable on the current event loop's thread,
    callable from any thread. Call this on the loop's thread."""
    loop = _running_loop()
    if loop is not None:

        def call_soon(func: Callable[[], None]) -> None:
            # a closed loop raises RuntimeError: the process is ending anyway
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(func)

        return call_soon

    reactor = twisted_reactor()

    def call_from_thread(func: Callable[[], None]) -> None:
        reactor.callFromThread(func)

    return call_from_thread


def loop_timer() -> Callable[[float, Callable[[], None]], Callable[[], None]]:
    """A function that runs a callable on the current event loop's thread
    after a delay, and returns a function that cancels it (harmless once it
    ran). Call both on the loop's thread."""
    loop = _running_loop()
    if loop is not None:

        def call_later(delay: float, func: Callable[[], None]) -> Callable[[], None]:
            return loop.call_later(delay, func).cancel

        return call_later

    reactor = twisted_reactor()

    def call_later_in_reactor(delay: float, func: Callable[[], None]) -> Callable[[], None]:
        call = reactor.callLater(delay, func)

        def cancel() -> None:
            if call.active():
                call.cancel()

        return cancel

    return call_later_in_reactor


async def wait_for_future(future: concurrent.futures.Future[Any], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``future`` without blocking the
    loop; True if it finished in time."""
    if future.done():
        return True
    if _running_loop() is not None:
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        except Exception:
            return True  # the future finished, with an error
        return True

    from twisted.internet.defer import Deferred

    reactor = twisted_reactor()
    finished: Deferred[None] = Deferred()

    def fire() -> None:
        if not finished.called:
            finished.callback(None)

    future.add_done_callback(lambda _: reactor.callFromThread(fire))
    timer = reactor.callLater(timeout, fire)
    await finished
    if timer.active():
        timer.cancel()
    return future.done()
