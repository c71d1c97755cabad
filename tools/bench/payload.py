"""Serialized ModelInferRequest bytes with random inputs, cheap enough for a load generator.

A request is a constant header (model name, input descriptions) followed by one
``raw_input_contents`` field per input. Protobuf writes fields in field-number order and
``raw_input_contents`` (7) is the last field, so the header is serialized once and each request
appends fresh random bytes: no protobuf work per request, and no two requests alike, so no cache
helps. Random rows are drawn in blocks, which numpy does far faster than one row at a time.

For the cache benchmark, ``repeat_ratio`` of the requests are drawn instead from a fixed pool of
``repeat_pool`` requests, the same pool in every generator process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tensorgate.codec.messages import build_infer_request
from tensorgate.server.inputs import concrete_shape, random_feed
from tensorgate.server.tensors import DYNAMIC, TensorSpec

#: raw_input_contents is field 7, length-delimited (wire type 2)
_RAW_INPUT_TAG = bytes([(7 << 3) | 2])
#: rows of random inputs drawn at once
BLOCK_ROWS = 256
#: the seed of the repeated pool: every process and every run sends the same repeated requests
REPEAT_POOL_SEED = 20240603


@dataclass(frozen=True)
class PayloadSpec:
    """What the requests carry: one sample of each input of ``model`` (picklable, for processes)."""

    model: str
    inputs: tuple[TensorSpec, ...]
    version: str = ""
    repeat_ratio: float = 0.0
    repeat_pool: int = 0


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def sample_shapes(inputs: Sequence[TensorSpec]) -> dict[str, tuple[int, ...]]:
    """The shape of one sample of each input: batch dimension 1, other variable dimensions 1."""
    return {t.name: concrete_shape(t, 1) for t in inputs}


class RequestSource:
    """Hands out serialized requests; ``next()`` costs a slice and a join."""

    def __init__(self, spec: PayloadSpec, rng: np.random.Generator | None = None) -> None:
        self._rng = rng or np.random.default_rng()
        shapes = sample_shapes(spec.inputs)
        # One row of each of these specs is one request's tensor, whatever the model's batch dim.
        self._row_specs = [
            TensorSpec(t.name, t.datatype, (DYNAMIC, *shapes[t.name])) for t in spec.inputs
        ]
        header_inputs = {s.name: np.zeros(shapes[s.name], dtype=s.dtype) for s in self._row_specs}
        header = build_infer_request(spec.model, header_inputs, version=spec.version or None)
        del header.raw_input_contents[:]
        self._header = header.SerializeToString()
        self._field_prefixes = [
            _RAW_INPUT_TAG
            + _varint(int(np.prod(shapes[s.name], dtype=np.int64)) * s.dtype.itemsize)
            for s in self._row_specs
        ]
        self._block: list[bytes] = []
        self._repeat_ratio = spec.repeat_ratio
        self._repeated = self._draw(spec.repeat_pool, np.random.default_rng(REPEAT_POOL_SEED))

    def _draw(self, count: int, rng: np.random.Generator) -> list[bytes]:
        if count <= 0:
            return []
        feed = random_feed(self._row_specs, count, rng)
        columns = [feed[s.name] for s in self._row_specs]
        prefixes = self._field_prefixes
        return [
            self._header
            + b"".join(p + c[row].tobytes() for p, c in zip(prefixes, columns, strict=True))
            for row in range(count)
        ]

    def next(self) -> bytes:
        """One serialized ModelInferRequest: fresh random inputs, or one of the repeated pool."""
        if self._repeated and self._rng.random() < self._repeat_ratio:
            return self._repeated[int(self._rng.integers(len(self._repeated)))]
        if not self._block:
            self._block = self._draw(BLOCK_ROWS, self._rng)
        return self._block.pop()
