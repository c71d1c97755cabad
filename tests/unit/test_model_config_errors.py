"""A broken config.toml is one line naming the file, the key or line, and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorgate.server.errors import ModelLoadError
from tensorgate.server.model_config import load_model_config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_batch_sise = 3", "unknown key 'max_batch_sise' (did you mean 'max_batch_size'?)"),
        ("[session]\nexecution_modee = 'x'", "unknown key 'session.execution_modee'"),
        ("a = 1\nb = = 2", "TOML syntax error: Invalid value (at line 2, column 5)"),
        ("max_batch_size = 'x'", "key 'max_batch_size': Input should be a valid integer"),
        ("platform = 'pytorch'", "key 'platform': Input should be 'onnxruntime_onnx'"),
        (
            "[session]\nproviders = ['CPUExecutionProvidr']",
            "'CPUExecutionProvidr' is not an ONNX Runtime execution provider "
            "(did you mean 'CPUExecutionProvider'?)",
        ),
    ],
)
def test_a_broken_config_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ModelLoadError) as error:
        load_model_config(tmp_path)
    message = error.value.message
    assert message.startswith(f"{tmp_path / 'config.toml'}: ")
    assert expected in message
    assert "\n" not in message


def test_known_providers_and_no_config_load(tmp_path: Path) -> None:
    assert load_model_config(tmp_path).max_batch_size == 64
    (tmp_path / "config.toml").write_text("[session]\nproviders = ['CPUExecutionProvider']\n")
    assert load_model_config(tmp_path).session.providers == ["CPUExecutionProvider"]
