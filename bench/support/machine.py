"""The end-to-end bench's view of the machine: the processes on the measured path (memory, CPU time,
affinity), CPU pinning for the one-core mode, and what else kept the shared machine busy."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from agentry_dev.stack import Stack


class Processes:
    """Every process on the measured path, for resident memory, CPU time and affinity (PostgreSQL: all its
    backends)."""

    def __init__(self, stack: Stack, upstream: subprocess.Popen[bytes]):
        self.named = {svc.name: psutil.Process(svc.proc.pid) for svc in stack.services if svc.proc}
        if stack.nats is not None and stack.nats.proc is not None:
            self.named["nats-server"] = psutil.Process(stack.nats.proc.pid)
        self.postmaster: psutil.Process | None = None
        if stack.postgres is not None:
            pid_file = stack.postgres.data_dir / "postmaster.pid"
            self.postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        self.named["upstream (fake)"] = psutil.Process(upstream.pid)
        self.named["bench client"] = psutil.Process()

    def _all(self) -> dict[str, list[psutil.Process]]:
        out = {name: [p] for name, p in self.named.items()}
        if self.postmaster is not None:
            out["postgres (all)"] = [self.postmaster, *self.postmaster.children()]
        return out

    def rss_mib(self) -> dict[str, float]:
        # PostgreSQL's shared buffers are counted once per backend: an upper bound.
        return {name: round(sum(p.memory_info().rss for p in ps) / 2**20, 1) for name, ps in self._all().items()}

    def cpu_s(self) -> dict[str, float]:
        def used(p: psutil.Process) -> float:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                return 0.0
            return float(t.user + t.system)

        return {name: sum(used(p) for p in ps) for name, ps in self._all().items()}

    def affinity(self) -> dict[str, list[int]]:
        return {name: sorted(set().union(*(p.cpu_affinity() for p in ps))) for name, ps in self._all().items()}


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Processes started inside inherit this CPU affinity (None: leave it as it is)."""
    before = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent on anything but idling, over all cores."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
