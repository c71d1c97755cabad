"""The model repository on disk: ``<repo>/<model>/<version>/model.onnx``, versions numeric."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tensorgate.server.errors import ModelNotFoundError, RepositoryError
from tensorgate.server.model_config import ModelConfig, load_model_config
from tensorgate.server.validation import canonical_version

MODEL_FILE_NAME = "model.onnx"


@dataclass(frozen=True)
class ModelLocation:
    """Where one version of a model lives, and a digest of its content."""

    name: str
    version: str
    path: Path
    config: ModelConfig


def version_files(version_dir: Path) -> list[Path]:
    """Every file of one model version (``model.onnx``, ONNX external data, anything beside them),
    sorted by relative path."""
    return sorted(p for p in version_dir.rglob("*") if p.is_file())


def version_digest(version_dir: Path) -> str:
    """sha256 over the relative path and content of every file of a model version: weights kept
    in ONNX external data change the digest too, so a changed model never shares a cache key."""
    digest = hashlib.sha256()
    for path in version_files(version_dir):
        relative = str(path.relative_to(version_dir)).encode()
        digest.update(len(relative).to_bytes(4, "little") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def check_repository(root: Path) -> list[str]:
    """The repository's model names; RepositoryError (one line) when it is missing or empty."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} does not exist or is not a directory")
    names = ModelRepository(root).model_names()
    if not names:
        raise RepositoryError(
            f"model repository {root} holds no model: expected <model>/<version>/{MODEL_FILE_NAME}"
        )
    return names


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
        if not _is_model_name(model) or not model_dir.is_dir():
            return []
        return sorted(
            number
            for p in model_dir.iterdir()
            if p.is_dir()
            and (number := canonical_version(p.name)) is not None
            and (p / MODEL_FILE_NAME).is_file()
        )

    def locate(self, model: str, version: str | None = None) -> ModelLocation:
        """The version to serve: the one named, else the config's pinned one, else the newest.

        NOT_FOUND for a model or version not on disk; ModelLoadError for a broken config.toml.
        """
        available = self.versions(model)
        if not available:
            raise ModelNotFoundError(f"model '{model}' is not in the repository {self.root}")
        config = load_model_config(self.root / model)
        wanted = version or (str(config.version) if config.version is not None else "")
        if wanted:
            number = canonical_version(wanted)
            if number is None or number not in available:
                raise ModelNotFoundError(
                    f"model '{model}' has no version '{wanted[:32]}'; available: {available}"
                )
            chosen = number
        else:
            chosen = available[-1]
        path = self.root / model / _version_dir_name(self.root / model, chosen) / MODEL_FILE_NAME
        return ModelLocation(name=model, version=str(chosen), path=path, config=config)

    def fingerprint(self, model: str) -> tuple[object, ...]:
        """What changes when any file of a model changes on disk (config.toml, every version's
        files: names, sizes, times): cheap enough to take at every poll."""
        model_dir = self.root / model
        stats: list[object] = []
        for path in version_files(model_dir) if model_dir.is_dir() else []:
            try:
                info = path.stat()
            except OSError:
                continue
            stats.append((str(path.relative_to(model_dir)), info.st_size, info.st_mtime_ns))
        return tuple(stats)


#: the longest file name Linux filesystems hold: a longer model name is not in any repository
MAX_NAME_BYTES = 255


def _is_model_name(model: str) -> bool:
    """A name that can be a folder of the repository (callers choose names: nothing else reaches
    the filesystem)."""
    return (
        0 < len(model.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        and "/" not in model
        and "\x00" not in model
        and not model.startswith(".")
    )


def _version_dir_name(model_dir: Path, number: int) -> str:
    """The folder of a version: ``1`` or, as Triton allows, ``01``."""
    for path in model_dir.iterdir():
        if path.is_dir() and canonical_version(path.name) == number:
            return path.name
    return str(number)
