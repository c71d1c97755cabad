"""The disk cache only ever holds our bytes: rows planted in ``cache.db`` by someone who can write the
directory are misses (nothing runs, nothing outside is read or deleted), files are 0600, and a
model whose weights live in ONNX external data never answers from its old weights."""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tensorgate.client import Client
from tests.support.models import add_one_model
from tests.support.processes import serve

X = np.arange(4, dtype=np.float32).reshape(1, 4)


def cache_env(cache_dir: Path) -> dict[str, str]:
    return {"TENSORGATE_CACHE_ENABLED": "true", "TENSORGATE_CACHE_DIR": str(cache_dir)}


class Bomb:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def repository_with_add(root: Path) -> Path:
    model = add_one_model(1.0)
    model.ir_version = 8
    path = root / "add" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(model, path)
    return root


def answer_once(repository: Path, tmp_path: Path, cache_dir: Path) -> tuple[list[float], str]:
    """One request through a fresh server; the answer and the server's log."""
    with (
        serve(repository, log_dir=tmp_path, env=cache_env(cache_dir)) as server,
        Client(server.target, timeout=20) as client,
    ):
        answer = client.infer("add", {"x": X})["y"].tolist()
    return answer, server.log()


def rewrite_rows(cache_dir: Path, mode: int, filename: str | None, value: bytes | None) -> int:
    """What an attacker with write access to the directory does: rewrite every row in place."""
    with sqlite3.connect(cache_dir / "cache.db") as db:
        changed = db.execute(
            "UPDATE Cache SET mode = ?, filename = ?, value = ?", (mode, filename, value)
        ).rowcount
    return changed


def test_a_planted_pickle_row_is_a_miss_and_never_runs(tmp_path: Path) -> None:
    repository = repository_with_add(tmp_path / "models")
    cache_dir = tmp_path / "cache"
    expected, _ = answer_once(repository, tmp_path, cache_dir)
    marker = tmp_path / "pwned"
    assert rewrite_rows(cache_dir, 4, None, pickle.dumps(Bomb(marker))) >= 1  # 4: MODE_PICKLE
    answer, log = answer_once(repository, tmp_path, cache_dir)
    assert answer == expected
    assert not marker.exists(), "the planted pickle ran"
    assert log.count("holds a row it did not write") == 1, log[-3000:]


def test_a_planted_absolute_filename_is_never_read_nor_deleted(tmp_path: Path) -> None:
    repository = repository_with_add(tmp_path / "models")
    cache_dir = tmp_path / "cache"
    expected, _ = answer_once(repository, tmp_path, cache_dir)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    assert rewrite_rows(cache_dir, 2, str(victim), None) >= 1  # 2: MODE_BINARY, in a file
    answer, log = answer_once(repository, tmp_path, cache_dir)  # the miss writes the row again
    assert answer == expected
    assert victim.read_text() == "precious"
    assert "holds a row it did not write" in log
    answer, _ = answer_once(repository, tmp_path, cache_dir)  # now a real hit
    assert answer == expected


def test_cache_files_are_private(tmp_path: Path) -> None:
    repository = repository_with_add(tmp_path / "models")
    cache_dir = tmp_path / "cache"
    answer_once(repository, tmp_path, cache_dir)
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert any(p.name == "cache.db" for p in files)
    modes = {str(p.relative_to(cache_dir)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert all(mode == "0o600" for mode in modes.values()), modes


def save_with_external_weights(version_dir: Path, increment: float) -> None:
    model = add_one_model(increment)
    model.ir_version = 8
    # as raw bytes, which ONNX moves to external data (typed float_data stays in the graph)
    model.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.array([increment], np.float32), "inc")
    )
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(version_dir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )


def test_a_model_with_external_weights_never_answers_from_old_weights(tmp_path: Path) -> None:
    version_dir = tmp_path / "models" / "add" / "1"
    save_with_external_weights(version_dir, 1.0)
    model_file = (version_dir / "model.onnx").read_bytes()
    cache_dir = tmp_path / "cache"
    args = ("--model-control-mode", "explicit")
    with (
        serve(tmp_path / "models", *args, log_dir=tmp_path, env=cache_env(cache_dir)) as server,
        Client(server.target, timeout=20) as client,
    ):
        assert client.infer("add", {"x": X})["y"].tolist() == (X + 1).tolist()
        assert client.infer("add", {"x": X})["y"].tolist() == (X + 1).tolist()  # a hit
        (version_dir / "weights.bin").write_bytes(np.float32(2.0).tobytes())
        assert (version_dir / "model.onnx").read_bytes() == model_file, "only the weights changed"
        client.load("add")
        assert client.infer("add", {"x": X})["y"].tolist() == (X + 2).tolist()
    with (
        serve(tmp_path / "models", log_dir=tmp_path, env=cache_env(cache_dir)) as server,
        Client(server.target, timeout=20) as client,
    ):
        assert client.infer("add", {"x": X})["y"].tolist() == (X + 2).tolist()
