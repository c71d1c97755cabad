"""The committed gRPC stubs match what `make proto` generates from inference.proto."""

from __future__ import annotations

from pathlib import Path

from tensorgate.proto import generate


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert written, "nothing was generated"
    for path in written:
        committed = generate.PROTO_DIR / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} is stale: run `make proto` and commit the result"
        )


def test_service_speaks_the_open_inference_protocol() -> None:
    from tensorgate.proto import inference_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    request = pb.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert {n: f.number for n, f in request.items()} == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
