"""tensorgate's client SDK: a blocking :class:`Client` and an asyncio :class:`AsyncClient`.

Light on dependencies (grpcio, protobuf, numpy): it imports without ONNX Runtime.
"""

from tensorgate.client._async import AsyncClient
from tensorgate.client._errors import InferenceServerError
from tensorgate.client._options import ChannelOptions, RetryPolicy
from tensorgate.client._sync import Client
from tensorgate.client._types import InferResult, ModelMetadata, ModelState, TensorInfo
from tensorgate.codec.tensors import TensorCodecError

__all__ = [
    "AsyncClient",
    "ChannelOptions",
    "Client",
    "InferResult",
    "InferenceServerError",
    "ModelMetadata",
    "ModelState",
    "RetryPolicy",
    "TensorCodecError",
    "TensorInfo",
]
