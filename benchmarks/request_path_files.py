"""Which files of tensorgate one untraced ModelInfer with a cache miss passes through, and whether
the path reads in one direction (issue 14: at most 10 files, none entered twice).

A real worker (ServerApp, on the chosen gRPC core, cache on in a temporary directory) runs in this
process; every thread but the caller's is profiled (sys.setprofile via threading.setprofile) while
one request with fresh random inputs (a miss) is answered. A file is "entered twice" when a call
comes back into it from a file it called (a callback up the path); a generator resumed by the
driver that runs it is not a call.

    python benchmarks/request_path_files.py [--grpc-core aio|threads] [--model mlp]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

import tensorgate.server
from tensorgate.client import Client
from tensorgate.server.app import ServerApp
from tensorgate.server.settings import Settings

PACKAGE_ROOTS = {
    Path(tensorgate.server.__file__).resolve().parent.parent,  # the repository (editable install)
}
MODEL_INPUTS = {"mlp": ("x", (1, 256)), "digits": ("pixels", (1, 64))}
GENERATOR_FLAGS = 0x20 | 0x200  # CO_GENERATOR | CO_ASYNC_GENERATOR


def ours(filename: str) -> str | None:
    if filename.startswith("<"):
        return None  # frozen modules and generated code
    path = Path(filename).resolve()
    for root in PACKAGE_ROOTS:
        if root in path.parents and ".venv" not in path.parts:
            return str(path.relative_to(root))
    return None


class PathRecorder:
    def __init__(self) -> None:
        self.on = False
        self.order: list[str] = []
        self.edges: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.on or event != "call":
            return
        callee = ours(frame.f_code.co_filename)
        if callee is None:
            return
        if frame.f_code.co_flags & GENERATOR_FLAGS and frame.f_lasti > 0:
            return  # a generator resumed, not entered
        caller_frame = frame.f_back
        caller = None
        while caller_frame is not None and caller is None:
            caller = ours(caller_frame.f_code.co_filename)
            caller_frame = caller_frame.f_back
        with self._lock:
            if callee not in self.order:
                self.order.append(callee)
            if caller is not None and caller != callee:
                self.edges.add((caller, callee))


def back_edges(order: list[str], edges: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Calls into a file from one that it reaches (directly or not): callbacks up the path."""
    reach: dict[str, set[str]] = {name: set() for name in order}
    for caller, callee in edges:
        reach.setdefault(caller, set()).add(callee)
    changed = True
    while changed:
        changed = False
        for targets in reach.values():
            more = set().union(*(reach.get(t, set()) for t in targets)) - targets
            if more:
                targets |= more
                changed = True
    return sorted((a, b) for a, b in edges if a in reach.get(b, set()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-core", choices=("aio", "threads"), default="aio")
    parser.add_argument("--model", default="mlp", choices=sorted(MODEL_INPUTS))
    args = parser.parse_args()
    recorder = PathRecorder()
    threading.setprofile(recorder.profile)
    with tempfile.TemporaryDirectory() as cache_dir:
        settings = Settings(
            model_repository=Path("examples/models"),
            models=[args.model],
            port=0,
            metrics_port=0,
            grpc_core=args.grpc_core,
            cache_dir=Path(cache_dir),
        )
        app = ServerApp(settings)
        app.start()
        try:
            with Client(f"127.0.0.1:{app.port}") as client:
                name, shape = MODEL_INPUTS[args.model]
                rng = np.random.default_rng()
                client.infer(args.model, {name: rng.random(shape, dtype=np.float32)})  # warm
                recorder.on = True
                client.infer(args.model, {name: rng.random(shape, dtype=np.float32)})
                recorder.on = False
        finally:
            threading.setprofile(None)  # type: ignore[arg-type]
            app.settings = app.settings.model_copy(update={"drain_seconds": 0.0})
            app.stop()
    backs = back_edges(recorder.order, recorder.edges)
    sys.stdout.write(f"gRPC core {args.grpc_core}: {len(recorder.order)} files\n")
    for name in recorder.order:
        sys.stdout.write(f"  {name}\n")
    sys.stdout.write(
        "calls back up the path: " + (", ".join(f"{a} -> {b}" for a, b in backs) or "none") + "\n"
    )
    return 0 if len(recorder.order) <= 10 and not backs else 1


if __name__ == "__main__":
    raise SystemExit(main())
