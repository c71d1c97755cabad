"""Regenerates the committed stubs from ``inference.proto``: ``python -m tensorgate.proto.generate``.

The source is compiled as ``tensorgate/proto/inference.proto`` so that the generated gRPC module imports
its messages through the package (``from tensorgate.proto import inference_pb2``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SOURCES = ("inference.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_files(source: str) -> list[str]:
    stem = source.removesuffix(".proto")
    return [stem + suffix for suffix in GENERATED_SUFFIXES]


def generate(out_dir: Path) -> list[Path]:
    """Compiles every source into ``out_dir``; returns the files written."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        package_dir = Path(tmp) / "tensorgate" / "proto"
        package_dir.mkdir(parents=True)
        for source in SOURCES:
            shutil.copy(PROTO_DIR / source, package_dir / source)
            args = [
                "grpc_tools.protoc",
                f"-I{tmp}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                f"tensorgate/proto/{source}",
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {source}")
            for name in generated_files(source):
                target = out_dir / name
                shutil.copy(package_dir / name, target)
                written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(PROTO_DIR):
        sys.stdout.write(f"wrote {path}\n")
