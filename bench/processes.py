"""CPU time and memory of the stack's processes, read from /proc: who is the bottleneck."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of every live process in a process group (children included)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone since the listing
        # After the command: state, ppid, pgrp, ..., utime (12), stime (13) (0-based from state)
        if int(fields[2]) == group:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def cpu_seconds(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    return {name: sum(group_cpu_seconds(g) for g in pgids) for name, pgids in groups.items()}


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def rss_mib(pid: int) -> float:
    """Resident set size of one process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"process {pid} has no VmRSS")
