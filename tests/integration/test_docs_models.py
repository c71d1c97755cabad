"""The scikit-learn walk-through of docs/models.md, run as written against a real ``tensorgate serve``.

The blocks come out of the doc itself, each marked by the HTML comment before it::

    <!-- sklearn-example: KIND NAME -->

KIND is ``python`` (run as a script), ``file`` (written to the path NAME), ``serve`` (the documented
``tensorgate serve`` command, started through tests/support/processes.serve on a free port) or
``shell`` (run with bash). They run in order in one empty folder; the doc's address 127.0.0.1:8001
is replaced by the server's. The tests then check what a user would: the served answers are
scikit-learn's own predictions, and the CLI's outputs say so too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import joblib
import numpy as np
import pytest

from tensorgate.client import Client
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.support.processes import REPO_ROOT, ServerProcess, serve

DOC = REPO_ROOT / "docs" / "models.md"
DOC_TARGET = "127.0.0.1:8001"
BLOCK = re.compile(
    r"<!-- sklearn-example: (?P<kind>\w+) (?P<name>\S+) -->\n```\w*\n(?P<body>.*?)```", re.DOTALL
)
KINDS = {"python", "file", "serve", "shell"}
#: every step together stays well under pytest's timeout; one step that hangs fails alone
STEP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Block:
    kind: str
    name: str
    body: str


@dataclass
class Walkthrough:
    """The folder the doc's steps ran in, the server they talked to, and each step's output."""

    folder: Path
    server: ServerProcess
    stdout: dict[str, str] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.folder / "models" / "wine"


def doc_blocks() -> list[Block]:
    blocks = [Block(**m.groupdict()) for m in BLOCK.finditer(DOC.read_text())]
    unknown = sorted({b.kind for b in blocks} - KINDS)
    assert not unknown, f"docs/models.md: unknown sklearn-example kinds {unknown}"
    return blocks


def step_environment() -> dict[str, str]:
    """This interpreter's ``tensorgate`` script first on PATH, no TENSORGATE_* settings leaking in."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "tensorgate").exists(), f"no tensorgate script beside {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_step(block: Block, folder: Path, target: str | None) -> str:
    """Runs one python or shell block in ``folder``; returns its stdout, or fails showing both streams."""
    body = block.body if target is None else block.body.replace(DOC_TARGET, target)
    if block.kind == "python":
        script = folder / f"step_{block.name}.py"
        script.write_text(body)
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", body]
    completed = subprocess.run(
        command,
        cwd=folder,
        env=step_environment(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    assert completed.returncode == 0, (
        f"docs/models.md step {block.name!r} exited with {completed.returncode}\n"
        f"--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"
    )
    return completed.stdout


def serve_arguments(body: str) -> tuple[str, list[str]]:
    """The repository and the further flags of the documented ``tensorgate serve`` command."""
    words = shlex.split(body)
    assert words[:2] == ["tensorgate", "serve"], f"the serve block runs {words[:2]}"
    rest = words[2:]
    at = rest.index("--model-repository")
    repository = rest[at + 1]
    return repository, rest[:at] + rest[at + 2 :]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    folder = tmp_path_factory.mktemp("docs-models")
    blocks = doc_blocks()
    assert [b.kind for b in blocks].count("serve") == 1, "the walk-through starts one server"
    stdout: dict[str, str] = {}
    with ExitStack() as stack:
        server: ServerProcess | None = None
        for block in blocks:
            if block.kind == "file":
                path = folder / block.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.body)
            elif block.kind == "serve":
                repository, flags = serve_arguments(block.body)
                server = stack.enter_context(serve(folder / repository, *flags, log_dir=folder))
            else:
                stdout[block.name] = run_step(
                    block, folder, server.target if server is not None else None
                )
        assert server is not None
        yield Walkthrough(folder, server, stdout)


@pytest.fixture(scope="module")
def original(walkthrough: Walkthrough) -> tuple[object, np.ndarray, np.ndarray]:
    """The scikit-learn pipeline the doc trained, and its held-out rows and labels."""
    folder = walkthrough.folder
    pipeline = joblib.load(folder / "wine.joblib")
    return pipeline, np.load(folder / "wine_test.npy"), np.load(folder / "wine_test_labels.npy")


def test_the_doc_marks_every_step_of_the_walkthrough() -> None:
    names = [(b.kind, b.name) for b in doc_blocks()]

    assert names == [
        ("python", "export"),
        ("file", "models/wine/config.toml"),
        ("serve", "server"),
        ("shell", "models"),
        ("shell", "infer"),
        ("python", "check"),
        ("shell", "optimize"),
        ("shell", "bench"),
    ]


def test_served_answers_equal_scikit_learns_predictions(
    walkthrough: Walkthrough, original: tuple[object, np.ndarray, np.ndarray]
) -> None:
    pipeline, x_test, y_test = original

    with Client(walkthrough.server.target) as client:
        served = client.infer("wine", {"features": x_test})

    assert np.array_equal(served["label"], pipeline.predict(x_test))  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        served["probabilities"],
        pipeline.predict_proba(x_test),  # type: ignore[attr-defined]
        atol=1e-5,
    )
    assert (served["label"] == y_test).mean() > 0.9  # a real classifier, not a constant


def test_the_server_reads_names_datatypes_and_batching_from_the_graph(
    walkthrough: Walkthrough,
) -> None:
    with grpc.insecure_channel(walkthrough.server.target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="wine"), timeout=10)
        config = stub.ModelConfig(pb.ModelConfigRequest(name="wine"), timeout=10).config

    def described(tensors: object) -> list[tuple[str, str, list[int]]]:
        return [(t.name, t.datatype, list(t.shape)) for t in tensors]  # type: ignore[attr-defined]

    assert described(metadata.inputs) == [("features", "FP32", [-1, 13])]
    assert described(metadata.outputs) == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 3]),
    ]
    assert config.max_batch_size == 64  # config.toml's value: the graph's batch axis is dynamic
    assert "features FP32 [-1, 13]" in walkthrough.stdout["check"]


def test_tensorgate_models_and_infer_print_the_served_model(
    walkthrough: Walkthrough, original: tuple[object, np.ndarray, np.ndarray]
) -> None:
    pipeline, x_test, _ = original

    assert re.search(r"^wine\s+1\s+READY\b", walkthrough.stdout["models"], re.MULTILINE)
    printed = walkthrough.stdout["infer"]
    assert "label int64 [45]" in printed
    assert "probabilities float32 [45, 3]" in printed
    labels = printed.split("label int64 [45]\n", 1)[1].split("probabilities", 1)[0]
    assert [int(v) for v in labels.strip("[] \n").split()] == list(pipeline.predict(x_test))  # type: ignore[attr-defined]


def test_optimize_reports_variants_with_the_pipelines_accuracy(
    walkthrough: Walkthrough, original: tuple[object, np.ndarray, np.ndarray]
) -> None:
    pipeline, x_test, y_test = original
    report = json.loads((walkthrough.model_dir / "1" / "variants" / "report.json").read_text())

    assert report["original"]["accuracy"] == pytest.approx(pipeline.score(x_test, y_test))  # type: ignore[attr-defined]
    assert report["validation"]["rows"] == len(x_test)
    assert {name: v["status"] for name, v in report["variants"].items()} == {
        "graph": "ok",
        "fp16": "ok",
    }
    assert report["variants"]["graph"]["metrics"]["top1_agreement"] == 1.0
    assert "report: models/wine/1/variants/report.json" in walkthrough.stdout["optimize"]


def test_bench_answers_every_request(walkthrough: Walkthrough) -> None:
    report = json.loads((walkthrough.folder / "wine-bench.json").read_text())

    assert [run["concurrency"] for run in report["runs"]] == [1, 16]
    for run in report["runs"]:
        assert run["requests"] > 0
        assert run["error_count"] == 0, run["errors"]
