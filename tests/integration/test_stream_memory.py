"""A stream whose client sends and never reads holds at most one window of the server's memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np

from tensorgate.codec.tensors import to_raw
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.support.processes import EXAMPLE_MODELS, serve
from tests.support.waiting import wait_until

REQUESTS = 900
ROWS = 4096  # 4096 x 64 FP32: 1 MiB per request
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def one_mib_request() -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="digits", id="big")
    message.inputs.add(name="pixels", datatype="FP32", shape=[ROWS, 64])
    message.raw_input_contents.append(to_raw(np.ones((ROWS, 64), np.float32)))
    return message


def test_an_unread_stream_of_900_one_mib_requests_stays_bounded(
    tmp_path: Path, grpc_core: str
) -> None:
    with serve(EXAMPLE_MODELS, "--models", "digits", log_dir=tmp_path, core=grpc_core) as server:
        pid = server.process.pid
        message = one_mib_request()
        sent = [0]

        def requests():  # type: ignore[no-untyped-def]
            for _ in range(REQUESTS):
                sent[0] += 1
                yield message

        with grpc.insecure_channel(
            server.target, options=[("grpc.max_send_message_length", 4 * MIB)]
        ) as channel:
            stub = GRPCInferenceServiceStub(channel)
            baseline = rss_bytes(pid)
            call = stub.ModelStreamInfer(requests(), timeout=120)  # its answers are never read
            peak = [baseline]
            stalled = threading.Event()

            def sample() -> None:
                last, since = -1, time.monotonic()
                while not stalled.is_set():
                    peak[0] = max(peak[0], rss_bytes(pid))
                    if sent[0] != last:
                        last, since = sent[0], time.monotonic()
                    elif time.monotonic() - since > 3.0 or sent[0] >= REQUESTS:
                        stalled.set()  # the server stopped reading (or took everything)
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, name="rss-sampler")
            sampler.start()
            stalled.wait(90)
            stalled.set()
            sampler.join(5)
            grown = peak[0] - baseline
            call.cancel()
            assert sent[0] < REQUESTS, "the server read every request of an unread stream"
            assert grown <= 100 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"
            wait_until(
                lambda: (
                    rss_bytes(pid) <= baseline + 80 * MIB
                ),  # glibc keeps some arenas on a busy host
                30,
                f"memory released after the cancel (baseline {baseline / MIB:.0f} MiB, peak "
                f"{peak[0] / MIB:.0f} MiB, now {rss_bytes(pid) / MIB:.0f} MiB, sent {sent[0]})",
                interval=0.2,
            )
            # and the server still answers
            answer = stub.ModelInfer(
                pb.ModelInferRequest(
                    model_name="digits",
                    inputs=[
                        pb.ModelInferRequest.InferInputTensor(
                            name="pixels", datatype="FP32", shape=[1, 64]
                        )
                    ],
                    raw_input_contents=[to_raw(np.zeros((1, 64), np.float32))],
                ),
                timeout=20,
            )
            assert answer.model_name == "digits"
