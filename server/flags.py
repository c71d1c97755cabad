"""Command-line flags generated from :class:`Settings`, so that every setting has exactly one flag.

Each field becomes ``--field-name`` (a ``flag`` key in the field's ``json_schema_extra`` renames it),
with the field's description, its default and its ``TENSORGATE_*`` variable in the help text. Booleans
get ``--x/--no-x``, lists take commas, ``Literal`` types become choices. Values are checked by the
settings model itself; a bad one is a :class:`SettingsError` with one line naming the flag.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from tensorgate.server.settings import ENV_PREFIX, Settings


class SettingsError(ValueError):
    """A setting given a value it cannot take; the message is one line, written for the user."""


def flag_name(name: str, field: FieldInfo | None = None) -> str:
    """``--model-repository`` for ``model_repository`` (or the field's ``flag`` override)."""
    field = field or Settings.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return "--" + str(extra.get("flag", name)).replace("_", "-")


def env_name(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def _value_type(annotation: Any) -> Any:
    """The annotation without ``None``, ``Annotated`` metadata or ``Optional``."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else annotation
    return annotation


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _bounds(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                words.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(words)


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return str(field.default_factory())  # type: ignore[call-arg]
    if field.default is None:
        return "unset"
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    return str(field.default)


def describe(name: str, field: FieldInfo) -> str:
    """The help text of a setting: description, range, default and variable."""
    parts = [field.description or name.replace("_", " ")]
    bounds = _bounds(field)
    if bounds:
        parts.append(f"({bounds})")
    parts.append(f"[default: {_default_text(field)}; env {env_name(name)}]")
    return " ".join(parts)


def add_settings_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, exclude: Iterable[str] = ()
) -> None:
    """A flag for every setting but ``exclude``; unset flags stay out of the namespace."""
    skipped = set(exclude)
    for name, field in Settings.model_fields.items():
        if name in skipped:
            continue
        kind = _value_type(field.annotation)
        options: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": describe(name, field).replace("%", "%%"),
        }
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:
            options["choices"] = list(typing.get_args(kind))
            # upper-case choices (log levels) take any case; lower-case ones (modes) likewise
            choices = options["choices"]
            options["type"] = str.upper if all(c.isupper() for c in choices) else str.lower
            options["metavar"] = "{" + ",".join(options["choices"]) + "}"
        elif typing.get_origin(kind) is list:
            options["type"] = _comma_list
            options["metavar"] = "A,B"
        else:
            converter: Callable[[str], Any] = kind if kind in (int, float, Path) else str
            options["type"] = converter
            options["metavar"] = {int: "N", float: "X", Path: "PATH"}.get(kind, "TEXT")
        parser.add_argument(flag_name(name, field), **options)


def settings_from_flags(
    args: argparse.Namespace, exclude: Iterable[str] = (), **overrides: Any
) -> Settings:
    """Settings from the flags given (but ``exclude``, flags of the same name that mean something
    else), then ``overrides``, then ``TENSORGATE_*`` variables, then defaults."""
    skipped = set(exclude)
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and k not in skipped}
    given.update(overrides)
    try:
        return Settings(**given)
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None


def _one_line(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        where = f"{flag_name(name)} / {env_name(name)}" if name in Settings.model_fields else name
        problems.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(problems)


def settings_markdown() -> str:
    """``docs/settings.md``: every setting, its flag, variable, default and meaning."""
    lines = [
        "# Settings",
        "",
        "Generated from `server/settings.py` by `make docs-settings`; a test fails when this page is",
        "stale. Every setting is a flag of `tensorgate serve` (and of `tensorgate up`, which passes",
        "it to every worker) and a `TENSORGATE_*` environment variable. Flags win over variables,",
        "which win over the defaults. Lists take commas in both.",
        "",
        "| flag | variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        kind = _value_type(field.annotation)
        flag = flag_name(name, field)
        if kind is bool:
            flag = f"{flag}, --no-{flag[2:]}"
        meaning = field.description or ""
        bounds = _bounds(field)
        if typing.get_origin(kind) is typing.Literal:
            meaning += f" (one of {', '.join(typing.get_args(kind))})"
        if bounds:
            meaning += f" ({bounds})"
        default = "the user's cache dir" if name == "cache_dir" else _default_text(field)
        lines.append(
            f"| `{flag}` | `{env_name(name)}` | `{default}` | {meaning.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"
