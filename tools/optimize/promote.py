"""The chosen variant becomes a new version: ``<repo>/<model>/<max+1>/model.onnx`` + ``provenance.json``.

The new version directory is assembled under a hidden, non-numeric name and renamed into place in
one step, so a server scanning the repository never sees a half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
PROVENANCE_FILE = "provenance.json"


def versions(model_dir: Path) -> list[int]:
    """The model's numeric version directories, ascending."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def sha256_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def promote(model_dir: Path, variant_file: Path, provenance: Mapping[str, Any]) -> int:
    """Copies ``variant_file`` to a new version beside ``provenance``; returns the new version."""
    version = max(versions(model_dir), default=0) + 1
    staging = Path(tempfile.mkdtemp(prefix=".promote-", dir=model_dir))
    try:
        shutil.copyfile(variant_file, staging / MODEL_FILE)
        record = {"version": version, **provenance, "digest": sha256_digest(staging / MODEL_FILE)}
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(staging, 0o755)
        staging.rename(model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version
