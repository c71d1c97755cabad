"""Result types returned by the clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tensorgate.codec.messages import ParameterValue, parse_infer_response, response_parameters
from tensorgate.proto import inference_pb2 as pb


@dataclass(frozen=True)
class InferResult:
    """One answer: its outputs, the response parameters (e.g. ``cache``), and its request id.

    In a stream, a failed request gives a result whose ``error`` holds the server's message.
    """

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    model_version: str = ""
    id: str = ""
    error: str | None = None

    @classmethod
    def from_response(cls, response: pb.ModelInferResponse) -> InferResult:
        return cls(
            outputs=parse_infer_response(response),
            parameters=response_parameters(response),
            model_version=response.model_version,
            id=response.id,
        )


@dataclass(frozen=True)
class ModelState:
    """A model of the repository and its state (READY, UNAVAILABLE, LOADING, ...)."""

    name: str
    version: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @classmethod
    def from_response(cls, response: pb.ModelMetadataResponse) -> ModelMetadata:
        def tensors(items: object) -> tuple[TensorInfo, ...]:
            return tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in items)  # type: ignore[attr-defined]

        return cls(
            name=response.name,
            versions=tuple(response.versions),
            platform=response.platform,
            inputs=tensors(response.inputs),
            outputs=tensors(response.outputs),
        )
