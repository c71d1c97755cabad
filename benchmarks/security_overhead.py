"""What TLS and the token check cost per call, against plaintext in the same run.

Three workers serve ``digits`` (cache off): plaintext, TLS, and TLS with a token file. One caller
makes sequential ModelInfer calls on one connection to each in turn, in alternating rounds, so drift
of the machine hits all three alike. Prints the median latency of each and its ratio to plaintext, and
writes ``benchmarks/results/security_overhead.json``::

    python benchmarks/security_overhead.py               # 10 rounds of 300 calls
    python benchmarks/security_overhead.py --quick       # 3 rounds of 100 calls

TLS costs at the handshake (once per connection) and per record (encryption of a small message); the
token check is one SHA-256 and a constant-time comparison per line of the token file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tensorgate.balancer.local_ca import SERVER_NAME, Authority
from tensorgate.client import Client, TlsConfig
from tensorgate.server.auth import hash_token, new_token
from tensorgate.server.workers import stop_processes
from tensorgate.tools.bench.servers import serve_command
from tensorgate.tools.probes import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "security_overhead.json"
MODEL = "digits"
START_TIMEOUT_S = 60.0


def serving(port: int, ca: Path | None) -> bool:
    target = f"127.0.0.1:{port}"
    if ca is None:
        channel = grpc.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        options = [("grpc.ssl_target_name_override", SERVER_NAME)]
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@contextmanager
def worker(args: list[str], ca: Path | None, log_path: Path) -> Iterator[int]:
    port = free_port()
    command = serve_command(REPO_ROOT / "examples" / "models", MODEL, port, ["--no-cache", *args])
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not serving(port, ca):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {args} did not start; see {log_path}")
            time.sleep(0.2)
        yield port
    finally:
        stop_processes([process], 10.0)


def one_round(client: Client, calls: int, rng: np.random.Generator) -> list[float]:
    seconds = []
    for _ in range(calls):
        pixels = rng.random((1, 64), dtype=np.float32)
        started = time.perf_counter()
        client.infer(MODEL, {"pixels": pixels})
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 100 calls")
    args = parser.parse_args()
    rounds, calls = (3, 100) if args.quick else (10, 300)
    with tempfile.TemporaryDirectory(prefix="security-overhead-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        authority = Authority(workdir / "pki")
        pair = authority.issue("server")
        token = new_token()
        tokens = workdir / "tokens"
        tokens.write_text(f"{hash_token(token)} infer\n")
        tls_flags = ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
        tls = TlsConfig(root_certificates=authority.ca, server_name_override=SERVER_NAME)
        setups = {
            "plaintext": ([], None, None, None),
            "tls": (tls_flags, authority.ca, tls, None),
            "tls+token": ([*tls_flags, "--auth-tokens", str(tokens)], authority.ca, tls, token),
        }
        clients = {}
        for name, (flags, ca, client_tls, client_token) in setups.items():
            port = stack.enter_context(worker(flags, ca, workdir / f"{name}.log"))
            clients[name] = stack.enter_context(
                Client(f"127.0.0.1:{port}", tls=client_tls, token=client_token)
            )
        rng = np.random.default_rng(0)
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():
            one_round(client, 50, rng)  # warm connections and the model
        for _ in range(rounds):
            for name, client in clients.items():
                samples[name] += one_round(client, calls, rng)
    medians = {name: statistics.median(s) * 1e6 for name, s in samples.items()}
    print(f"{'setup':<10} {'median µs':>10} {'vs plaintext':>13}")
    for name, median in medians.items():
        print(f"{name:<10} {median:>10.0f} {median / medians['plaintext']:>12.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "security_overhead",
                "host": platform.node(),
                "rounds": rounds,
                "calls_per_round": calls,
                "median_us": medians,
                "ratio_to_plaintext": {n: m / medians["plaintext"] for n, m in medians.items()},
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
