"""Stop signals of a server process: SIGTERM and SIGINT ask for a drain instead of killing."""

from __future__ import annotations

import signal
import threading


def install_stop_signals() -> threading.Event:
    """SIGTERM and SIGINT set the returned event instead of killing the process."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop
