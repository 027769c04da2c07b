"""CPU time and memory of a system's processes, read from /proc: the server's and Envoy's apart."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuTimes", "ProcessTree", "cpu_seconds", "descendants", "rss_bytes"]

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one live process (all its threads) plus that of its children it has waited for."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: fields are counted after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime are fields 14-17 of the whole line, 12-15 after the name.
    return sum(int(value) for value in fields[11:15]) / _TICKS_PER_SECOND


def rss_bytes(pid: int) -> int:
    """Resident memory of one process."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES


def descendants(pid: int) -> list[int]:
    """`pid` and every live process under it."""
    found = [pid]
    index = 0
    while index < len(found):
        for task in Path(f"/proc/{found[index]}/task").glob("*/children"):
            try:
                found.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue  # the thread ended meanwhile
        index += 1
    return found


def _is_envoy(pid: int) -> bool:
    try:
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(program) == b"envoy"


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds used so far by a system's server processes and by its Envoy."""

    server: float
    envoy: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.server - other.server, self.envoy - other.envoy)


@dataclass(frozen=True, slots=True)
class ProcessTree:
    """The processes of one system under test: its roots and all their children, Envoy told apart by name."""

    roots: tuple[int, ...]

    def _pids(self) -> list[int]:
        pids: list[int] = []
        for root in self.roots:
            try:
                pids.extend(pid for pid in descendants(root) if pid not in pids)
            except OSError:
                continue  # ended
        return pids

    def cpu(self) -> CpuTimes:
        server = envoy = 0.0
        for pid in self._pids():
            try:
                seconds = cpu_seconds(pid)
            except OSError:
                continue
            if _is_envoy(pid):
                envoy += seconds
            else:
                server += seconds
        return CpuTimes(server, envoy)

    def settle(self, idle_share: float = 0.05, step: float = 0.25, timeout: float = 60.0) -> None:
        """Waits until the processes use less than `idle_share` of a core: work a load left behind is done.

        A client that stops mid-load leaves requests the server still works
        on; measured in the next run, their CPU would be charged to its answers.
        """
        deadline = time.monotonic() + timeout
        last = self.cpu()
        while time.monotonic() < deadline:
            time.sleep(step)
            now = self.cpu()
            used = now - last
            if used.server + used.envoy < idle_share * step:
                return
            last = now

    def rss(self) -> tuple[int, int]:
        """Resident bytes of (the server processes, Envoy)."""
        server = envoy = 0
        for pid in self._pids():
            try:
                size = rss_bytes(pid)
            except OSError:
                continue
            if _is_envoy(pid):
                envoy += size
            else:
                server += size
        return server, envoy
