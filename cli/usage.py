"""Bad input to a command: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_USAGE = 2


class UsageError(Exception):
    """A command's input that cannot be used as given; the message is one line for the user."""


def usage_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input: ours, and the settings' own when they were loaded (the
    light client install has no settings module, so it is looked up, not imported)."""
    flags = sys.modules.get("tensorgate.server.flags")
    return (UsageError,) if flags is None else (UsageError, flags.SettingsError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors as one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")
