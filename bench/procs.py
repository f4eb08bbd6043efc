"""Server process memory: find a process tree in /proc and track its peak RSS.

``tree_pids(pid)`` lists a process and all its descendants (Apache runs a
master and worker children; the Python servers are one process);
``tree_cpu_seconds`` sums their CPU time.
``PeakRss`` samples the summed ``VmRSS`` of the tree every few milliseconds
while a block runs, and, where the kernel allows it, also resets each
process's ``VmHWM`` before the block (``/proc/PID/clear_refs`` = 5) and reads
it after, so a short spike between two samples is not missed. The reported
peak is the larger of the two figures, in bytes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

PROC = Path("/proc")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _parent_of(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else None


def tree_pids(root: int) -> list[int]:
    """``root`` and all its living descendants (empty if ``root`` is gone)."""
    if not (PROC / str(root)).exists():
        return []
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo and len(found) < 10_000:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``), or None if unreadable."""
    try:
        with open(PROC / str(pid) / "status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def tree_rss(root: int) -> int:
    """Summed resident set size of the tree, in bytes."""
    return sum((status_kib(pid, "VmRSS") or 0) * 1024 for pid in tree_pids(root))


def tree_cpu_seconds(root: int) -> float:
    """User plus system CPU time used so far by the tree's living processes, in seconds."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / _CLOCK_TICKS


def _reset_hwm(pid: int) -> bool:
    try:
        with open(PROC / str(pid) / "clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """``with PeakRss(pid) as peak: ...`` then ``peak.bytes`` is the tree's peak RSS."""

    def __init__(self, root: int, interval: float = 0.02) -> None:
        self.root = root
        self.interval = interval
        self.sampled = 0
        self.high_water: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._pids: list[int] = []
        self._reset_ok = False

    @property
    def bytes(self) -> int:
        return max(self.sampled, self.high_water or 0)

    def __enter__(self) -> PeakRss:
        self._pids = tree_pids(self.root)
        self._reset_ok = bool(self._pids) and all(_reset_hwm(pid) for pid in self._pids)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._reset_ok and set(tree_pids(self.root)) == set(self._pids):
            marks = [status_kib(pid, "VmHWM") for pid in self._pids]
            if all(mark is not None for mark in marks):
                self.high_water = sum(mark or 0 for mark in marks) * 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled = max(self.sampled, tree_rss(self.root))
            self._stop.wait(self.interval)
