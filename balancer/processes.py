"""Child processes that cannot outlive their parent.

Each child runs in its own session, so a Ctrl-C at the terminal reaches only the supervisor, which
then stops the children in the order a drain needs. On Linux each child also asks the kernel for
SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, set by util-linux's ``setpriv``), so a
supervisor killed with ``kill -9`` leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


def with_parent_death_signal(argv: Sequence[str], sig: signal.Signals) -> list[str]:
    """``argv`` run through util-linux's ``setpriv --pdeathsig``: the kernel sends ``sig`` to the
    child when its parent dies. No ``preexec_fn``: code between fork and exec deadlocks when the
    parent has other threads (gRPC's, in a test process). Unchanged where setpriv is missing."""
    setpriv = shutil.which("setpriv")
    if not sys.platform.startswith("linux") or setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", sig.name.removeprefix("SIG"), "--", *argv]


@dataclass
class Child:
    """One supervised process: a name for the logs, its command, and the running process if any."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(
            with_parent_death_signal(self.argv, signal.SIGTERM),
            env=dict(self.env) if self.env is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def poll(self) -> int | None:
        """The exit status once it has exited (reaping it), else None; None also if never started."""
        return self.process.poll() if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child's whole process group (it leads its own session)."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit; True if it has."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the child's process group and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            logger.warning(
                "%s (pid %d) did not stop in time: killing it", self.name, self.process.pid
            )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, sig: signal.Signals, timeout: float) -> int | None:
        """Send ``sig``, wait up to ``timeout`` s, then kill; return the exit status."""
        self.signal(sig)
        if not self.wait(timeout):
            self.kill()
        return self.poll()
