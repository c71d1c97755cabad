"""A long fuzzing run: random ModelInferRequests against a live `tensorgate serve`, each followed by a
valid request that must be answered correctly; no answer may be INTERNAL or UNKNOWN.

The same generator as tests/integration/test_fuzz.py (tests/support/fuzzing.py), without its bound
and with fresh randomness each run. Prints how the answers split by status, writes JSON, and exits 1
with the smallest failing request hypothesis finds::

    python benchmarks/fuzz_requests.py --examples 5000 --json fuzz.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the generator lives with the tests

import grpc  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub  # noqa: E402
from tests.support.fuzzing import check, infer_requests  # noqa: E402
from tests.support.models import make_test_repository  # noqa: E402
from tests.support.processes import EXAMPLE_MODELS, serve  # noqa: E402


def run(examples: int, seed: int | None) -> tuple[Counter[str], str | None, float]:
    """Statuses seen, the failure (None when every example passed), seconds taken."""
    statuses: Counter[str] = Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tensorgate-fuzz-") as scratch:
        root = Path(scratch)
        repository = make_test_repository(root / "models", EXAMPLE_MODELS)
        env = {"TENSORGATE_CACHE_ENABLED": "true", "TENSORGATE_CACHE_DIR": str(root / "cache")}
        with (
            serve(repository, "--max-message-bytes", "1000000", log_dir=root, env=env) as server,
            grpc.insecure_channel(server.target) as channel,
        ):
            stub = GRPCInferenceServiceStub(channel)

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(request=infer_requests())
            def fuzz(request: object) -> None:
                statuses[check(stub, request, timeout=30)] += 1  # type: ignore[arg-type]

            if seed is not None:
                fuzz = __import__("hypothesis").seed(seed)(fuzz)
            try:
                fuzz()
                failure = None
            except AssertionError as error:
                failure = str(error)
            if server.process.poll() is not None:
                failure = f"the server exited with {server.process.returncode}"
    return statuses, failure, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="requests to try")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (default: random)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    statuses, failure, seconds = run(args.examples, args.seed)
    total = sum(statuses.values())
    print(f"{'STATUS':<22} {'REQUESTS':>9} {'SHARE':>7}")
    for status, count in statuses.most_common():
        print(f"{status:<22} {count:>9} {count / max(total, 1):>7.1%}")
    print(
        f"{total} requests in {seconds:.0f} s; {'FAILED: ' + failure if failure else 'no failure'}"
    )
    if args.json is not None:
        record = {"examples": total, "seconds": seconds, "statuses": dict(statuses)}
        args.json.write_text(json.dumps({**record, "failure": failure}, indent=2) + "\n")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
