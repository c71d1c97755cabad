"""``tensorgate infer MODEL --input NAME=FILE.npy ...``: one inference, outputs printed."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from tensorgate.cli.client_args import add_target_arguments
from tensorgate.cli.usage import UsageError
from tensorgate.client import Client, InferenceServerError


def parse_input(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def load_inputs(pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The ``--input NAME=FILE.npy`` arrays; a file that cannot be read is a usage error."""
    inputs = {}
    for name, path in pairs:
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UsageError(f"--input {name}={path}: cannot read a .npy array: {error}") from None
    return inputs


def handle(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.input)
    try:
        with Client(args.target, timeout=args.timeout) as client:
            outputs = client.infer(
                args.model, inputs, outputs=args.output or None, version=args.version
            )
    except InferenceServerError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        return 1
    with np.printoptions(threshold=200, precision=5, suppress=True):
        for name, array in outputs.items():
            print(f"{name} {array.dtype} {list(array.shape)}")
            print(array)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("infer", help="run one inference and print the outputs")
    parser.add_argument("model")
    parser.add_argument(
        "--input",
        action="append",
        type=parse_input,
        required=True,
        metavar="NAME=FILE.npy",
        help="an input tensor from a .npy file (repeatable)",
    )
    parser.add_argument("--output", action="append", help="an output to request (default: all)")
    parser.add_argument("--version", help="model version (default: the one served)")
    add_target_arguments(parser)
    parser.set_defaults(func=handle)
