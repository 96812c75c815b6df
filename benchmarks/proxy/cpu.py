"""CPU seconds of the servers and of the client around a measurement, read from /proc:
on a small machine the processes compete for the same cores, and CPU per GiB shows where
the time goes better than the throughput does."""

from __future__ import annotations

import hashlib
import os
import resource
import time
from pathlib import Path

CpuUse = tuple[float, float]
"""(user, system) CPU seconds."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SHA_PIECE = 8 << 20
_SHA_MIB = 256


def sha256_cpu_per_gib() -> float:
    """CPU seconds per GiB of sha256 on one core (this thread, 8 MiB updates): the floor of
    a cold fill, which hashes every byte, measured where and when the fill was."""
    piece = os.urandom(_SHA_PIECE)
    digest = hashlib.sha256()
    started = time.thread_time()
    for _ in range(_SHA_MIB * (1 << 20) // _SHA_PIECE):
        digest.update(piece)
    return (time.thread_time() - started) * 1024 / _SHA_MIB


def proc_cpu(pid: int | None) -> CpuUse:
    """(user, system) CPU seconds of a process, all its threads, from /proc."""
    if pid is None:
        return (0.0, 0.0)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return (0.0, 0.0)
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def own_cpu() -> CpuUse:
    """(user, system) CPU seconds of this process plus its reaped children (curl, wrk)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime


class CpuMeter:
    """CPU seconds used by named processes (and by the client, i.e. this script and the
    children it reaped) between entering and leaving the block."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._before: dict[str, CpuUse] = {}
        self.used: dict[str, CpuUse] = {}

    def _sample(self) -> dict[str, CpuUse]:
        sample = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        sample["client"] = own_cpu()
        return sample

    def __enter__(self) -> CpuMeter:
        self._before = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        after = self._sample()
        self.used = {
            name: (after[name][0] - before[0], after[name][1] - before[1])
            for name, before in self._before.items()
        }

    def total(self, name: str) -> float:
        user, system = self.used.get(name, (0.0, 0.0))
        return user + system

    def describe(self) -> str:
        return ", ".join(f"{name} {u:.2f} user + {s:.2f} sys" for name, (u, s) in self.used.items())
