"""The model repository on disk: ``<repo>/<model>/<version>/model.onnx``, versions numeric."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tensorgate.server.errors import ModelNotFoundError
from tensorgate.server.model_config import ModelConfig, load_model_config

MODEL_FILE_NAME = "model.onnx"


@dataclass(frozen=True)
class ModelLocation:
    """Where one version of a model lives, and a digest of its content."""

    name: str
    version: str
    path: Path
    config: ModelConfig


def file_digest(path: Path) -> str:
    """sha256 of a file's content: a replaced model never shares a cache key with the old one."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelRepository:
    """Reads the repository folder; it holds no state, so models added on disk are seen at once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, model: str) -> list[int]:
        """Numeric version folders that hold a model file, ascending."""
        model_dir = self.root / model
        if not model_dir.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in model_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / MODEL_FILE_NAME).is_file()
        )

    def locate(self, model: str, version: str | None = None) -> ModelLocation:
        """The version to serve: the one named, else the config's pinned one, else the newest."""
        if "/" in model or model.startswith(".") or not model:
            raise ModelNotFoundError(f"model '{model}' is not in the repository")
        available = self.versions(model)
        if not available:
            raise ModelNotFoundError(f"model '{model}' is not in the repository {self.root}")
        config = load_model_config(self.root / model)
        wanted = version or (str(config.version) if config.version is not None else "")
        if wanted:
            if not wanted.isdigit() or int(wanted) not in available:
                raise ModelNotFoundError(
                    f"model '{model}' has no version '{wanted}'; available: {available}"
                )
            chosen = int(wanted)
        else:
            chosen = available[-1]
        path = self.root / model / str(chosen) / MODEL_FILE_NAME
        return ModelLocation(name=model, version=str(chosen), path=path, config=config)
