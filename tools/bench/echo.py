"""The echo server: a real grpcio thread-pool server whose ModelInfer does nothing.

It parses each request (grpcio deserializes it, as for the real server) and returns one fixed tiny
response, with the real server's handler pool size and RPC limit. The load generator measured
against it gives the floor of gRPC and Python overhead on this machine. Run it as a process::

    python -m tensorgate.tools.bench.echo --port 50051 --threads 392 --max-concurrent-rpcs 392
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tensorgate.codec.tensors import to_raw
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto import inference_pb2_grpc
from tensorgate.server.transport import server_options

log = logging.getLogger(__name__)


def fixed_response() -> pb.ModelInferResponse:
    """One FP32 [1, 1] output, raw: as small as a real answer gets."""
    response = pb.ModelInferResponse(model_name="echo", model_version="1")
    response.outputs.add(name="output", datatype="FP32", shape=[1, 1])
    response.raw_output_contents.append(to_raw(np.zeros((1, 1), dtype=np.float32)))
    return response


class EchoServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """ModelInfer answers at once; every other method is left unimplemented."""

    def __init__(self) -> None:
        self._response = fixed_response()

    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        return self._response


def create_server(
    address: str, threads: int, max_concurrent_rpcs: int | None
) -> tuple[grpc.Server, int]:
    """The echo server bound to ``address`` (port 0 picks one), not started; returns the port."""
    server = grpc.server(
        ThreadPoolExecutor(threads, thread_name_prefix="echo-handler"),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=server_options(),
    )
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(EchoServicer(), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return server, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="handler pool size")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server, port = create_server(f"{args.host}:{args.port}", args.threads, args.max_concurrent_rpcs)
    server.start()
    log.info("echo server on %s:%d (%d handler threads)", args.host, port, args.threads)
    while not stop.wait(1.0):
        pass
    server.stop(1.0).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
