"""A temporary model repository holding one model with dynamic batching turned off.

The model's version folders are linked, not copied; its ``config.toml`` is rewritten with
``[dynamic_batching] enabled = false`` and everything else it said kept.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from tensorgate.server.model_config import CONFIG_FILE_NAME


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} as a TOML value")


def dump_toml(document: Mapping[str, Any]) -> str:
    """TOML text of a document of scalars, lists and tables of those (a model config's shape)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def config_without_batching(model_dir: Path) -> str:
    """The model's config.toml, with dynamic batching disabled."""
    path = model_dir / CONFIG_FILE_NAME
    document: dict[str, Any] = {}
    if path.is_file():
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    document.setdefault("dynamic_batching", {})["enabled"] = False
    return dump_toml(document)


@contextmanager
def repository_without_batching(repository: Path, model: str) -> Iterator[Path]:
    """A repository with only ``model``, unbatched; removed when the block ends."""
    source = repository / model
    with TemporaryDirectory(prefix="tensorgate-bench-") as root:
        target = Path(root) / model
        target.mkdir()
        for entry in source.iterdir():
            if entry.is_dir():
                (target / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
        (target / CONFIG_FILE_NAME).write_text(config_without_batching(source))
        yield Path(root)
