"""Builds OIP request messages from numpy and reads responses back; shared by both clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tensorgate.codec.tensors import datatype_of, from_contents, from_raw, to_raw
from tensorgate.proto import inference_pb2 as pb

ParameterValue = bool | int | float | str


def set_parameter(target: pb.InferParameter, value: ParameterValue) -> None:
    """Stores a Python value in the matching branch of an InferParameter."""
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def read_parameter(parameter: pb.InferParameter) -> ParameterValue:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else ""


def build_infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Iterable[str] | None = None,
    version: str | None = None,
    request_id: str = "",
    parameters: Mapping[str, ParameterValue] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying every tensor as raw bytes."""
    request = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id)
    for name, value in inputs.items():
        array = np.asarray(value)
        request.inputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        request.raw_input_contents.append(to_raw(array))
    for name in outputs or ():
        request.outputs.add(name=name)
    for key, value in (parameters or {}).items():
        set_parameter(request.parameters[key], value)
    return request


def parse_infer_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The output tensors of a response, by name (raw or typed contents)."""
    result: dict[str, np.ndarray] = {}
    raw = response.raw_output_contents
    for index, tensor in enumerate(response.outputs):
        if index < len(raw):
            result[tensor.name] = from_raw(raw[index], tensor.datatype, tensor.shape, tensor.name)
        else:
            result[tensor.name] = from_contents(
                tensor.contents, tensor.datatype, tensor.shape, tensor.name
            )
    return result


def response_parameters(response: pb.ModelInferResponse) -> dict[str, ParameterValue]:
    return {key: read_parameter(value) for key, value in response.parameters.items()}
