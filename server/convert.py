"""Protobuf <-> the data plane's types, and the protobufs that describe models. Nothing else."""

from __future__ import annotations

import time

import grpc

from tensorgate.codec.messages import ParameterValue, read_parameter, set_parameter
from tensorgate.codec.tensors import TensorCodecError, datatype_of, from_contents, from_raw, to_raw
from tensorgate.proto import inference_pb2 as pb
from tensorgate.server.dataplane import InferRequest, InferResponse, request_deadline
from tensorgate.server.errors import InvalidInputError
from tensorgate.server.models import ModelState, ServedModel
from tensorgate.server.validation import check_one_content_kind, check_wire_shape

_CONFIG_DATATYPES = {
    name: pb.DataType.Value(f"TYPE_{'STRING' if name == 'BYTES' else name}")
    for name in (
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    )
}

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


def model_metadata(model: ServedModel) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(
        name=model.name, versions=[model.version], platform=model.config.platform
    )
    for spec in model.inputs:
        response.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    for spec in model.outputs:
        response.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    return response


def model_config(model: ServedModel) -> pb.ModelConfigResponse:
    """Triton's ModelConfig of a served model (batch dimension left out of dims when batching)."""
    max_batch = model.config.max_batch_size if model.batchable else 0
    config = pb.ModelConfig(
        name=model.name,
        platform=model.config.platform,
        backend="onnxruntime",
        max_batch_size=max_batch,
        default_model_filename="model.onnx",
    )
    for spec in model.inputs:
        dims = spec.shape[1:] if max_batch else spec.shape
        config.input.add(name=spec.name, data_type=_CONFIG_DATATYPES[spec.datatype], dims=dims)
    for spec in model.outputs:
        dims = spec.shape[1:] if max_batch else spec.shape
        config.output.add(name=spec.name, data_type=_CONFIG_DATATYPES[spec.datatype], dims=dims)
    kind = (
        pb.ModelInstanceGroup.KIND_GPU
        if model.provider.startswith("CUDA")
        else pb.ModelInstanceGroup.KIND_CPU
    )
    config.instance_group.add(name=model.name, count=model.config.instances, kind=kind)
    if max_batch:
        batching = model.config.dynamic_batching
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    return pb.ModelConfigResponse(config=config)


def repository_index(
    rows: list[tuple[str, str, str, str]], ready_only: bool
) -> pb.RepositoryIndexResponse:
    response = pb.RepositoryIndexResponse()
    for name, version, state, reason in rows:
        if ready_only and state != ModelState.READY:
            continue
        response.models.add(name=name, version=version, state=state, reason=reason)
    return response


def stream_error(message: pb.ModelInferRequest, text: str) -> pb.ModelStreamInferResponse:
    """A stream's answer to a request that failed: the stream itself goes on."""
    return pb.ModelStreamInferResponse(
        error_message=text,
        infer_response=pb.ModelInferResponse(model_name=message.model_name, id=message.id),
    )


def _duration(target: pb.StatisticDuration, count: int, ns: int) -> None:
    target.count = count
    target.ns = ns


def model_statistics(model: ServedModel) -> pb.ModelStatistics:
    stats = model.stats
    message = pb.ModelStatistics(
        name=model.name,
        version=model.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    infer = message.inference_stats
    for field_name, duration in (
        ("success", stats.success),
        ("fail", stats.fail),
        ("queue", stats.queue),
        ("compute_infer", stats.compute),
        ("cache_hit", stats.cache_hit),
        ("cache_miss", stats.cache_miss),
    ):
        _duration(getattr(infer, field_name), duration.count, duration.ns)
    for size, duration in sorted(stats.batch_sizes.items()):
        batch = message.batch_stats.add(batch_size=size)
        _duration(batch.compute_infer, duration.count, duration.ns)
    return message
