"""CPU seconds of a process and its descendants, read from ``/proc/<pid>/stat``.

``utime + stime`` of a process covers all its threads; ``cutime + cstime`` adds its children that
have exited and been reaped, so a worker that dies between two readings is still counted once.
Resolution is one clock tick (usually 10 ms): measure over seconds, not milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may hold spaces and parentheses: fields resume after the last ')'
    return text[text.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now running."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(roots: Iterable[int]) -> set[int]:
    """The roots that still run and all their descendants."""
    children: dict[int, list[int]] = {}
    parents = _parents()
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    pending = [pid for pid in roots if pid in parents]
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """User plus system CPU seconds of the roots and their descendants, so far."""
    ticks = 0
    for pid in process_tree(roots):
        fields = _stat_fields(pid)
        if fields is not None:
            # fields[11:15] are utime, stime, cutime, cstime (stat fields 14 to 17)
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / CLOCK_TICKS
