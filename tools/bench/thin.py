"""The thin server: the thinnest Open Inference Protocol server Python can offer on a model.

ModelInfer parses the request (grpcio deserializes it), ``np.frombuffer``-s each raw input, calls
``session.run`` once and answers the raw outputs: no validation, batching, cache, metrics or
tracing. The session has the options a worker would give it (the same settings, read from
``TENSORGATE_*`` as a worker reads them, and spinning decided the same way). It runs on either gRPC
core: ``threads`` (grpcio's thread-pool server, the worker's handler pool size) or ``aio``
(``grpc.aio``: one event loop; ``session.run`` is called in the coroutine, without a hand-off to
another thread, which is the thinnest an event loop gets). Run it as a process, so that its CPU is
measured like a worker's::

    python -m tensorgate.tools.bench.thin --core aio --model mlp --port 50051 --threads 64
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tensorgate.codec.tensors import datatype_of, dtype_of
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto import inference_pb2_grpc
from tensorgate.server.repository import ModelRepository
from tensorgate.server.sessions import create_session
from tensorgate.server.settings import Settings
from tensorgate.server.spinning import session_config_for
from tensorgate.server.transport import server_options

log = logging.getLogger(__name__)

CORES = ("threads", "aio")


class ThinModel:
    """One ONNX Runtime session and the request -> response mapping, nothing else."""

    def __init__(self, settings: Settings, model: str) -> None:
        location = ModelRepository(settings.model_repository).locate(model, None)
        self.session = create_session(
            location.path,
            location.name,
            session_config_for(location, settings),
            settings.worker_intra_op_threads,
            settings.inter_op_threads,
        )
        self.version = location.version
        self.output_names = [node.name for node in self.session.get_outputs()]

    def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        feed = {
            tensor.name: np.frombuffer(raw, dtype=dtype_of(tensor.datatype)).reshape(tensor.shape)
            for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True)
        }
        results = self.session.run(self.output_names, feed)
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=self.version, id=request.id
        )
        for name, array in zip(self.output_names, results, strict=True):
            response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            response.raw_output_contents.append(array.tobytes())
        return response


class ThreadsServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model: ThinModel) -> None:
        self._model = model

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return self._model.infer(request)


class AioServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model: ThinModel) -> None:
        self._model = model

    async def ModelInfer(  # type: ignore[override]
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        return self._model.infer(request)


def serve_threads(model: ThinModel, address: str, threads: int, max_rpcs: int | None) -> None:
    server = grpc.server(
        ThreadPoolExecutor(threads, thread_name_prefix="thin-handler"),
        maximum_concurrent_rpcs=max_rpcs,
        options=server_options(),
    )
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(ThreadsServicer(model), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind {address}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    log.info("thin server (threads, %d handlers) on %s", threads, address)
    stop.wait()
    server.stop(1.0).wait()


async def serve_aio(model: ThinModel, address: str, max_rpcs: int | None) -> None:
    server = grpc.aio.server(maximum_concurrent_rpcs=max_rpcs, options=server_options())
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(AioServicer(model), server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind {address}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    log.info("thin server (aio) on %s", address)
    await stop.wait()
    await server.stop(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", choices=CORES, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="handler pool size (threads)")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=None)
    args = parser.parse_args()
    settings = Settings()  # TENSORGATE_* from the benchmark: the worker's session settings
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    model = ThinModel(settings, args.model)
    address = f"{args.host}:{args.port}"
    if args.core == "threads":
        serve_threads(model, address, args.threads, args.max_concurrent_rpcs)
    else:
        asyncio.run(serve_aio(model, address, args.max_concurrent_rpcs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
