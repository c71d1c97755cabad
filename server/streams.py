"""Scheduling of ``ModelStreamInfer``: requests of one stream run concurrently, answers go out in
completion order (ids tell them apart), and memory stays bounded however the client behaves.

The window of a stream counts each request from the moment it is read until its answer has been
written, and the bytes it holds meanwhile (the request's, then the answer's). When the window is
full the server stops reading that stream, so HTTP/2 flow control pushes back on the client; a
client that never reads its answers therefore holds at most one window of memory. Every request in
flight also holds one of the server's :class:`RequestSlots`, like a unary call.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import grpc

from tensorgate.proto import inference_pb2 as pb
from tensorgate.server.convert import stream_error, transport_deadline
from tensorgate.server.errors import ResourceExhaustedError, TensorgateError
from tensorgate.server.interceptors import unexpected
from tensorgate.server.steps import Steps, drive, drive_async

log = logging.getLogger(__name__)

#: requests of one stream in flight or waiting to be written; the reader waits beyond it
STREAM_WINDOW = 512
#: bytes one stream may hold in requests in flight and answers not yet written (one request or
#: answer above it is still taken when the window is empty)
STREAM_WINDOW_BYTES = 16 * 1024 * 1024
#: how often a waiting stream thread checks that its client is still there
_POLL_S = 1.0
_STREAM_END = object()


class RequestSlots:
    """Inference requests in flight, unary and stream alike, against the concurrency limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self._used >= self.limit:
                raise ResourceExhaustedError(
                    f"the server has {self.limit} inference requests in flight, its limit",
                    reason="concurrency",
                )
            self._used += 1

    def give(self) -> None:
        with self._lock:
            self._used -= 1

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.take()
        try:
            yield
        finally:
            self.give()


class Answering(Protocol):
    """What a stream needs of the servicer: its request slots and the steps of one answer."""

    slots: RequestSlots

    def answer(
        self,
        message: pb.ModelInferRequest,
        deadline: float | None,
        metadata: Any,
        method: str,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Steps[pb.ModelInferResponse]: ...


class _Window:
    """The accounting of one stream's window (the cores wait on it in their own way)."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    def open(self) -> bool:
        return self.count == 0 or (self.count < STREAM_WINDOW and self.bytes < STREAM_WINDOW_BYTES)

    def take(self, size: int) -> None:
        self.count += 1
        self.bytes += size

    def swap(self, request_size: int, answer_size: int) -> None:
        self.bytes += answer_size - request_size

    def give(self, size: int) -> None:
        self.count -= 1
        self.bytes -= size


def _error_answer(
    message: pb.ModelInferRequest, error: BaseException
) -> pb.ModelStreamInferResponse:
    if isinstance(error, TensorgateError):
        return stream_error(message, error.message)
    unexpected.report(error, "ModelStreamInfer")
    return stream_error(message, "internal error")


def serve_stream(
    servicer: Answering,
    executor: ThreadPoolExecutor,
    request_iterator: Iterator[pb.ModelInferRequest],
    context: grpc.ServicerContext,
) -> Iterator[pb.ModelStreamInferResponse]:
    """The thread-pool core: a reader thread hands each request to the stream pool as it arrives;
    this thread writes each answer as soon as it is ready."""
    window = _Window()
    changed = threading.Condition()
    answers: queue.Queue[Any] = queue.Queue()  # bounded by the window
    deadline = transport_deadline(context)
    metadata = context.invocation_metadata()

    def answer(message: pb.ModelInferRequest, size: int) -> None:
        try:
            with servicer.slots.hold():
                response = drive(servicer.answer(message, deadline, metadata, "ModelStreamInfer"))
            item = pb.ModelStreamInferResponse(infer_response=response)
        except Exception as error:
            item = _error_answer(message, error)
        answer_size = item.ByteSize()
        with changed:
            window.swap(size, answer_size)
            answers.put((item, answer_size))
            changed.notify_all()

    def wait_until(ready: Any) -> bool:
        """Until ``ready()``; False when the client has gone first."""
        with changed:
            while not ready():
                if not changed.wait(_POLL_S) and not context.is_active():
                    return False
        return True

    def read() -> None:
        try:
            for message in request_iterator:
                size = message.ByteSize()
                if not wait_until(window.open):
                    return
                with changed:
                    window.take(size)
                executor.submit(answer, message, size)
        except Exception:  # the client went away: nothing left to read
            log.debug("stream reader stopped", exc_info=True)
        finally:
            wait_until(lambda: window.count == 0 or answers.qsize() >= window.count)
            answers.put(_STREAM_END)

    reader = threading.Thread(target=read, name="stream-reader", daemon=True)
    reader.start()
    while True:
        try:
            item = answers.get(timeout=_POLL_S)
        except queue.Empty:
            if context.is_active():
                continue
            return  # the client went away; the reader stops on its own
        if item is _STREAM_END:
            return
        response, size = item
        yield response  # returns once grpcio has sent it
        with changed:
            window.give(size)
            changed.notify_all()


async def serve_stream_async(
    servicer: Answering,
    request_iterator: AsyncIterator[pb.ModelInferRequest],
    context: grpc.aio.ServicerContext,
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """The grpc.aio core: a reader task starts one task per request while the window is open;
    this generator writes each answer as soon as it is ready."""
    loop = asyncio.get_running_loop()
    window = _Window()
    changed = asyncio.Event()
    answers: asyncio.Queue[Any] = asyncio.Queue()  # bounded by the window
    deadline = transport_deadline(context)
    metadata = context.invocation_metadata() or ()
    running: set[asyncio.Task[None]] = set()

    async def answer(message: pb.ModelInferRequest, size: int) -> None:
        try:
            with servicer.slots.hold():
                response = await drive_async(
                    servicer.answer(message, deadline, metadata, "ModelStreamInfer", loop)
                )
            item = pb.ModelStreamInferResponse(infer_response=response)
        except Exception as error:
            item = _error_answer(message, error)
        answer_size = item.ByteSize()
        window.swap(size, answer_size)
        answers.put_nowait((item, answer_size))
        changed.set()

    async def read() -> None:
        try:
            async for message in request_iterator:
                size = message.ByteSize()
                while not window.open():
                    changed.clear()
                    await changed.wait()
                window.take(size)
                task = loop.create_task(answer(message, size))
                running.add(task)
                task.add_done_callback(running.discard)
        except Exception:  # the client went away: nothing left to read
            log.debug("stream reader stopped", exc_info=True)
        if running:
            await asyncio.wait(set(running))
        answers.put_nowait(_STREAM_END)

    reader = loop.create_task(read())
    try:
        while True:
            item = await answers.get()
            if item is _STREAM_END:
                return
            response, size = item
            yield response  # resumes once grpc.aio has written it
            window.give(size)
            changed.set()
    finally:
        reader.cancel()
        for task in list(running):
            task.cancel()
