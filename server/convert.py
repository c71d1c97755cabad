"""Protobuf <-> the service's request and response types. Nothing else happens here."""

from __future__ import annotations

import time

import grpc

from tensorgate.codec.messages import ParameterValue, read_parameter, set_parameter
from tensorgate.codec.tensors import TensorCodecError, datatype_of, from_contents, from_raw, to_raw
from tensorgate.proto import inference_pb2 as pb
from tensorgate.server.dataplane import InferRequest, InferResponse, request_deadline
from tensorgate.server.errors import InvalidInputError
from tensorgate.server.validation import check_one_content_kind, check_wire_shape

#: a gRPC call without a deadline reports an "infinite" time remaining; treat anything this far out as none
_NO_DEADLINE_S = 365 * 24 * 3600.0


def transport_deadline(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + remaining


def decode_parameters(parameters: object) -> dict[str, ParameterValue]:
    return {key: read_parameter(value) for key, value in parameters.items()}  # type: ignore[attr-defined]


def decode_infer_request(message: pb.ModelInferRequest, deadline: float | None) -> InferRequest:
    """Decodes every input from raw bytes or typed contents; codec errors become INVALID_ARGUMENT."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInputError(
            f"raw_input_contents holds {len(raw)} tensors, expected one per input ({len(message.inputs)})"
        )
    inputs = {}
    try:
        for index, tensor in enumerate(message.inputs):
            if tensor.name in inputs:
                raise InvalidInputError(f"input '{tensor.name}' is given twice")
            shape = tuple(tensor.shape)
            check_wire_shape(tensor.name, shape, tensor.datatype)
            check_one_content_kind(tensor.name, bool(raw), tensor.contents.ByteSize())
            if raw:
                inputs[tensor.name] = from_raw(raw[index], tensor.datatype, shape, tensor.name)
            else:
                inputs[tensor.name] = from_contents(
                    tensor.contents, tensor.datatype, shape, tensor.name
                )
    except TensorCodecError as error:
        raise InvalidInputError(str(error)) from None
    parameters = decode_parameters(message.parameters)
    return InferRequest(
        model=message.model_name,
        version=message.model_version,
        id=message.id,
        inputs=inputs,
        outputs=tuple(output.name for output in message.outputs),
        parameters=parameters,
        deadline=request_deadline(parameters, deadline),
    )


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    """Every output travels as raw bytes (tritonclient reads only raw_output_contents)."""
    message = pb.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id
    )
    for name, array in response.outputs.items():
        message.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        message.raw_output_contents.append(to_raw(array))
    for key, value in response.parameters.items():
        set_parameter(message.parameters[key], value)
    return message
