"""Process accounting for bench/relay.py: CPU time and resident memory from /proc."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Fields after the command name (which may hold spaces): [0] is state, [1] ppid, [3] session.
    return raw[raw.rfind(")") + 2 :].split()


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a server started with setsid leads its own)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
                members.append(int(entry))
    return members


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), e.g. mailsvc's delivery process."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of ``pids``, including their reaped children (utime..cstime)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += sum(int(v) for v in fields[11:15])
    return total / TICK


def rss_bytes(pids: list[int]) -> int:
    """Sum of resident set sizes (shared pages count once per process)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


def pss_bytes(pids: list[int]) -> int:
    """Sum of proportional set sizes: shared pages split between the processes sharing them."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the highest RSS since start or since :func:`reset_peak`."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> None:
    """Reset VmHWM (Linux ≥ 4.0: writing 5 to clear_refs)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class RssSampler:
    """Samples the summed RSS of a changing set of processes every ``interval`` seconds."""

    def __init__(
        self, pids: Callable[[], list[int]], interval: float = 0.1, pss: bool = True
    ) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        # smaps_rollup walks the page tables: every 10 ms on a 200 MB process that is a fifth
        # of a core. pss=False samples RSS alone (statm, cheap).
        self.pss = pss
        # CPU seconds of the sampling thread: a caller measuring its own process's CPU takes
        # this off (it is the benchmark's, not the measured code's).
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = self.pids()
            self.peak = max(self.peak, rss_bytes(pids))
            if self.pss:
                self.peak_pss = max(self.peak_pss, pss_bytes(pids))
            self._stop.wait(self.interval)
        self.cpu_seconds = time.thread_time()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
