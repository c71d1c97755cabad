"""Settings: defaults, TENSORGATE_* variables, flags generated from the settings, and their errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from tensorgate.cli.main import build_parser
from tensorgate.cli.up import DECIDED_BY_UP
from tensorgate.server.flags import (
    SettingsError,
    _value_type,
    flag_name,
    settings_from_flags,
    settings_markdown,
)
from tensorgate.server.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_bind_loopback_on_8001() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8001
    assert settings.drain_seconds == pytest.approx(3.0)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORGATE_PORT", "9001")
    monkeypatch.setenv("TENSORGATE_MODELS", "digits,mlp")
    monkeypatch.setenv("TENSORGATE_CACHE_ENABLED", "false")
    settings = Settings()
    assert (settings.port, settings.models, settings.cache_enabled) == (
        9001,
        ["digits", "mlp"],
        False,
    )


def test_a_json_list_in_the_environment_still_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORGATE_MODELS", '["digits"]')
    assert Settings().models == ["digits"]


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser("serve").parse_args(["serve", *argv])


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORGATE_PORT", "9001")
    monkeypatch.setenv("TENSORGATE_HOST", "127.0.0.2")
    args = serve_args(
        "--port", "7001", "--model-repository", "/models", "--no-cache", "--models", "a,b"
    )  # fmt: skip
    settings = settings_from_flags(args)
    assert settings.port == 7001
    assert settings.host == "127.0.0.2"
    assert settings.model_repository == Path("/models")
    assert settings.cache_enabled is False
    assert settings.models == ["a", "b"]


def test_every_setting_has_a_flag_with_help_and_its_default() -> None:
    help_text = " ".join(
        build_parser("serve")._subparsers._group_actions[0].choices["serve"].format_help().split()
    )  # type: ignore[union-attr]
    for name in Settings.model_fields:
        assert flag_name(name) in help_text, name
        assert f"TENSORGATE_{name.upper()}" in help_text, name
    assert "[default: 8001; env TENSORGATE_PORT]" in help_text


def test_up_passes_every_worker_setting_through() -> None:
    args = build_parser("up").parse_args(
        ["up", "--no-cache", "--log-level", "debug", "--models", "digits", "--grace-seconds", "4"]
    )
    settings = settings_from_flags(args, exclude=DECIDED_BY_UP, port=args.port)
    assert (settings.cache_enabled, settings.log_level, settings.models) == (
        False, "DEBUG", ["digits"]
    )  # fmt: skip
    assert settings.grace_seconds == 4
    assert (args.port, args.host) == (8000, None)


def bad_value(name: str) -> list[str]:
    """One bad value for every setting, from its type and bounds."""
    field = Settings.model_fields[name]
    kind = _value_type(field.annotation)
    flag = flag_name(name)
    if kind is bool:
        return [f"{flag}=maybe"]
    if typing.get_origin(kind) is typing.Literal:
        return [flag, "chatty"]
    if typing.get_origin(kind) is list:
        return [flag, "digits,../etc"]
    if kind is Path:
        return [flag, " "]
    if kind in (int, float):
        low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
        return [flag, str(low - 1)] if low is not None else [flag, "many"]
    return [flag, "not a host!"]


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_flag_refuses_a_bad_value(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = bad_value(name)
    with pytest.raises((SettingsError, SystemExit)) as caught:
        settings_from_flags(serve_args(*argv))
    if isinstance(caught.value, SystemExit):
        assert caught.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and flag_name(name) in error, error
    else:
        message = str(caught.value)
        assert "\n" not in message and flag_name(name) in message, message


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["serve", "--port", "70000"],
            "--port / TENSORGATE_PORT: Input should be less than or equal to 65535",
        ),
        (["serve", "--log-level", "chatty"], "invalid choice: 'CHATTY'"),
        (["up", "--workers", "0"], "at least one worker"),
        (["infer", "digits", "--input", "pixels=/nonexistent.npy"], "cannot read a .npy array"),
        (["models", "--timeout", "soon"], "invalid float value"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_input_to_a_command_is_one_line_and_exit_2(argv: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tensorgate.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def test_version_is_the_distributions() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tensorgate.cli.main", "--version"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.startswith("tensorgate ") and done.stdout.strip() != "tensorgate unknown"


def test_the_settings_reference_is_current() -> None:
    written = (REPO_ROOT / "docs" / "settings.md").read_text()
    assert written == settings_markdown(), "docs/settings.md is stale: run `make docs-settings`"
