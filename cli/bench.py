"""``tensorgate bench``: load a server (closed loop, open loop), and read it against yardsticks.

Examples (from the repository root)::

    tensorgate bench --scenario benchmarks/concurrency_digits.toml
    tensorgate bench --serve --model-repository examples/models --model digits \\
        --server-arg=--no-cache --concurrency 1,16,64 --duration 5 --echo --thin --limit
    tensorgate bench --target 127.0.0.1:8001 --server-pid 1234 --model cnn --rate 200

Flags override the scenario file's keys. Server flags pass through with ``--server-arg=--flag=value``
(the ``=`` is needed because the value starts with ``--``). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_USAGE = 0, 2
TABLE_WIDTH = 200

log = logging.getLogger(__name__)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark a server: throughput, latency percentiles, CPU per request, as ratios",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", type=Path, metavar="FILE.toml", help="a benchmarks/ scenario")
    parser.add_argument("--name", help="names the results (default: scenario file or model)")
    parser.add_argument("--model", help="the model to load")
    parser.add_argument("--model-version", dest="version", metavar="V")
    parser.add_argument("--model-repository", type=Path, metavar="DIR")
    where = parser.add_argument_group("the server under test")
    where.add_argument(
        "--serve", action="store_const", const=True, help="start tensorgate serve (free port)"
    )
    where.add_argument(
        "--server-arg",
        action="append",
        dest="server_args",
        metavar="ARG",
        help="a flag for tensorgate serve, e.g. --server-arg=--grpc-threads=64 (repeatable); "
        "the echo server's pool is sized from them too",
    )
    where.add_argument(
        "--no-batching",
        dest="batching",
        action="store_const",
        const=False,
        help="serve a repository copy with dynamic batching off",
    )
    where.add_argument(
        "--target", action="append", dest="targets", metavar="HOST:PORT", help="a running server"
    )
    where.add_argument(
        "--server-pid",
        action="append",
        dest="server_pids",
        type=int,
        metavar="PID",
        help="a running server's process (its children too), for CPU per request; repeatable",
    )
    load = parser.add_argument_group("the load")
    load.add_argument("--concurrency", type=_ints, metavar="LIST", help="closed loop, e.g. 1,16,64")
    load.add_argument("--rate", dest="rates", type=_floats, metavar="LIST", help="open loop, req/s")
    load.add_argument("--duration", type=float, metavar="S", help="measured seconds (default 5)")
    load.add_argument("--warmup", type=float, metavar="S", help="seconds before each (default 1)")
    load.add_argument("--processes", type=int, metavar="N", help="generator processes (default 1)")
    load.add_argument("--channels", type=int, metavar="N", help="connections per process (1)")
    load.add_argument("--timeout", type=float, metavar="S", help="per request (default 30)")
    load.add_argument("--max-in-flight", type=int, metavar="N", help="open loop cap (4096)")
    load.add_argument("--repeat-ratio", type=float, metavar="R", help="share of repeated requests")
    load.add_argument("--repeat-pool", type=int, metavar="K", help="distinct repeated requests")
    yardsticks = parser.add_argument_group("yardsticks")
    yardsticks.add_argument(
        "--echo", action="store_const", const=True, help="also load a do-nothing gRPC server"
    )
    yardsticks.add_argument(
        "--thin",
        action="store_const",
        const=True,
        help="also load the thinnest OIP server on the model (grpcio threads and grpc.aio)",
    )
    yardsticks.add_argument(
        "--limit", action="store_const", const=True, help="also run the model in-process"
    )
    yardsticks.add_argument("--limit-batches", type=_ints, metavar="LIST", help="1,2,4,...,64")
    yardsticks.add_argument("--limit-seconds", type=float, metavar="S", help="per batch (2)")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, metavar="FILE.json", help="benchmarks/results/<name>.json"
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=handle)


SCENARIO_KEYS = (
    "name",
    "model",
    "version",
    "model_repository",
    "serve",
    "targets",
    "server_pids",
    "concurrency",
    "rates",
    "duration",
    "warmup",
    "processes",
    "channels",
    "timeout",
    "max_in_flight",
    "repeat_ratio",
    "repeat_pool",
    "echo",
    "thin",
    "limit",
    "limit_batches",
    "limit_seconds",
    "out",
)


def handle(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from rich.console import Console

    from tensorgate.tools.bench.report import (
        PlottingUnavailable,
        draw_png,
        print_report,
        write_json,
    )
    from tensorgate.tools.bench.runner import run_scenario
    from tensorgate.tools.bench.scenario import load_scenario

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    if not console.is_terminal:  # a wide table, not one cut to 80 columns
        console = Console(width=TABLE_WIDTH)
    overrides = {key: getattr(args, key) for key in SCENARIO_KEYS}
    try:
        plan = load_scenario(args.scenario, overrides, args.server_args, args.batching)
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"]) or "scenario"
            console.print(f"tensorgate bench: {where}: {problem['msg']}", style="red")
        return EXIT_USAGE
    except (OSError, ValueError) as error:  # unreadable file, bad TOML
        console.print(f"tensorgate bench: {error}", style="red")
        return EXIT_USAGE
    report = run_scenario(plan, show_progress=not args.no_progress)
    print_report(report, console)
    out = plan.out_path
    write_json(report, out)
    png = out.with_suffix(".png")
    if report["runs"]:
        try:
            draw_png(report, png)
        except PlottingUnavailable as error:  # the table and the JSON stand without it
            console.print(f"wrote {out}; tensorgate bench: {error}", style="yellow")
        else:
            console.print(f"wrote {out} and {png}")
    else:
        console.print(f"wrote {out}")
    return EXIT_OK
