"""The light client: its public names, and that it never needs ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys

import tensorgate.client

PUBLIC = [
    "AsyncClient",
    "ChannelOptions",
    "Client",
    "InferResult",
    "InferenceServerError",
    "ModelMetadata",
    "ModelState",
    "RetryPolicy",
    "ServerMetadata",
    "TensorCodecError",
    "TensorInfo",
    "TlsConfig",
]


def test_public_names_are_guarded() -> None:
    assert sorted(tensorgate.client.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(tensorgate.client, name) is not None


def test_client_imports_without_onnxruntime() -> None:
    # sys.modules[name] = None makes any `import onnxruntime` fail, as if it were not installed
    code = (
        "import sys\n"
        "for name in ('onnxruntime', 'onnx', 'diskcache', 'prometheus_client', 'pydantic'):\n"
        "    sys.modules[name] = None\n"
        "import tensorgate.client as c\n"
        "c.Client('127.0.0.1:1').close()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
