"""tensorgate optimize: cheaper variants of a served model, measured, and optionally promoted.

Writes <repo>/<model>/<version>/variants/<variant>/model.onnx and variants/report.json. With
--accept, the fastest variant that passes becomes <repo>/<model>/<max+1>/ with provenance.json.
Exit status: 0 when done (with --accept: a new version was made); 1 when --accept was given and no
variant passes; 2 for bad arguments or inputs. See docs/optimization.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def register(subparsers: Any) -> None:
    """Adds the ``optimize`` sub-command."""
    parser = subparsers.add_parser(
        "optimize",
        help="build and measure optimized variants of a model (graph, fp16, int8, int8-static)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="the model's name: a folder of the repository")
    parser.add_argument(
        "--model-repository",
        type=Path,
        required=True,
        metavar="DIR",
        help="<repo>/<model>/<version>/model.onnx",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="V",
        help="the source version (default: the served one)",
    )
    parser.add_argument(
        "--variants",
        type=_names,
        default=None,
        metavar="LIST",
        help="comma-separated, of graph,fp16,int8,int8-static (default: all that apply)",
    )
    parser.add_argument(
        "--validation",
        type=Path,
        metavar="FILE.npy",
        help="inputs to compare on (.npy, or .npz by input name); default: random inputs",
    )
    parser.add_argument(
        "--labels", type=Path, metavar="FILE.npy", help="one label per validation row"
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE.npy",
        help="inputs that calibrate int8-static (.npy, or .npz by input name)",
    )
    parser.add_argument(
        "--accept",
        metavar="RULE",
        help='promote the fastest variant passing e.g. "top1_agreement>=0.99,accuracy_drop<=0.005"',
    )
    parser.add_argument(
        "--measure-seconds",
        type=float,
        default=3.0,
        metavar="S",
        help="time spent measuring the speed of each model (default 3)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=handle)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def handle(args: argparse.Namespace) -> int:
    """Runs the optimization and prints the report; returns the exit status."""
    import onnxruntime as ort
    from rich.console import Console
    from tqdm import tqdm

    from tensorgate.server.inputs import InputError
    from tensorgate.server.settings import Settings
    from tensorgate.tools.optimize.pipeline import OptimizeRequest, optimize_model
    from tensorgate.tools.optimize.report import table

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ort.set_default_logger_severity(3)
    settings = Settings()
    request = OptimizeRequest(
        repository=args.model_repository,
        model=args.model,
        version=args.version,
        variants=args.variants,
        validation=args.validation,
        labels=args.labels,
        calibration=args.calibration,
        accept=args.accept,
        measure_seconds=args.measure_seconds,
        intra_op_threads=settings.worker_intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
    )

    def progress(total: int) -> Any:
        return tqdm(total=total, unit="step", file=sys.stderr, disable=args.no_progress or None)

    try:
        result = optimize_model(request, progress)
    except InputError as exc:  # OptimizeError too
        print(f"tensorgate optimize: {exc.message}", file=sys.stderr)
        return EXIT_USAGE

    console = Console(width=max(Console().width, 140))
    console.print(table(result.report))
    validation = result.report["validation"]
    if validation["source"] == "file":
        print(f"validation inputs: {validation['file']} ({validation['rows']} rows)")
    else:
        print(
            f"validation inputs: random, {validation['rows']} rows (seed {validation['seed']}); "
            "give --validation FILE.npy for real data"
        )
    print(f"report: {result.report_path}")
    if args.accept is None:
        return EXIT_OK
    if result.new_version is None:
        print(f"no variant passes {args.accept}; nothing new is served:", file=sys.stderr)
        for name, reasons in result.rejected.items():
            print(f"  {name}: {'; '.join(reasons)}", file=sys.stderr)
        return EXIT_REJECTED
    new_dir = args.model_repository / args.model / str(result.new_version)
    print(f"accepted {result.selected}: new version {result.new_version} at {new_dir}")
    if result.pinned_version is not None:
        print(
            f"note: config.toml pins version {result.pinned_version}; "
            f"set version = {result.new_version} there to serve the new one",
            file=sys.stderr,
        )
    return EXIT_OK
