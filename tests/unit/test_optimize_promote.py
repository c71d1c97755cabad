"""Promotion: the next numeric version, the copied model and its provenance.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tensorgate.tools.optimize.promote import promote, sha256_digest, versions


def test_the_variant_becomes_the_next_version_with_provenance(tmp_path: Path) -> None:
    model_dir = tmp_path / "mlp"
    for name in ("1", "3", "variants", "10x"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "notes.txt").write_text("not a version")
    variant = tmp_path / "variant.onnx"
    variant.write_bytes(b"onnx bytes")

    version = promote(model_dir, variant, {"variant": "int8", "source_version": 3})

    assert versions(model_dir) == [1, 3, 4] and version == 4
    assert (model_dir / "4" / "model.onnx").read_bytes() == b"onnx bytes"
    provenance = json.loads((model_dir / "4" / "provenance.json").read_text())
    assert provenance["variant"] == "int8" and provenance["source_version"] == 3
    assert provenance["digest"] == "sha256:" + hashlib.sha256(b"onnx bytes").hexdigest()
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "1",
        "10x",
        "3",
        "4",
        "notes.txt",
        "variants",
    ]


def test_digest_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)

    assert sha256_digest(path) == "sha256:" + hashlib.sha256(b"x" * 3_000_000).hexdigest()
