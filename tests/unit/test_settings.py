"""Settings: defaults, TENSORGATE_* variables, and flags over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorgate.server.cli import build_parser
from tensorgate.server.commands.serve import settings_from_args
from tensorgate.server.settings import Settings


def test_defaults_bind_loopback_on_8001() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8001
    assert settings.drain_seconds == pytest.approx(3.0)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORGATE_PORT", "9001")
    monkeypatch.setenv("TENSORGATE_MODELS", '["digits"]')
    monkeypatch.setenv("TENSORGATE_CACHE_ENABLED", "false")
    settings = Settings()
    assert (settings.port, settings.models, settings.cache_enabled) == (9001, ["digits"], False)


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORGATE_PORT", "9001")
    monkeypatch.setenv("TENSORGATE_HOST", "127.0.0.2")
    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "7001",
            "--model-repository",
            "/models",
            "--no-cache",
            "--models",
            "a,b",
        ]
    )
    settings = settings_from_args(args)
    assert settings.port == 7001
    assert settings.host == "127.0.0.2"
    assert settings.model_repository == Path("/models")
    assert settings.cache_enabled is False
    assert settings.models == ["a", "b"]


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORGATE_PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        Settings()
