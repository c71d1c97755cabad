"""How a transport drives the request path: the data plane is written once, as a generator that
yields what it waits for; a blocking driver (grpcio's thread pool) and an asyncio driver (grpc.aio)
do the waiting.

Errors of a wait are thrown back into the generator, so that its cleanup (statistics, a cache
flight it leads) runs the same way on both cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from tensorgate.server.batching import BatchRequest
from tensorgate.server.errors import DeadlineExceededError, RequestCancelledError

T = TypeVar("T")


@dataclass(slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)
class Await:
    """A future to wait for until ``deadline`` (time.monotonic()); ``expired`` is the message of
    the DeadlineExceededError when it passes first."""

    future: concurrent.futures.Future[Any]
    deadline: float | None
    expired: str


Step = Sleep | Await
Steps = Generator[Step, Any, T]
#: registers a callback to run when the caller goes away (a cancelled RPC)
CancelHook = Callable[[Callable[[], object]], object]


def drive(steps: Steps[T], on_cancel: CancelHook | None = None) -> T:
    """Runs the steps in this thread, blocking on each wait."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value = error = None
        try:
            value = _wait(step, on_cancel)
        except Exception as raised:
            error = raised


def _wait(step: Step, on_cancel: CancelHook | None) -> Any:
    """A batch request's result, or a cache flight once it is done (the flight itself)."""
    if isinstance(step, Sleep):
        time.sleep(step.seconds)
        return None
    future = step.future
    batch = isinstance(future, BatchRequest)
    if on_cancel is not None and batch:
        on_cancel(future.cancel)
    timeout = None if step.deadline is None else max(0.0, step.deadline - time.monotonic())
    if not batch:
        done, _ = concurrent.futures.wait((future,), timeout)
        if not done:
            raise DeadlineExceededError(step.expired)
        return future
    try:
        return future.result(timeout)  # no waiter object, unlike concurrent.futures.wait
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise DeadlineExceededError(step.expired) from None
    except concurrent.futures.CancelledError:
        raise RequestCancelledError("the request was cancelled") from None


async def drive_async(steps: Steps[T]) -> T:
    """Runs the steps on the running event loop, awaiting each wait."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value = error = None
        try:
            value = await _wait_async(step)
        except asyncio.CancelledError:  # the caller went away: clean up, then stop
            _close(steps)
            raise
        except Exception as raised:
            error = raised


async def _wait_async(step: Step) -> Any:
    """As :func:`_wait`, on the loop: a batch request resolves its asyncio waiter (one loop
    callback per batch); a cache flight is awaited through a shield, never cancelled by us."""
    if isinstance(step, Sleep):
        await asyncio.sleep(step.seconds)
        return None
    future = step.future
    batch = isinstance(future, BatchRequest)
    waiter = future.waiter if batch else None
    awaited: asyncio.Future[Any] = (
        waiter if waiter is not None else asyncio.shield(asyncio.wrap_future(future))
    )
    timer = None
    if step.deadline is not None:  # one timer, cheaper than asyncio.wait_for's task and waiter
        loop = asyncio.get_running_loop()
        remaining = max(0.0, step.deadline - time.monotonic())
        timer = loop.call_at(loop.time() + remaining, _expire, awaited)
    try:
        result = await awaited
    except _Expired:
        if batch:
            future.cancel()
        raise DeadlineExceededError(step.expired) from None
    except asyncio.CancelledError:
        if batch:
            future.cancel()
        raise
    except Exception:
        if not batch:
            return future  # a flight that failed: the data plane reads its error
        raise
    finally:
        if timer is not None:
            timer.cancel()
    return result if batch else future


class _Expired(Exception):
    """Set on an awaited future when its step's deadline passes first."""


def _expire(awaited: asyncio.Future[Any]) -> None:
    if not awaited.done():
        awaited.set_exception(_Expired())


def _close(steps: Steps[Any]) -> None:
    """Ends the generator as if its wait had failed because the caller went away."""
    with contextlib.suppress(RequestCancelledError, StopIteration):
        steps.throw(RequestCancelledError("the request was cancelled"))
