"""Random ``ModelInferRequest``s for fuzzing a live server, and the check each one must pass.

Used by tests/integration/test_fuzz.py (a bounded number of examples) and by
benchmarks/fuzz_requests.py (a longer run). The requests mix everything a caller controls:
model names, versions, ids, datatypes, shapes (negative, huge, too many dimensions), raw and typed
contents (of the right size, the wrong size, or both at once), requested outputs and parameters of
every type.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
from hypothesis import strategies as st

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub

DATATYPES = (
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
)  # fmt: skip
#: models of tests.support.models.make_test_repository (with digits), and their input names
MODELS = {"digits": ("pixels",), "add": ("x",), "all_types": ("in_fp32", "in_bytes", "in_int8")}
#: answers a caller sent could never be blamed for: the server's fault
SERVER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
#: contents field -> how to draw its values
_TYPED_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "fp64_contents": st.floats(allow_nan=True, allow_infinity=True),
    "bytes_contents": st.binary(max_size=16),
}

names = st.one_of(
    st.sampled_from(sorted(MODELS)),
    st.text(max_size=40).filter(lambda name: name != "failing"),
)
versions = st.one_of(
    st.sampled_from(["", "1", "01", "0001", "2", "0", "-1", " 1", "1.0", "\u0661", "\u00b2"]),
    st.text(alphabet="0123456789", min_size=1, max_size=40),
    st.text(max_size=12),
)
dimension = st.one_of(
    st.integers(0, 8),
    st.integers(-3, 70),
    st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]),
)
shapes = st.one_of(
    st.lists(dimension, max_size=5),
    st.lists(st.integers(0, 2), min_size=60, max_size=70),
)
parameter_values = st.one_of(
    st.booleans().map(lambda v: pb.InferParameter(bool_param=v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: pb.InferParameter(int64_param=v)),
    st.integers(0, 2**64 - 1).map(lambda v: pb.InferParameter(uint64_param=v)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: pb.InferParameter(double_param=v)),
    st.text(max_size=12).map(lambda v: pb.InferParameter(string_param=v)),
    st.just(pb.InferParameter()),
)
parameters = st.dictionaries(
    st.one_of(
        st.sampled_from(["timeout", "cache", "priority", "sequence_id", "triton_x", "binary_data"]),
        st.text(max_size=10),
    ),
    parameter_values,
    max_size=4,
)


@st.composite
def tensors(
    draw: st.DrawFn, model: str
) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes | None]:
    """One input tensor, and its raw bytes when it travels raw."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=draw(st.one_of(st.sampled_from(MODELS.get(model, ("x",))), st.text(max_size=10))),
        datatype=draw(st.one_of(st.sampled_from(DATATYPES), st.text(max_size=6))),
    )
    shape = draw(shapes)
    tensor.shape.extend(shape)
    how = draw(st.sampled_from(["raw-exact", "raw", "typed", "both", "none"]))
    raw: bytes | None = None
    if how in ("raw-exact", "raw", "both"):
        count = math.prod(shape) if shape and all(0 <= d <= 4096 for d in shape) else 1
        exact = 4 * count if count <= 4096 else 0
        size = exact if how == "raw-exact" else draw(st.integers(0, 512))
        raw = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(size)
    if how in ("typed", "both"):
        field = draw(st.sampled_from(sorted(_TYPED_FIELDS)))
        getattr(tensor.contents, field).extend(draw(st.lists(_TYPED_FIELDS[field], max_size=24)))
    return tensor, raw


@st.composite
def near_valid_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A valid request to ``add`` with one or two things changed: reaches past the first checks."""
    rows = draw(st.integers(0, 70))
    request = pb.ModelInferRequest(model_name="add", id=draw(st.text(max_size=8)))
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[rows, 4])
    values = draw(st.lists(st.floats(width=32), min_size=rows * 4, max_size=rows * 4))
    raw = np.array(values, np.float32).tobytes()
    for change in draw(st.lists(st.sampled_from(NEAR_CHANGES), max_size=2)):
        if change == "version":
            request.model_version = draw(versions)
        elif change == "shape":
            del tensor.shape[:]
            tensor.shape.extend(draw(shapes))
        elif change == "datatype":
            tensor.datatype = draw(st.sampled_from(DATATYPES))
        elif change == "raw size":
            raw = raw[: draw(st.integers(0, len(raw)))] + b"\0" * draw(st.integers(0, 8))
        elif change == "typed":
            tensor.contents.fp32_contents.extend(values)
            raw = b"" if draw(st.booleans()) else raw
        elif change == "output":
            request.outputs.add(name=draw(st.sampled_from(["y", "", "z"])))
        elif change == "parameters":
            for key, value in draw(parameters).items():
                request.parameters[key].CopyFrom(value)
    if raw or not tensor.contents.fp32_contents:
        request.raw_input_contents.append(raw)
    return request


NEAR_CHANGES = ("version", "shape", "datatype", "raw size", "typed", "output", "parameters")


@st.composite
def hostile_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    model = draw(names)
    request = pb.ModelInferRequest(
        model_name=model, model_version=draw(versions), id=draw(st.text(max_size=20))
    )
    raws: list[bytes | None] = []
    for tensor, raw in draw(st.lists(tensors(model), max_size=3)):
        request.inputs.append(tensor)
        raws.append(raw)
    if any(raw is not None for raw in raws):
        extra = draw(st.integers(-1, 1))  # one too few, exact, one too many
        blobs = [raw or b"" for raw in raws]
        request.raw_input_contents.extend(
            blobs[: max(0, len(blobs) + extra)] if extra < 0 else blobs
        )
        if extra > 0:
            request.raw_input_contents.append(b"\0" * 4)
    for output in draw(st.lists(st.text(max_size=10), max_size=2)):
        request.outputs.add(name=output)
    for key, value in draw(parameters).items():
        request.parameters[key].CopyFrom(value)
    return request


def infer_requests() -> st.SearchStrategy[pb.ModelInferRequest]:
    """Half near-valid requests, half anything at all."""
    return st.one_of(near_valid_requests(), hostile_requests())


def valid_request() -> pb.ModelInferRequest:
    """The request that must be answered correctly after each hostile one."""
    request = pb.ModelInferRequest(model_name="add")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    request.parameters["cache"].CopyFrom(pb.InferParameter(bool_param=False))
    return request


def check(stub: GRPCInferenceServiceStub, request: pb.ModelInferRequest, timeout: float) -> str:
    """Sends ``request``; returns its status name. Fails when the server blamed itself, or when the
    valid request right after is not answered correctly."""
    try:
        stub.ModelInfer(request, timeout=timeout)
        status = "OK"
    except grpc.RpcError as error:
        code = error.code()
        assert code not in SERVER_FAULTS, f"{code.name}: {error.details()} for {request!r:.2000}"
        status = code.name
    answer = stub.ModelInfer(valid_request(), timeout=timeout)
    y = np.frombuffer(answer.raw_output_contents[0], np.float32)
    assert y.tolist() == [2.0, 3.0, 4.0, 5.0], f"wrong answer after {request!r:.2000}"  # add v2
    return status
