"""CPU time and RSS of named processes from /proc, for CPU-µs per message.

A "process" here is a pid plus all its descendants (the broker launcher may fork a JVM;
a shell may front a binary): their utime+stime (fields 14, 15 of /proc/PID/stat, in clock
ticks) and VmRSS are summed. Descendants that exit between two snapshots take their CPU
with them; for long-lived servers that is none.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4: ppid
    return children


def tree(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """pid and its descendants (bounded by the process table's size)."""
    children = _children_map() if children is None else children
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_us(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # fields 14 (utime), 15 (stime)
    return total * TICK_US


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


class Meter:
    """CPU and RSS of a fixed set of named root pids (each with its descendants)."""

    def __init__(self, roots: dict[str, int]):
        self.roots = dict(roots)

    def _trees(self) -> dict[str, list[int]]:
        children = _children_map()
        # This process alone: everything it measures (services, brokers, Kannel) is its child.
        return {name: [pid] if pid == os.getpid() else tree(pid, children) for name, pid in self.roots.items()}

    def cpu(self) -> dict[str, float]:
        return {name: cpu_us(pids) for name, pids in self._trees().items()}

    def rss(self) -> dict[str, int]:
        return {name: rss_kib(pids) for name, pids in self._trees().items()}


def cpu_per_message(
    before: dict[str, float], after: dict[str, float], messages: int, exclude: tuple[str, ...] = ()
) -> dict[str, float | None]:
    """CPU-µs per message per process, plus "total" over all but *exclude* (the load generator)."""
    if messages <= 0:
        return dict.fromkeys([*after, "total"])
    out: dict[str, float | None] = {name: round((after[name] - before.get(name, 0)) / messages, 1) for name in after}
    out["total"] = round(sum(v for k, v in out.items() if k not in exclude and v is not None), 1)
    return out
