"""The response cache through a real `tensorgate serve`: the `cache` response parameter, the
`cache: false` bypass, `--no-cache`, restart persistence, two workers sharing hits, single flight
counted in the model's execution count, and a directory that cannot be used."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tensorgate.client import Client
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tensorgate.server.cache.disk import FILTER_FRESH_S
from tests.support.processes import EXAMPLE_MODELS, ServerProcess, serve, wait_until_serving
from tests.support.waiting import wait_until

WAIT_S = 30.0
CACHE_ON = {"TENSORGATE_CACHE_ENABLED": "true"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits and cnn as shipped, and digits again marked nondeterministic."""
    root = tmp_path_factory.mktemp("cache-repo")
    for name in ("digits", "cnn"):
        shutil.copytree(EXAMPLE_MODELS / name, root / name)
    shutil.copytree(EXAMPLE_MODELS / "digits", root / "digits_random")
    (root / "digits_random" / "config.toml").write_text("nondeterministic = true\n")
    return root


def start(repository: Path, cache_dir: Path, log_dir: Path, *args: str, **kwargs):
    return serve(
        repository, "--cache-dir", str(cache_dir), "--no-warmup", *args,
        env=CACHE_ON, log_dir=log_dir, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cache-server")
    with start(repository, root / "cache", root) as process:
        yield process


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.target, timeout=WAIT_S) as c:
        yield c


def executions(target: str, model: str) -> int:
    """Rows the model has run so far (ModelStatistics.inference_count; batches would undercount
    identical requests run together): what a hit must not increase."""
    with grpc.insecure_channel(target) as channel:
        stats = GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name=model), timeout=WAIT_S
        )
    return sum(s.inference_count for s in stats.model_stats)


def pixels(seed: int) -> dict[str, np.ndarray]:
    return {"pixels": np.random.default_rng(seed).uniform(0, 16, (1, 64)).astype(np.float32)}


def test_a_repeated_request_is_a_hit_without_a_model_run_and_keeps_its_id(client, server) -> None:
    before = executions(server.target, "digits")
    first = client.infer_result("digits", pixels(1), request_id="first")
    second = client.infer_result("digits", pixels(1), request_id="second")
    assert (first.parameters["cache"], second.parameters["cache"]) == ("miss", "hit")
    assert (first.id, second.id) == ("first", "second")
    for name in first.outputs:
        np.testing.assert_array_equal(second.outputs[name], first.outputs[name])
    assert executions(server.target, "digits") == before + 1


def test_another_input_byte_or_output_selection_is_a_miss(client) -> None:
    base = pixels(2)
    changed = {"pixels": base["pixels"].copy()}
    changed["pixels"][0, 63] += 1
    assert client.infer_result("digits", base).parameters["cache"] == "miss"
    assert client.infer_result("digits", changed).parameters["cache"] == "miss"
    only_label = client.infer_result("digits", base, outputs=["label"])
    assert only_label.parameters["cache"] == "miss"
    assert set(only_label.outputs) == {"label"}
    assert client.infer_result("digits", base, outputs=["label"]).parameters["cache"] == "hit"


def test_cache_false_runs_the_model_and_leaves_the_entry_alone(client, server) -> None:
    client.infer_result("digits", pixels(3))
    before = executions(server.target, "digits")
    bypassed = client.infer_result("digits", pixels(3), parameters={"cache": False})
    assert bypassed.parameters.get("cache") != "hit"
    assert executions(server.target, "digits") == before + 1
    assert client.infer_result("digits", pixels(3)).parameters["cache"] == "hit"


def test_a_nondeterministic_model_is_never_answered_from_the_cache(client, server) -> None:
    before = executions(server.target, "digits_random")
    for _ in range(2):
        assert client.infer_result("digits_random", pixels(4)).parameters.get("cache") != "hit"
    assert executions(server.target, "digits_random") == before + 2


def test_concurrent_identical_requests_cause_one_model_run(server) -> None:
    count = 16
    image = {"image": np.random.default_rng(5).normal(size=(1, 3, 32, 32)).astype(np.float32)}
    before = executions(server.target, "cnn")
    barrier = threading.Barrier(count)
    results: list = []

    def request() -> None:
        try:
            with Client(server.target, timeout=WAIT_S) as own:
                own.live()  # connected before the barrier: the requests leave together
                barrier.wait(WAIT_S)
                results.append(own.infer_result("cnn", image))
        except Exception as error:
            results.append(error)

    threads = [threading.Thread(target=request, name=f"request-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 2)
        assert not thread.is_alive()
    assert all(not isinstance(r, Exception) for r in results), results
    assert sorted(r.parameters["cache"] for r in results) == ["hit"] * (count - 1) + ["miss"]
    assert executions(server.target, "cnn") == before + 1
    for result in results:
        np.testing.assert_array_equal(result.outputs["logits"], results[0].outputs["logits"])


def test_answers_survive_a_server_restart(repository, tmp_path) -> None:
    with (
        start(repository, tmp_path / "cache", tmp_path) as first,
        Client(first.target, timeout=WAIT_S) as c,
    ):
        assert c.infer_result("digits", pixels(6)).parameters["cache"] == "miss"
    with start(repository, tmp_path / "cache", tmp_path) as second:
        with Client(second.target, timeout=WAIT_S) as c:
            assert c.infer_result("digits", pixels(6)).parameters["cache"] == "hit"
        assert executions(second.target, "digits") == 0


def consecutive_free_ports() -> int:
    """A port p with p+1 free too, for ``--workers 2``."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


def test_two_worker_processes_share_hits(repository, tmp_path) -> None:
    port = consecutive_free_ports()
    with start(repository, tmp_path / "cache", tmp_path, "--workers", "2", port=port) as server:
        other = f"127.0.0.1:{port + 1}"
        wait_until_serving(other, timeout=60)
        with Client(server.target, timeout=WAIT_S) as zero, Client(other, timeout=WAIT_S) as one:
            assert zero.infer_result("digits", pixels(7)).parameters["cache"] == "miss"
            wait_for_disk_entries(tmp_path / "cache", 1)
            time.sleep(FILTER_FRESH_S)  # another worker's landed write is seen this long after
            assert one.infer_result("digits", pixels(7)).parameters["cache"] == "hit"
            assert executions(other, "digits") == 0


def wait_for_disk_entries(directory: Path, count: int) -> None:
    """Until the disk tier holds ``count`` entries (a worker writes after answering)."""

    def stored() -> int:
        with sqlite3.connect(f"file:{directory / 'cache.db'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM Cache").fetchone()[0])

    wait_until(lambda: stored() >= count, WAIT_S, f"the disk tier to hold {count} entries")


def test_no_cache_turns_it_off_for_the_whole_server(repository, tmp_path) -> None:
    with start(repository, tmp_path / "cache", tmp_path, "--no-cache") as server:
        with Client(server.target, timeout=WAIT_S) as c:
            for _ in range(2):
                assert "cache" not in c.infer_result("digits", pixels(8)).parameters
        assert executions(server.target, "digits") == 2
    assert not (tmp_path / "cache").exists()


def test_an_unusable_cache_directory_degrades_with_one_warning(repository, tmp_path) -> None:
    # Tests run as root, for whom chmod 0500 denies nothing: a directory under a regular file
    # cannot be created by anyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with start(repository, blocker / "cache", tmp_path) as server:
        with Client(server.target, timeout=WAIT_S) as c:
            outcomes = [c.infer_result("digits", pixels(9)).parameters["cache"] for _ in range(3)]
        assert outcomes == ["miss", "hit", "hit"]  # the memory tier still serves
        log = server.log()
    assert log.count("disk cache at") == 1
    assert "unusable" in log
