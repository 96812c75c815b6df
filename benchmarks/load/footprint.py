"""What a process holds, read from /proc: resident memory (sampled, and the kernel's own
peak VmHWM), open file descriptors, and its RLIMIT_NOFILE, which this module also sets."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections.abc import Iterator

START_NOFILE = 1024
"""The soft RLIMIT_NOFILE every proxy starts with: the default of a login shell and of a
systemd service (LimitNOFILE=1024:524288), whatever the shell running the benchmark has."""


def memory_mib(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) in MiB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            lines = status.read().splitlines()
    except OSError:
        return None
    kib = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            kib[key] = int(value.split()[0])
    if len(kib) < 2:  # a zombie has no memory lines
        return None
    return kib["VmRSS"] / 1024, kib["VmHWM"] / 1024


def open_fds(pid: int) -> int | None:
    """How many file descriptors the process has open; None once it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def nofile_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of a process."""
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def raise_nofile(pid: int) -> int:
    """Raise a process's soft RLIMIT_NOFILE to its hard limit (as `prlimit --nofile`
    does); returns the new soft limit."""
    _, hard = nofile_limits(pid)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@contextlib.contextmanager
def children_nofile(soft: int) -> Iterator[None]:
    """Processes started in the block inherit `soft` as their soft RLIMIT_NOFILE (this
    process's own limit is lowered for the block and restored after)."""
    own = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, own[1]), own[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, own)


class Sampler:
    """Samples a process's RSS and open fds every `interval` seconds in a thread while the
    block runs; the VmHWM read at the end is the kernel's own peak since the process
    started, so a short spike between samples still counts."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_mib = 0.0
        self.peak_fds = 0
        self.hwm_mib: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="footprint", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        memory, fds = memory_mib(self.pid), open_fds(self.pid)
        if memory is not None:
            self.peak_rss_mib = max(self.peak_rss_mib, memory[0])
            self.hwm_mib = memory[1]
            self.samples += 1
        if fds is not None:
            self.peak_fds = max(self.peak_fds, fds)

    @property
    def peak_mib(self) -> float:
        """The higher of the kernel's VmHWM and the sampled maximum."""
        return max(self.hwm_mib or 0.0, self.peak_rss_mib)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def describe(self) -> str:
        return (
            f"peak RSS {self.peak_mib:.1f} MiB (VmHWM {self.hwm_mib or 0:.1f}, sampled max "
            f"{self.peak_rss_mib:.1f}), peak fds {self.peak_fds}"
        )
