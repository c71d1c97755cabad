"""Drives a tensorgate server with tritonclient.grpc; prints one JSON object of what it saw.

Runs in its own process: tritonclient registers the `inference.*` protobuf symbols itself, and ours
would collide with them in one process.
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import np_to_triton_dtype

from tensorgate.examples.datasets import digits_split


def main(target: str) -> dict[str, object]:
    client = triton.InferenceServerClient(target)
    seen: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server_name": client.get_server_metadata().name,
        "model_ready": client.is_model_ready("digits"),
    }
    metadata = client.get_model_metadata("digits", as_json=True)
    seen["inputs"] = [
        (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["inputs"]
    ]
    config = client.get_model_config("digits", as_json=True)["config"]
    seen["max_batch_size"] = config.get("max_batch_size")

    # accuracy on the held-out digits, batches of 50
    _, x_test, _, y_test = digits_split()
    labels = []
    for start in range(0, len(x_test), 50):
        batch = x_test[start : start + 50]
        pixels = triton.InferInput("pixels", list(batch.shape), "FP32")
        pixels.set_data_from_numpy(batch)
        result = client.infer("digits", [pixels], outputs=[triton.InferRequestedOutput("label")])
        labels.append(result.as_numpy("label"))
    seen["accuracy"] = float((np.concatenate(labels) == y_test).mean())

    # several datatypes through the identity model
    rng = np.random.default_rng(3)
    arrays = {
        "in_int8": rng.integers(-128, 127, (2, 3)).astype(np.int8),
        "in_uint16": rng.integers(0, 65535, (2, 3)).astype(np.uint16),
        "in_int64": rng.integers(-(2**40), 2**40, (2, 3)).astype(np.int64),
        "in_fp16": rng.normal(size=(2, 3)).astype(np.float16),
        "in_fp64": rng.normal(size=(2, 3)),
        "in_bool": rng.integers(0, 2, (2, 3)).astype(bool),
        "in_bytes": np.array([[b"a", b"bb", b"ccc"], [b"", b"e", "ü".encode()]], dtype=np.object_),
    }
    metadata = client.get_model_metadata("all_types", as_json=True)
    inputs = []
    for tensor in metadata["inputs"]:
        name = tensor["name"]
        array = arrays.get(name)
        if array is None:  # the types not under test: zeros of the right kind
            array = np.zeros((2, 3), dtype=triton_dtype_to_np(tensor["datatype"]))
        infer_input = triton.InferInput(
            name, [2, 3], np_to_triton_dtype(array.dtype) if array.dtype != object else "BYTES"
        )
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    result = client.infer("all_types", inputs)
    seen["datatypes_equal"] = {
        name: bool((result.as_numpy(name.replace("in_", "out_")) == array).all())
        for name, array in arrays.items()
    }

    # stream inference: 50 requests on one stream, answered by id
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for index in range(50):
        pixels = triton.InferInput("pixels", [1, 64], "FP32")
        pixels.set_data_from_numpy(x_test[index : index + 1])
        client.async_stream_infer("digits", [pixels], request_id=str(index))
    stream_labels: dict[int, int] = {}
    for _ in range(50):
        result, error = answers.get(timeout=30)
        if error is None:
            stream_labels[int(result.get_response().id)] = int(result.as_numpy("label")[0])
    client.stop_stream()
    seen["stream_answers"] = len(stream_labels)
    seen["stream_agrees"] = all(stream_labels[i] == labels[0][i] for i in stream_labels)

    # repository calls and statistics
    seen["index"] = sorted(
        m["name"] for m in client.get_model_repository_index(as_json=True)["models"]
    )
    client.unload_model("add")
    seen["add_ready_after_unload"] = client.is_model_ready("add")
    client.load_model("add")
    seen["add_ready_after_load"] = client.is_model_ready("add")
    stats = client.get_inference_statistics("digits", as_json=True)
    seen["digits_executions"] = int(stats["model_stats"][0].get("execution_count", 0))

    try:
        bad = triton.InferInput("pixels", [1, 63], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 63), np.float32))
        client.infer("digits", [bad])
        seen["bad_input_error"] = None
    except triton.InferenceServerException as error:
        seen["bad_input_error"] = [error.status(), error.message()]
    client.close()
    return seen


def triton_dtype_to_np(datatype: str) -> type:
    from tritonclient.utils import triton_to_np_dtype

    return triton_to_np_dtype(datatype)


if __name__ == "__main__":
    json.dump(main(sys.argv[1]), sys.stdout)
