"""The ``tensorgate`` command.

Only the command being run is imported, so ``tensorgate --help`` is fast and the client commands work
with the light install (``pip install tensorgate``). Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from tensorgate.cli.usage import EXIT_USAGE, OneLineParser, usage_errors

DESCRIPTION = (
    "Serve ONNX models over gRPC (Open Inference Protocol), call them, and watch them. "
    "`tensorgate up` runs the local stack; `tensorgate COMMAND --help` describes a command."
)
#: Modules a server command needs beyond the light client (their absence means `[server]` is missing).
SERVER_MODULES = {
    "onnxruntime", "onnx", "pydantic", "pydantic_settings", "diskcache", "prometheus_client",
    "rich", "tqdm", "opentelemetry", "grpc_health", "grpc_reflection", "matplotlib", "annotated_types",
}  # fmt: skip


@dataclass(frozen=True)
class Command:
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "serve": Command("tensorgate.cli.serve", "serve a model repository over gRPC"),
    "up": Command("tensorgate.cli.up", "workers behind Envoy, supervised: the local stack"),
    "infer": Command("tensorgate.cli.infer", "run one inference and print the outputs"),
    "models": Command("tensorgate.cli.models", "list the repository's models and their state"),
    "health": Command(
        "tensorgate.cli.health", "a worker's grpc.health.v1 status; exit 0 if SERVING"
    ),
    "bench": Command("tensorgate.cli.bench", "benchmark a server against yardsticks"),
    "optimize": Command("tensorgate.cli.optimize", "graph, fp16 and int8 variants, measured"),
    "top": Command("tensorgate.cli.top", "live terminal view of the workers and Envoy"),
}


def version() -> str:
    try:
        return metadata.version("tensorgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``selected``'s module is imported (the others are listed by name)."""
    parser = OneLineParser(prog="tensorgate", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"tensorgate {version()}")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    for name, command in COMMANDS.items():
        if name == selected:
            importlib.import_module(command.module).register(subparsers)
        else:
            subparsers.add_parser(name, help=command.help, add_help=False)
    return parser


def _missing_server(error: ModuleNotFoundError) -> bool:
    return (error.name or "").split(".")[0] in SERVER_MODULES


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: every sub-command sets ``func(args) -> exit code``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in arguments if not a.startswith("-")), None)
    selected = selected if selected in COMMANDS else None
    try:
        args = build_parser(selected).parse_args(arguments)
        return int(args.func(args) or 0)
    except ModuleNotFoundError as error:
        if not _missing_server(error):
            raise
        sys.stderr.write(
            f"tensorgate {selected}: needs the server parts: pip install 'tensorgate[server]' "
            f"(missing {error.name})\n"
        )
    except usage_errors() as error:
        sys.stderr.write(f"tensorgate {selected}: {error}\n")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
